r"""Reconstruction evaluation of a tokenizer workdir, on demand.

  python -m evals.recon --workdir outputs/demo/tokenizer [--max-examples 0] [--split test]

Restores the latest checkpoint's EMA parameters, reconstructs the eval split
and writes `<workdir>/eval/recon_step_N.json`: global PSNR (0-255 scale, from
the MSE over the whole split), mean per-image PSNR, SSIM, the mean-colour
baseline PSNR, codebook usage and perplexity (discrete tokenizers), plus the
originals-above-reconstructions grid `<workdir>/eval/recon_step_N.png`.
"""

import argparse
import dataclasses
import json
import os
import sys

import numpy as np


def evaluate_workdir(
    workdir: str,
    png_path: str | None = None,
    *,
    max_examples: int = 0,
    split: str = "",
    task: str = "tokenizer",
) -> dict:
    """Eval-split metrics of a `task` workdir (reconstructions for a tokenizer); saves
    the task's preview PNG."""
    from visgen.data import DataConfig
    from visgen.train.evaluate import Evaluator
    from visgen.train.sharding import make_mesh
    from visgen.train.state import split_model
    from visgen.train.workdir import load_trained
    from visgen.train.writer import save_png

    config, trained_task, model, step = load_trained(workdir)
    if config.task != task:
        raise ValueError(f"{workdir} holds a {config.task!r} task, not a {task}")
    data = DataConfig(**config.data)
    if split:
        data = dataclasses.replace(data, eval_split=split)
    graphdef, params, frozen, rest = split_model(model)
    evaluator = Evaluator(trained_task, graphdef, make_mesh(-1, 1))
    metrics, preview = evaluator.run(
        params, frozen, rest, data, max_examples=max_examples, show_progress=True
    )
    png_path = png_path or os.path.join(workdir, "eval", f"recon_step_{step:07d}.png")
    save_png(png_path, np.asarray(preview), upscale=max(1, min(4, 2048 // preview.shape[1])))
    return {"step": step, "split": data.eval_split, **metrics}


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
