"""A trained workdir's own evaluation, on demand: its task's eval metrics over a split.

For a tokenizer: global PSNR (0-255 scale, from the MSE over the whole split),
mean per-image PSNR, SSIM, the mean-colour baseline PSNR, codebook usage and
perplexity (discrete tokenizers), and the originals-above-reconstructions
preview. For a generator: its test cross-entropy beside the frequency-only
baseline, and its preview. The same `visgen.train.evaluate.Evaluator` the
training loop runs, on the latest checkpoint's EMA weights.
"""

import dataclasses
import os

import numpy as np


def evaluate_workdir(
    workdir: str,
    png_path: str | None = None,
    *,
    max_examples: int = 0,
    split: str = "",
    task: str = "tokenizer",
) -> dict:
    """Eval-split metrics of a `task` workdir (reconstructions for a tokenizer).

    Args:
      workdir: a training workdir of a `task` task.
      png_path: where to save the task's preview PNG; default
        `<workdir>/eval/recon_step_N.png`.
      max_examples: evaluate the first N examples (0 = the whole split).
      split: default: the config's eval split.

    Returns:
      `{"step", "split", **the task's eval metrics}`.

    Raises:
      ValueError: the workdir holds another task.
      FileNotFoundError: not a workdir, or no checkpoint.
    """
    from visgen.data import DataConfig
    from visgen.tasks.restore import load_trained
    from visgen.train.evaluate import Evaluator
    from visgen.train.sharding import make_mesh
    from visgen.train.state import split_model
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
