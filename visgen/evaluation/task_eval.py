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

import jax
import numpy as np
from flax import nnx


class PrefixReconstruction(nnx.Module):
    """A 1D tokenizer that reconstructs from the first `num_tokens` of its tokens.

    Evaluation only: `__call__(x)` is `decode(encode(x) tokens, num_tokens=k)`
    (ids, or latents for continuous tokens); `spec` is the wrapped tokenizer's.
    """

    def __init__(self, tokenizer: nnx.Module, num_tokens: int):
        spec = tokenizer.spec
        if len(spec.layout) != 1 or not 1 <= num_tokens <= spec.num_tokens:
            raise ValueError(
                f"num_tokens decodes a prefix of a 1D tokenizer's tokens: it must be in "
                f"1..{spec.num_tokens} for layout {tuple(spec.layout)}, got {num_tokens}"
            )
        self.tokenizer = tokenizer
        self.num_tokens = num_tokens
        self.spec = spec

    def __call__(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ):
        enc = self.tokenizer.encode(x, text=text, train=train, rng=rng)
        codes = enc.latents if enc.tokens is None else enc.tokens
        return self.tokenizer.decode(codes, text=text, num_tokens=self.num_tokens), enc


def evaluate_workdir(
    workdir: str,
    png_path: str | None = None,
    *,
    max_examples: int = 0,
    split: str = "",
    task: str = "tokenizer",
    num_tokens: int = 0,
) -> dict:
    """Eval-split metrics of a `task` workdir (reconstructions for a tokenizer).

    Args:
      workdir: a training workdir of a `task` task.
      png_path: where to save the task's preview PNG; default
        `<workdir>/eval/recon_step_N.png`.
      max_examples: evaluate the first N examples (0 = the whole split).
      split: default: the config's eval split.
      num_tokens: a tokenizer reconstructs from this prefix of its 1D tokens (0 = all).

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
    if num_tokens:
        if task != "tokenizer":
            raise ValueError(f"num_tokens is for tokenizer workdirs, not a {task}")
        model.tokenizer = PrefixReconstruction(model.tokenizer, num_tokens)
    data = DataConfig(**config.data)
    if split:
        data = dataclasses.replace(data, eval_split=split)
    graphdef, params, frozen, rest = split_model(model)
    evaluator = Evaluator(trained_task, graphdef, make_mesh(-1, 1))
    metrics, preview = evaluator.run(
        params, frozen, rest, data, max_examples=max_examples, show_progress=True
    )
    suffix = f"_k{num_tokens}" if num_tokens else ""
    png_path = png_path or os.path.join(workdir, "eval", f"recon_step_{step:07d}{suffix}.png")
    save_png(png_path, np.asarray(preview), upscale=max(1, min(4, 2048 // preview.shape[1])))
    extra = {"num_tokens": num_tokens} if num_tokens else {}
    return {"step": step, "split": data.eval_split, **extra, **metrics}
