"""Pixel reconstruction losses for tokenizer training.

TiTok's stage-2 and single-stage recipes (Yu et al. 2024, "An Image is Worth
32 Tokens for Reconstruction and Generation") use a plain L2 loss between the
input and its reconstruction; VQGAN-style tokenizers often use L1 or L1 + L2.
All kinds average over every element, so the value does not depend on the
batch size, resolution or frame count of `[B, H, W, 3]` / `[B, T, H, W, 3]`
inputs.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

_KINDS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "l1": lambda d: jnp.mean(jnp.abs(d)),
    "l2": lambda d: jnp.mean(jnp.square(d)),
    "l1+l2": lambda d: jnp.mean(jnp.abs(d)) + jnp.mean(jnp.square(d)),
}

RECONSTRUCTION_KINDS: tuple[str, ...] = tuple(_KINDS)


def reconstruction_loss(x: jax.Array, y: jax.Array, kind: str = "l2") -> jax.Array:
    """Mean pixel distance between `x` and `y`, as a float32 scalar.

    Args:
      x: targets of any shape, e.g. `[B, H, W, 3]` or `[B, T, H, W, 3]`.
      y: reconstructions, the same shape as `x`.
      kind: `l1` (mean |x - y|), `l2` (mean (x - y)^2) or `l1+l2` (their sum).

    Raises:
      ValueError: on an unknown `kind` or when the shapes differ (broadcasting
        would silently average the wrong pairs).
    """
    if kind not in _KINDS:
        raise ValueError(
            f"unknown reconstruction loss kind {kind!r}; valid kinds: {', '.join(_KINDS)}"
        )
    if x.shape != y.shape:
        raise ValueError(f"reconstruction_loss needs equal shapes, got {x.shape} and {y.shape}")
    # float32 so bf16 activations do not lose the small residuals late in training.
    diff = x.astype(jnp.float32) - y.astype(jnp.float32)
    return _KINDS[kind](diff)
