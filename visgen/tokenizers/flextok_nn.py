"""FlexTok's transformer blocks: masked pre-LN blocks and adaLN-zero blocks with two modulations.

Both follow the released FlexTok blocks (`../shared/papers/tokenizers.md` section 2):
LayerNorm without affine or bias, QK-norm, a SwiGLU MLP (hidden `8/3 * width`),
no biases in the attention. `MaskedBlock` takes a boolean attention mask
`[T, T]` (the encoder's "registers see patches and earlier registers");
`AdaLNBlock` is DiT's adaLN-zero block (Peebles and Xie 2023) whose shift,
scale and gate come from the timestep embedding, with one modulation for the
first `num_patches` tokens and another for the rest (FlexTok's
`adaLN_expansion`: patches and registers are modulated separately).

The residual stream and the norms are float32; matmuls run in `dtype`.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.nn.llama import SwiGLU

NORM_EPS = 1e-6


def plain_norm(x: jax.Array) -> jax.Array:
    """LayerNorm without scale or bias over the last axis, in float32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + NORM_EPS)


def sincos_2d(grid: tuple[int, int], width: int) -> jax.Array:
    """Fixed 2D sin-cos position embeddings `[h * w, width]` float32 (row-major patches).

    Half the channels encode the row, half the column; each half is sin and cos of
    the position at `width / 4` geometric frequencies (MAE's; FlexTok's encoder
    uses 2D sin-cos). Their unit scale dominates a freshly initialised patch
    embedding, so attention can pick patches by position from the first steps.
    """
    if width % 4:
        raise ValueError(f"2D sin-cos position embeddings need a width divisible by 4, got {width}")
    h, w = grid
    quarter = width // 4
    freqs = 1.0 / (10_000.0 ** (jnp.arange(quarter, dtype=jnp.float32) / quarter))
    rows = jnp.repeat(jnp.arange(h, dtype=jnp.float32), w)[:, None] * freqs
    cols = jnp.tile(jnp.arange(w, dtype=jnp.float32), h)[:, None] * freqs
    return jnp.concatenate([jnp.sin(rows), jnp.cos(rows), jnp.sin(cols), jnp.cos(cols)], axis=1)


def swiglu_width(width: int) -> int:
    """FlexTok's SwiGLU hidden size, `8/3 * width` rounded up to a multiple of 8."""
    return -(-int(8 * width / 3) // 8) * 8


class MaskedAttention(nnx.Module):
    """Multi-head attention under a boolean mask: `[B, T, D]`, mask `[T, T]` -> `[B, T, D]`.

    `mask[i, j]` True means token `i` may read token `j`.
    """

    def __init__(self, width: int, heads: int, *, init, dtype: jnp.dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.dtype = dtype
        self.qkv = nnx.Linear(
            width, 3 * width, use_bias=False, kernel_init=init, dtype=dtype, rngs=rngs
        )
        self.out = nnx.Linear(
            width, width, use_bias=False, kernel_init=init, dtype=dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads)
        # QK-norm: per-head plain LayerNorm, float32, bounds the logits.
        q = plain_norm(qkv[:, :, 0])
        k = plain_norm(qkv[:, :, 1])
        v = qkv[:, :, 2].astype(jnp.float32)
        scale = 1.0 / math.sqrt(d // self.heads)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
        if mask is not None:
            logits = jnp.where(mask[None, None], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d)
        return self.out(y.astype(self.dtype))


class MaskedBlock(nnx.Module):
    """Pre-LN block `x + Attn(LN(x), mask); x + SwiGLU(LN(x))`: `[B, T, D]` float32 -> same."""

    def __init__(self, width: int, heads: int, *, init, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.attn = MaskedAttention(width, heads, init=init, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(width, swiglu_width(width), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        x = x + self.attn(plain_norm(x).astype(self.dtype), mask).astype(jnp.float32)
        return x + self.mlp(plain_norm(x).astype(self.dtype)).astype(jnp.float32)


def timestep_embedding(t: jax.Array, dim: int = 256, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal features `[B, dim]` of times `t [B]` in [0, 1] (scaled by 1000, as DiT's)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nnx.Module):
    """Times `[B]` -> `[B, D]`: sinusoidal(256) -> Linear -> SiLU -> Linear (DiT)."""

    def __init__(self, width: int, *, init, rngs: nnx.Rngs, freq_dim: int = 256):
        self.freq_dim = freq_dim
        self.fc1 = nnx.Linear(freq_dim, width, kernel_init=init, rngs=rngs)
        self.fc2 = nnx.Linear(width, width, kernel_init=init, rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.silu(self.fc1(timestep_embedding(t, self.freq_dim))))


def _zero_linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    zeros = nnx.initializers.zeros
    return nnx.Linear(d_in, d_out, kernel_init=zeros, bias_init=zeros, rngs=rngs)


def _modulations(
    patch_mod: nnx.Linear, reg_mod: nnx.Linear, c: jax.Array, num_patches: int, total: int
) -> jax.Array:
    """Per-token modulation `[B, T, m * D]`: `patch_mod(c)` on the first `num_patches`
    tokens, `reg_mod(c)` on the rest (`c [B, D]` is the SiLU'd timestep embedding)."""
    p, r = patch_mod(c)[:, None], reg_mod(c)[:, None]
    b = c.shape[0]
    return jnp.concatenate(
        [jnp.broadcast_to(p, (b, num_patches, p.shape[-1])),
         jnp.broadcast_to(r, (b, total - num_patches, r.shape[-1]))],
        axis=1,
    )  # fmt: skip


class AdaLNBlock(nnx.Module):
    """adaLN-zero block with separate patch / register modulation: `[B, T, D]`, `c [B, D]`.

    The modulations (shift, scale, gate for attention and MLP) are zero-initialised,
    so every block starts as the identity.
    """

    def __init__(
        self, width: int, heads: int, *, num_patches: int, init, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        self.dtype = dtype
        self.num_patches = num_patches
        self.attn = MaskedAttention(width, heads, init=init, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(width, swiglu_width(width), dtype=dtype, rngs=rngs)
        self.patch_mod = _zero_linear(width, 6 * width, rngs)
        self.reg_mod = _zero_linear(width, 6 * width, rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        mod = _modulations(self.patch_mod, self.reg_mod, c, self.num_patches, x.shape[1])
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
        h = plain_norm(x) * (1.0 + scale1) + shift1
        x = x + gate1 * self.attn(h.astype(self.dtype), None).astype(jnp.float32)
        h = plain_norm(x) * (1.0 + scale2) + shift2
        return x + gate2 * self.mlp(h.astype(self.dtype)).astype(jnp.float32)


class AdaLNOutput(nnx.Module):
    """Final layer: adaLN (shift, scale), zero-initialised linear: `[B, N, D]` -> `[B, N, P]`."""

    def __init__(self, width: int, out_dim: int, *, rngs: nnx.Rngs):
        self.mod = _zero_linear(width, 2 * width, rngs)
        self.out = _zero_linear(width, out_dim, rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.mod(c)[:, None], 2, axis=-1)
        return self.out(plain_norm(x) * (1.0 + scale) + shift)
