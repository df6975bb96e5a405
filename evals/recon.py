r"""Reconstruction evaluation of a tokenizer workdir, on demand.

  python -m evals.recon --workdir outputs/demo/tokenizer [--max-examples 0] [--split test]

Restores the latest checkpoint's EMA parameters, reconstructs the eval split
and writes `<workdir>/eval/recon_step_N.json`: global PSNR (0-255 scale, from
the MSE over the whole split), mean per-image PSNR, SSIM, the mean-colour
baseline PSNR, codebook usage and perplexity (discrete tokenizers), plus the
originals-above-reconstructions grid `<workdir>/eval/recon_step_N.png`
(`visgen.evaluation.task_eval`).
"""

import argparse
import json
import os
import sys

from visgen.evaluation import evaluate_workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reconstruction metrics of a tokenizer workdir.")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--max-examples", type=int, default=0, help="0 = the whole split")
    parser.add_argument("--split", default="", help="default: the config's eval split")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_workdir(args.workdir, max_examples=args.max_examples, split=args.split)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = os.path.join(args.workdir, "eval", f"recon_step_{metrics['step']:07d}.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
