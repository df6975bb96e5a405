r"""Reconstruction evaluation of a tokenizer workdir, on demand.

  python -m evals.recon --workdir outputs/demo/tokenizer [--max-examples 0] [--split test]
  python -m evals.recon --workdir outputs/flextok_tiny --num-tokens 4   # a 1D prefix

Restores the latest checkpoint's EMA parameters, reconstructs the eval split
and writes `<workdir>/eval/recon_step_N.json`: global PSNR (0-255 scale, from
the MSE over the whole split), mean per-image PSNR, SSIM, the mean-colour
baseline PSNR, codebook usage and perplexity (discrete tokenizers), plus the
originals-above-reconstructions grid `<workdir>/eval/recon_step_N.png`
(`visgen.evaluation.task_eval`). With `--num-tokens k` a 1D tokenizer
reconstructs from its first k tokens, into `recon_step_N_kK.json` / `.png`.

Bad input (a missing workdir, a split the dataset lacks) is one `error:` line
with exit status 2; `--debug` or `VISGEN_DEBUG=1` shows its traceback.
"""

import argparse
import json
import os
import sys

from visgen.cli import user_errors
from visgen.evaluation import evaluate_workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reconstruction metrics of a tokenizer workdir.")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--max-examples", type=int, default=0, help="0 = the whole split")
    parser.add_argument("--split", default="", help="default: the config's eval split")
    parser.add_argument(
        "--num-tokens", type=int, default=0, help="decode this prefix of 1D tokens (0 = all)"
    )
    parser.add_argument("--debug", action="store_true", help="full tracebacks for bad input")
    args = parser.parse_args(argv)
    if args.num_tokens < 0:
        parser.error(f"--num-tokens must be >= 0 (0 = all), got {args.num_tokens}")
    if args.max_examples < 0:
        parser.error(f"--max-examples must be >= 0 (0 = the whole split), got {args.max_examples}")
    try:
        with user_errors(sys.argv[1:] if argv is None else argv):
            metrics = evaluate_workdir(
                args.workdir,
                max_examples=args.max_examples,
                split=args.split,
                num_tokens=args.num_tokens,
            )
    except SystemExit as e:
        return e.code
    suffix = f"_k{args.num_tokens}" if args.num_tokens else ""
    path = os.path.join(args.workdir, "eval", f"recon_step_{metrics['step']:07d}{suffix}.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
