"""Llama-style causal transformer blocks with an explicit KV cache.

The block of LlamaGen (`FoundationVision/LlamaGen`, `autoregressive/models/gpt.py`):

    h = x + Dropout(Attn(RMSNorm(x)));   out = h + Dropout(SwiGLU(RMSNorm(h)))

- Bias-free projections, fused `wqkv`, SwiGLU `w2(silu(w1 x) * w3 x)` with
  hidden size `find_multiple(int(8 * width / 3), multiple_of)`, weight init
  `normal(0.02)`, RMSNorm eps 1e-5 computed in float32.
- RoPE on queries and keys (`visgen.nn.rope`); optional QK-norm (an RMSNorm over
  `head_dim` on q and k before RoPE; LlamaGen has none).
- Attention is causal. With a cache, the new keys and values are written at
  sequence position `start` with `lax.dynamic_update_slice` and queries attend
  to the whole (static-length) cache under the mask `key_pos <= query_pos`, so
  shapes never depend on the decode step. The cache is stored heads-first,
  `[B, H, S, Dh]`, the layout of the attention dots' batch dimensions (see
  `cached_attention` for why).

Mixed precision follows `visgen.nn.vit`: parameters are float32 and cast to the
compute `dtype` at use; the residual stream, norms, RoPE and the softmax stay
float32. The cache holds keys and values in the compute dtype.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.nn.rope import apply_rope

DENSE_INIT = nnx.initializers.normal(stddev=0.02)
NORM_EPS = 1e-5

# One layer's cache: {"k": [B, H, S, Dh], "v": [B, H, S, Dh]} (heads-first).
LayerCache = dict[str, jax.Array]


def swiglu_hidden(width: int, multiple_of: int = 256) -> int:
    """LlamaGen's SwiGLU hidden size: `int(2 * 4 * width / 3)` rounded up to `multiple_of`."""
    hidden = int(2 * 4 * width / 3)
    return -(-hidden // multiple_of) * multiple_of


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout of elements of `x`; the identity when `rng` is None or `rate` is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, q_pos: jax.Array | None = None
) -> jax.Array:
    """Causal softmax attention: q `[B, n, H, Dh]`, k, v `[B, S, H, Dh]` -> `[B, n, H, Dh]`.

    `q_pos: [n]` are the queries' sequence positions; key `j` is visible to
    query `i` iff `j <= q_pos[i]`. None means `q_pos = arange(n)` with `n == S`
    (a full causal pass), which on accelerators runs as
    `jax.nn.dot_product_attention(is_causal=True)`. Logits and softmax are float32.
    """
    if q_pos is None and jax.default_backend() != "cpu":
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    if q_pos is None:
        q_pos = jnp.arange(q.shape[1])
    return _masked_attention(q, k, v, q_pos, "bkhd")


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, q_pos: jax.Array) -> jax.Array:
    """Causal attention over a heads-first cache: q `[B, n, H, Dh]`, k, v `[B, H, S, Dh]`.

    Returns `[B, n, H, Dh]`; key `j` is visible to query `i` iff `j <= q_pos[i]`.
    Same math as `causal_attention`, but the cache's layout already has the
    dots' batch dimensions `(B, H)` leading, so XLA reads it in place. With
    a `[B, S, H, Dh]` cache, XLA CPU transposes the whole cache of every layer
    on every decode step before the dots: at batch 8 that copy was about half
    of GPT-B's step time (docs/notes/2026-11-26-batch8-decode-step-time.md).
    """
    return _masked_attention(q, k, v, q_pos, "bhkd")


def _masked_attention(q, k, v, q_pos: jax.Array, kv_layout: str) -> jax.Array:
    """Softmax attention of q `[B, n, H, Dh]` over k, v in `kv_layout` (`bkhd` or
    `bhkd`), key `j` visible to query `i` iff `j <= q_pos[i]`; float32 logits."""
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    logits = jnp.einsum(f"bqhd,{kv_layout}->bhqk", q * scale, k, preferred_element_type=jnp.float32)
    visible = jnp.arange(k.shape[kv_layout.index("k")])[None, :] <= q_pos[:, None]
    logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum(f"bhqk,{kv_layout}->bqhd", probs, v)


