"""Rotary position embeddings (RoPE) for 1D sequences, 2D `(h, w)` and 3D `(t, h, w)` grids.

Follows LlamaGen (`autoregressive/models/gpt.py`, `precompute_freqs_cis[_2d]`):

- 1D: angle `pos * base^(-2i / head_dim)` for pair `i` of `head_dim / 2` pairs.
- 2D: each axis gets half of the pairs, with frequencies `base^(-j / p)` for
  `j < p = head_dim / 4`; row (first axis) frequencies come first, then column
  ones, concatenated along the pair axis.
- 3D (our extension, same rule): the `head_dim / 2` pairs are split over
  `(t, h, w)`, any remainder going to the first axis, each axis with
  `base^(-j / p_axis)`.
- Pairs are interleaved adjacent channels `(x[2i], x[2i+1])`, not rotate-half.
- Condition prefix: LlamaGen gives its `cls_token_num` prefix positions
  `cos = sin = 0`, which zeroes their queries and keys so the condition acts
  only through the values; official weights rely on this quirk.
  `zero_prefix=False` instead leaves the prefix unrotated (`cos = 1, sin = 0`).

Tables are float32 numpy arrays built once at model construction (static shapes).
"""

import jax
import jax.numpy as jnp
import numpy as np


def axis_pairs(head_dim: int, num_axes: int) -> tuple[int, ...]:
    """How many rotation pairs each of `num_axes` axes gets (the first takes any remainder)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    pairs = head_dim // 2
    per_axis = pairs // num_axes
    if per_axis == 0:
        raise ValueError(f"head_dim {head_dim} is too small for {num_axes}-D RoPE")
    return (pairs - (num_axes - 1) * per_axis,) + (per_axis,) * (num_axes - 1)


def grid_positions(layout: tuple[int, ...]) -> np.ndarray:
    """Raster-order integer coordinates of a layout: `[prod(layout), len(layout)]`."""
    grids = np.meshgrid(*(np.arange(n) for n in layout), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=-1)


def rope_angles(positions: np.ndarray, head_dim: int, base: float = 10000.0) -> np.ndarray:
    """Rotation angles for coordinates `[N, A]` (A axes) -> `[N, head_dim / 2]` float64."""
    positions = np.asarray(positions, np.float64)
    angles = []
    for axis, p in enumerate(axis_pairs(head_dim, positions.shape[-1])):
        freqs = base ** (-np.arange(p, dtype=np.float64) / p)
        angles.append(positions[:, axis : axis + 1] * freqs)
    return np.concatenate(angles, axis=-1)


def rope_table(
    layout: tuple[int, ...],
    head_dim: int,
    *,
    prefix: int = 0,
    base: float = 10000.0,
    zero_prefix: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each `[prefix + prod(layout), head_dim / 2]` float32.

    Rows `0..prefix-1` are the condition prefix (zero, or identity if not
    `zero_prefix`); row `prefix + i` is token `i` of the raster-ordered layout.
    """
    if not 1 <= len(layout) <= 3:
        raise ValueError(f"layout must have 1 to 3 axes, got {layout}")
    angles = rope_angles(grid_positions(layout), head_dim, base)
    cos, sin = np.cos(angles), np.sin(angles)
    head = np.full((prefix, head_dim // 2), 0.0 if zero_prefix else 1.0)
    cos = np.concatenate([head, cos]).astype(np.float32)
    sin = np.concatenate([np.zeros_like(head), sin]).astype(np.float32)
    return cos, sin


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate interleaved pairs of `x: [B, S, H, Dh]` by `cos, sin: [S, Dh / 2]`.

    Computed in float32 and cast back to `x.dtype`, as LlamaGen's `apply_rotary_emb`.
    """
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    c, s = cos[:, None, :], sin[:, None, :]
    x0, x1 = xf[..., 0], xf[..., 1]
    out = jnp.stack([x0 * c - x1 * s, x1 * c + x0 * s], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)
