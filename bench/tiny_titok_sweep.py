r"""Step-budgeted recipe sweep for small tokenizers on in-memory `shapes`.

  python -m bench.tiny_titok_sweep --steps 3000 \
      --variant base: --variant qk:qk_norm=true --variant grid:name=vq2d [--shape-scale 1.8]

Trains each variant of a `tiny` recipe with the real tokenizer task and train
step: TiTok's (width 64, depth 2, patch 4, 32 tokens, 1024 x 12 L2 codes) or,
with `name=vq2d`, the 2D grid tokenizer's (patch-ViT, width 64, depth 2, 8 x 8
tokens, 128 x 8 codes); both batch 32, AdamW 2e-3, warmup 50, cosine to 5%.
Every `--eval-every` steps it prints, for the EMA model on 1,000 held-out
images: the global PSNR (0-255 scale), the number of distinct codes used, and
`class_acc`, the fraction of reconstructions that the `shapes` feature
classifier (`evals/weights/shapes.npz`; its accuracy on the originals is in
docs/results.md, "Evaluation") assigns to the image's label, beside the
mean-colour baseline. Images are drawn in memory with
`visgen.data.shapes` (no TFDS), so the script also runs on an accelerator
machine that only has jax/flax/optax. Training dynamics per step do not depend
on the hardware, so a GPU sweeps recipes for the CPU demo.

Variant syntax: `name:key=value,key=value`; keys are `lr`, `batch`, `warmup`,
`steps`, `recon` (`l1`/`l2`) or any tokenizer argument (`name`, `width`,
`depth`, `num_tokens`, `token_dim`, `patch_size`, `init_std`, `qk_norm`, ...),
the quantizer's (`codebook_size`, `l2_norm`, `commitment`; `latent=vae` for a
Gaussian bottleneck), and `proxy_steps=N` for a two-stage
TiTok whose proxy is the `vq2d` recipe trained first for N steps.
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
from visgen.metrics.classifier import WEIGHTS_DIR, load_feature_net
from visgen.nn.frozen import FrozenSnapshot
from visgen.tasks.tokenizer import TokenizerLossConfig, TokenizerTask
from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from visgen.train.state import init_state, make_train_step

TINY = {
    "titok": dict(
        name="titok", image_size=32, patch_size=4, width=64, depth=2, heads=4,
        num_tokens=32, token_dim=12, quantizer=dict(name="vq", codebook_size=1024),
    ),
    "vq2d": dict(
        name="vq2d", image_size=32, backbone="vit", patch_size=4, width=64, depth=2, heads=4,
        token_dim=8, quantizer=dict(name="vq", codebook_size=128),
    ),
}  # fmt: skip
QUANTIZER_KEYS = ("codebook_size", "l2_norm", "commitment")


def _tokenizer_args(kw: dict) -> dict:
    """`TINY[name]` updated with a variant's keys, quantizer keys into its section."""
    args = dict(TINY[kw.get("name", "titok")], **kw)
    quantizer = dict(args["quantizer"], **{k: args.pop(k) for k in QUANTIZER_KEYS if k in args})
    if args.pop("latent", "vq") == "vae":
        quantizer = dict(name="gaussian")
    return dict(args, quantizer=quantizer)


CLASSIFIER = os.path.join(WEIGHTS_DIR, "shapes.npz")


