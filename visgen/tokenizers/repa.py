"""REPA: align a flow decoder's hidden patch states with a frozen encoder's features.

Yu et al. 2025, "Representation Alignment for Generation: Training Diffusion
Transformers Is Easier Than You Think". A small MLP projects the hidden state
of every patch token after an early decoder block, computed from the *noised*
patches, and the loss is the negative cosine similarity to a frozen
encoder's features of the *clean* image at the same patch. At high noise the
patches say little, so the decoder can only match the features through what
else it reads: for FlexTok, the registers. FlexTok trains its decoder with
REPA against DINOv2-L patch features (`../shared/papers/tokenizers.md` section 2).

Here the frozen encoder is a small conv classifier of the embedded data
(`visgen.metrics.classifier.FeatureNet`, local `.npz` weights; no DINOv2
weights exist offline); the target is the output of the conv block whose grid
equals the decoder's patch grid. Keep it a *different* net from the one the
metrics use (`evals/weights/shapes_repa.npz`, another seed and architecture,
beside the metrics' `shapes.npz`), so the evaluation does not score its own
training signal. The projector is REPA's: three linear layers with SiLU.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.metrics.classifier import feature_net_path, load_feature_net


class RepaAlignment(nnx.Module):
    """Hidden patch states `[B, N, D]` and clean images -> the REPA loss (a scalar).

    Args:
      features: a `FeatureNet` weights `.npz` path, or a shipped net's name
        (`shapes_repa` -> `evals/weights/shapes_repa.npz`).
      width: `D`, the decoder's width.
      grid: the decoder's patch grid `(h, w)`, `N = h * w`, row-major.
      hidden: the projector's hidden width.
      rngs: the projector's initialisation.

    Raises:
      FileNotFoundError: no such weights file.
      ValueError: no conv block of the net has the patch grid's size.
    """

    def __init__(
        self, features: str, *, width: int, grid: tuple[int, int], hidden: int, rngs: nnx.Rngs
    ):
        self.net, _ = load_feature_net(feature_net_path(features))
        sides = [self.net.resolution // 2 ** (i + 1) for i in range(len(self.net.channels))]
        if grid[0] != grid[1] or grid[0] not in sides:
            raise ValueError(
                f"REPA features {features!r}: no conv block matches the {grid[0]} x {grid[1]} "
                f"patch grid (its blocks give {', '.join(f'{s} x {s}' for s in sides)})"
            )
        self.block = sides.index(grid[0])
        channels = self.net.channels[self.block]
        self.proj = nnx.List(
            [
                nnx.Linear(width, hidden, rngs=rngs),
                nnx.Linear(hidden, hidden, rngs=rngs),
                nnx.Linear(hidden, channels, rngs=rngs),
            ]
        )

    def target(self, images: jax.Array) -> jax.Array:
        """Frozen features `[B, N, C]` of clean images `[B, H, W, 3]` in [-1, 1]."""
        maps = self.net.feature_maps((images.astype(jnp.float32) + 1.0) * 127.5)
        f = maps[self.block]
        return jax.lax.stop_gradient(f.reshape(f.shape[0], -1, f.shape[-1]))

    def __call__(self, hidden: jax.Array, images: jax.Array) -> jax.Array:
        """`1 - mean cos(proj(hidden), target)` over examples and patches (0 when aligned)."""
        h = hidden.astype(jnp.float32)
        for i, layer in enumerate(self.proj):
            h = layer(h) if i == 0 else layer(jax.nn.silu(h))
        t = self.target(images)
        cos = jnp.sum(_unit(h) * _unit(t), axis=-1)
        return 1.0 - jnp.mean(cos)


def _unit(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-12)