class RMSNorm(nnx.Module):
    """`x * rsqrt(mean(x^2) + eps) * weight` over the last axis, in float32; returns float32."""

    def __init__(self, dim: int, *, eps: float = NORM_EPS):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return x * self.weight[...]


def _linear(d_in: int, d_out: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=False, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)


class SwiGLU(nnx.Module):
    """`w2(silu(w1 x) * w3 x)`: `[..., D]` -> `[..., D]` in the compute dtype."""

    def __init__(self, width: int, hidden: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.w1 = _linear(width, hidden, dtype, rngs)
        self.w3 = _linear(width, hidden, dtype, rngs)
        self.w2 = _linear(hidden, width, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.w2(jax.nn.silu(self.w1(x)) * self.w3(x))


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with RoPE, optional QK-norm and a KV cache."""

    def __init__(self, width: int, heads: int, *, qk_norm: bool, dtype: jnp.dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.wqkv = _linear(width, 3 * width, dtype, rngs)
        self.wo = _linear(width, width, dtype, rngs)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else None

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        *,
        cache: LayerCache | None = None,
        start: jax.Array | int = 0,
    ) -> tuple[jax.Array, LayerCache | None]:
        """`x: [B, n, D]` at sequence positions `start .. start+n-1`; `cos, sin: [n, Dh/2]`.

        Without a cache `start` must be 0 and the pass is fully causal over `x`.
        Returns (`[B, n, D]` in the compute dtype, the updated cache or None).
        """
        b, n, d = x.shape
        qkv = self.wqkv(x).reshape(b, n, 3, self.heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.q_norm is not None:
            q = self.q_norm(q).astype(v.dtype)
            k = self.k_norm(k).astype(v.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None:
            y = causal_attention(q, k, v)
        else:
            # The cache is heads-first: write `[B, H, n, Dh]` at sequence position `start`.
            index = (0, 0, start, 0)
            cache = {
                name: jax.lax.dynamic_update_slice(
                    cache[name], jnp.swapaxes(new, 1, 2).astype(cache[name].dtype), index
                )
                for name, new in (("k", k), ("v", v))
            }
            q_pos = start + jnp.arange(n)
            y = cached_attention(q, cache["k"].astype(q.dtype), cache["v"].astype(q.dtype), q_pos)
        return self.wo(y.reshape(b, n, d)), cache


class LlamaBlock(nnx.Module):
    """Pre-norm Llama block: `[B, n, D]` float32 residual stream -> same, plus the cache."""

    def __init__(
        self,
        width: int,
        heads: int,
        *,
        mlp_hidden: int,
        qk_norm: bool = False,
        resid_dropout: float = 0.0,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.resid_dropout = resid_dropout
        self.attention_norm = RMSNorm(width)
        self.attention = CausalSelfAttention(width, heads, qk_norm=qk_norm, dtype=dtype, rngs=rngs)
        self.ffn_norm = RMSNorm(width)
        self.feed_forward = SwiGLU(width, mlp_hidden, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        *,
        cache: LayerCache | None = None,
        start: jax.Array | int = 0,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, LayerCache | None]:
        """`rng` enables residual dropout (training); see `CausalSelfAttention` for the rest."""
        attn_rng, ffn_rng = (None, None) if rng is None else jax.random.split(rng)
        y, cache = self.attention(
            self.attention_norm(x).astype(self.dtype), cos, sin, cache=cache, start=start
        )
        x = x + dropout(y.astype(jnp.float32), self.resid_dropout, attn_rng)
        y = self.feed_forward(self.ffn_norm(x).astype(self.dtype))
        return x + dropout(y.astype(jnp.float32), self.resid_dropout, ffn_rng), cache