def _shapes_module():
    # Load the drawing code alone: `visgen.data` itself imports TFDS and grain.
    path = os.path.join(os.path.dirname(__file__), "..", "visgen", "data", "shapes.py")
    spec = importlib.util.spec_from_file_location("visgen_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw(n: int, seed: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """`n` shapes images uint8 `[n, 32, 32, 3]` and labels `[n]`, sizes times `scale`."""
    shapes = _shapes_module()
    shapes.SIZES.update({k: v * scale for k, v in shapes.SIZES.items()})
    rng = np.random.default_rng(seed)
    drawn = [shapes.draw_shapes_image(rng, 32) for _ in range(n)]
    return np.stack([d[0] for d in drawn]), np.asarray([d[1] for d in drawn])


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


def run(train, test, labels, classifier, steps: int, eval_every: int, **kw):
    """Trains one variant; returns (curve, seconds, the trained EMA `TokenizerModel`).

    `proxy_steps=N` first trains the `vq2d` recipe for N steps and uses it as
    the proxy of a two-stage TiTok (proxy-code cross-entropy, no pixel loss).
    """
    proxy_steps = kw.pop("proxy_steps", 0)
    proxy = None
    if proxy_steps:
        curve, _, trained = run(
            train, test, labels, classifier, proxy_steps, proxy_steps, name="vq2d"
        )
        print(json.dumps({"proxy": curve[-1]}), flush=True)
        proxy = FrozenSnapshot(trained)
    lr, batch, warmup = kw.pop("lr", 2e-3), kw.pop("batch", 32), kw.pop("warmup", 50)
    loss = TokenizerLossConfig(recon=kw.pop("recon", "l2"), recon_weight=0.0 if proxy else 1.0)
    task = TokenizerTask(_tokenizer_args(kw), loss, "float32")
    task.proxy = proxy
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
        pixels = image.to_255(recon)
        predicted = jnp.argmax(classifier(jnp.round(pixels)).logits, axis=-1)
        return jnp.sum(image.squared_error(pixels, image.to_255(x))), tokens, predicted

    to_float = lambda u8: jnp.asarray(u8.astype(np.float32) / 127.5 - 1.0)
    rng, curve, t0 = np.random.default_rng(0), [], time.perf_counter()
    for i in range(1, steps + 1):
        x = train[rng.integers(0, len(train), batch)]
        flip = rng.random(batch) < 0.5
        x[flip] = x[flip, :, ::-1]
        state, _ = step(state, frozen, {"image": to_float(x)})
        if i % eval_every == 0 or i == steps:
            se, codes, correct = 0.0, set(), 0
            for j in range(0, len(test), 250):
                s, tokens, predicted = evaluate(
                    state.ema_params, state.rest, to_float(test[j : j + 250])
                )
                se += float(s)
                codes |= set(np.asarray(tokens).ravel().tolist())
                correct += int(np.sum(np.asarray(predicted) == labels[j : j + 250]))
            psnr = float(image.psnr_from_mse(se / test.size))
            curve.append(
                {
                    "step": i,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "psnr": round(psnr, 2),
                    "codes": len(codes),
                    "class_acc": round(correct / len(test), 3),
                }
            )
            print(json.dumps({"progress": curve[-1]}), flush=True)
    model = nnx.merge(graphdef, state.ema_params, frozen, state.rest, copy=True)
    return curve, time.perf_counter() - t0, model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--shape-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    train, _ = draw(20_000, 1, args.shape_scale)
    test, labels = draw(1_000, 2, args.shape_scale)
    classifier, _ = load_feature_net(CLASSIFIER)
    mean = np.round(test.reshape(len(test), -1, 3).mean(1))[:, None, None, :]
    baseline = image.psnr_from_mse(np.mean((test - mean) ** 2))
    real = np.asarray(jnp.argmax(classifier(jnp.asarray(test, jnp.float32)).logits, -1))
    print(
        json.dumps(
            {
                "backend": jax.default_backend(),
                "mean_colour_psnr": float(baseline),
                "class_acc_originals": float(np.mean(real == labels)),
            }
        )
    )
    for text in args.variant or ["base:"]:
        name, kw = parse_variant(text)
        steps = kw.pop("steps", args.steps)
        curve, seconds, _ = run(
            train.copy(), test, labels, classifier, steps, args.eval_every, **kw
        )
        print(json.dumps({"variant": name, **kw, "seconds": round(seconds, 1), "curve": curve}))
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    raise SystemExit(main())
