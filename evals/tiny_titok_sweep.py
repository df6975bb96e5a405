r"""Step-budgeted recipe sweep for small TiTok tokenizers on in-memory `shapes`.

  python -m evals.tiny_titok_sweep --steps 3000 \
      --variant base: --variant lr1e-3:lr=1e-3 --variant vae:latent=vae [--shape-scale 1.8]

Trains each variant of the `tiny` recipe (width 64, depth 2, patch 4, 32 tokens,
1024 x 12 L2 codes, batch 32, AdamW 2e-3, warmup 50, cosine to 5%) with the
real tokenizer task and train step, and every `--eval-every` steps prints the
global PSNR (0-255, MSE over 1,000 held-out images) of the EMA model and the
number of distinct codes it uses, beside the mean-colour baseline. Images are
drawn in memory with `visgen.data.shapes` (no TFDS), so the script also runs on
an accelerator machine that only has jax/flax/optax. Training dynamics per
step do not depend on the hardware, so a GPU sweeps recipes for the CPU demo.

Variant syntax: `name:key=value,key=value`; keys are `lr`, `batch`, `warmup`,
`steps` or any TiTok argument (`width`, `depth`, `num_tokens`, `token_dim`,
`codebook_size`, `patch_size`, `latent`, `l2_norm`, ...).
"""

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.metrics import image
from visgen.tasks.tokenizer import TokenizerLossConfig, TokenizerTask
from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from visgen.train.state import init_state, make_train_step

TINY = dict(
    name="titok", image_size=32, patch_size=4, width=64, depth=2, heads=4,
    num_tokens=32, codebook_size=1024, token_dim=12, latent="vq",
)  # fmt: skip


def _shapes_module():
    # Load the drawing code alone: `visgen.data` itself imports TFDS and grain.
    path = os.path.join(os.path.dirname(__file__), "..", "visgen", "data", "shapes.py")
    spec = importlib.util.spec_from_file_location("visgen_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw(n: int, seed: int, scale: float) -> np.ndarray:
    """`n` shapes images uint8 `[n, 32, 32, 3]`, shape sizes multiplied by `scale`."""
    shapes = _shapes_module()
    shapes.SIZES.update({k: v * scale for k, v in shapes.SIZES.items()})
    rng = np.random.default_rng(seed)
    return np.stack([shapes.draw_shapes_image(rng, 32)[0] for _ in range(n)])


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    out = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return name, out


def run(train: np.ndarray, test: np.ndarray, steps: int, eval_every: int, **kw) -> list:
    lr, batch, warmup = kw.pop("lr", 2e-3), kw.pop("batch", 32), kw.pop("warmup", 50)
    task = TokenizerTask(dict(TINY, **kw), TokenizerLossConfig(), "float32")
    optim = OptimConfig(lr=lr, warmup_steps=warmup, end_lr_ratio=0.05)
    tx = make_optimizer(optim, steps)
    state, frozen = jax.jit(lambda: init_state(task, tx, 0))()
    graphdef = nnx.split(task.build(nnx.Rngs(0)), nnx.Param, ...)[0]
    step = jax.jit(
        make_train_step(graphdef, task, tx, learning_rate_schedule(optim, steps), 0.99),
        donate_argnums=(0,),
    )

    @jax.jit
    def evaluate(params, rest, x):
        model = nnx.merge(graphdef, params, frozen, rest, copy=True)
        recon, enc = model.tokenizer(x)
        tokens = enc.tokens if enc.tokens is not None else jnp.zeros((1,), jnp.int32)
        return jnp.sum(image.squared_error(image.to_255(recon), image.to_255(x))), tokens

    to_float = lambda u8: jnp.asarray(u8.astype(np.float32) / 127.5 - 1.0)
    rng, curve, t0 = np.random.default_rng(0), [], time.perf_counter()
    for i in range(1, steps + 1):
        x = train[rng.integers(0, len(train), batch)]
        flip = rng.random(batch) < 0.5
        x[flip] = x[flip, :, ::-1]
        state, _ = step(state, frozen, {"image": to_float(x)})
        if i % eval_every == 0 or i == steps:
            se, codes = 0.0, set()
            for j in range(0, len(test), 250):
                s, tokens = evaluate(state.ema_params, state.rest, to_float(test[j : j + 250]))
                se += float(s)
                codes |= set(np.asarray(tokens).ravel().tolist())
            psnr = float(image.psnr_from_mse(se / test.size))
            curve.append({"step": i, "psnr": round(psnr, 2), "codes": len(codes)})
    return curve, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--shape-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    train, test = draw(20_000, 1, args.shape_scale), draw(1_000, 2, args.shape_scale)
    mean = np.round(test.reshape(len(test), -1, 3).mean(1))[:, None, None, :]
    baseline = image.psnr_from_mse(np.mean((test - mean) ** 2))
    print(json.dumps({"backend": jax.default_backend(), "mean_colour_psnr": float(baseline)}))
    for text in args.variant or ["base:"]:
        name, kw = parse_variant(text)
        steps = kw.pop("steps", args.steps)
        curve, seconds = run(train.copy(), test, steps, args.eval_every, **kw)
        print(json.dumps({"variant": name, **kw, "seconds": round(seconds, 1), "curve": curve}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
