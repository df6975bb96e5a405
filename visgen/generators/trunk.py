"""The causal trunk: Llama blocks over `[condition prefix, step embeddings]`, with a KV cache.

LlamaGen's decoder-only transformer (`visgen.nn.llama` blocks, final RMSNorm).
The trunk sees embeddings and rotary tables only: what a step is (one token,
a Token-Shuffle window, a latent) and how positions are laid out
(`rope_tables`: RoPE over the steps' layout, 1D `(M,)`, 2D `(h, w)` or 3D
`(t, h, w)`, the prefix positions with LlamaGen's `cos = sin = 0`,
`zero_cond_rope`) are the generator's business.

Sequence: `[prefix (c positions), step_0, ..., step_{M-2}]`, `c + M - 1`
positions; the output at position `c - 1 + i` is the hidden state the head
reads to predict step `i`.

Cached decoding: `init_cache` makes per-layer `{"k", "v"}` arrays
`[B, H, S, Dh]` (heads-first), and `run_cached`
runs `n` positions starting at a (possibly traced) sequence position. Shapes
are static. A cache longer than `c + M - 1` lets a speculative window run past
the last step; the positions past the layout get a zero rotation.

Simplifications vs LlamaGen: no grouped-query attention, no attention dropout
or drop-path (both 0 in its configs).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.nn.llama import LayerCache, LlamaBlock, RMSNorm, dropout, swiglu_hidden
from visgen.nn.rope import rope_table

# The KV cache: one `{"k": [B, H, S, Dh], "v": [B, H, S, Dh]}` per layer (heads-first).
Cache = list[LayerCache]


# RoPE `(cos, sin)` tables, each `[c + M, head_dim / 2]`: the prefix, then the steps.
Rope = tuple[np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=32)
def rope_tables(
    layout: tuple[int, ...], head_dim: int, prefix: int, base: float, zero_prefix: bool
) -> Rope:
    """RoPE over a steps' `layout` after `prefix` positions (see `visgen.nn.rope`)."""
    return rope_table(layout, head_dim, prefix=prefix, base=base, zero_prefix=zero_prefix)


class CausalTrunk(nnx.Module):
    """`depth` Llama blocks and a final RMSNorm over `[prefix, steps]` `[B, S, D]` float32.

    Args:
      prefix: condition prefix length `c`.
      width, depth, heads: size.
      qk_norm, mlp_multiple_of: see `visgen.nn.llama`.
      resid_dropout, token_dropout: dropout rates in training.
      dtype: compute dtype; the residual stream, norms and softmax stay float32.
    """

    def __init__(
        self,
        *,
        prefix: int,
        width: int,
        depth: int,
        heads: int,
        qk_norm: bool = False,
        mlp_multiple_of: int = 256,
        resid_dropout: float = 0.1,
        token_dropout: float = 0.1,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.prefix = prefix
        self.heads, self.head_dim = heads, width // heads
        self.token_dropout = token_dropout
        self.dtype = dtype
        hidden = swiglu_hidden(width, mlp_multiple_of)
        self.layers = nnx.List(
            [
                LlamaBlock(
                    width,
                    heads,
                    mlp_hidden=hidden,
                    qk_norm=qk_norm,
                    resid_dropout=resid_dropout,
                    dtype=dtype,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.norm = RMSNorm(width)

    def __call__(
        self,
        prefix: jax.Array,
        steps: jax.Array,
        rope: Rope,
        *,
        token_rng: jax.Array | None = None,
        layer_rng: jax.Array | None = None,
    ) -> jax.Array:
        """Teacher forcing: prefix `[B, c, D]`, step embeddings `[B, m, D]` (m < M), `rope` ->
        normalised hidden states `[B, m + 1, D]`, row `i` predicting step `i`.

        The rngs enable token dropout (on the whole input, prefix included) and
        residual dropout."""
        x = dropout(jnp.concatenate([prefix, steps], axis=1), self.token_dropout, token_rng)
        cos, sin = (jnp.asarray(t[: x.shape[1]]) for t in rope)
        for i, layer in enumerate(self.layers):
            rng = None if layer_rng is None else jax.random.fold_in(layer_rng, i)
            x, _ = layer(x, cos, sin, rng=rng)
        return self.norm(x[:, self.prefix - 1 :])

    def init_cache(self, batch: int, max_len: int, dtype: jnp.dtype | None = None) -> Cache:
        """Zero KV cache: per layer `{"k", "v"}` of `[batch, H, max_len, Dh]` (`dtype`
        default: the compute dtype)."""
        shape = (batch, self.heads, max_len, self.head_dim)
        dtype = dtype or self.dtype
        return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in self.layers]

    def run_cached(
        self, x: jax.Array, start: jax.Array | int, cache: Cache, rope: Rope
    ) -> tuple[jax.Array, Cache]:
        """Inputs `[B, n, D]` at sequence positions `start .. start + n - 1` -> normalised
        hidden states `[B, n, D]` and the cache with those positions written.

        Requires `start + n <= cache length` (not checked: a traced `start` past the
        end is clamped by `dynamic_update_slice`)."""
        n, length = x.shape[1], cache[0]["k"].shape[2]
        # A cache longer than `c + M` (room for a speculative window running past the
        # last step) gets `cos = sin = 0` rows for the extra positions: their outputs
        # are never used and causal masking keeps them out of earlier positions. Without
        # the padding, `dynamic_slice` would clamp `start` and shift every position.
        cos, sin = (
            jax.lax.dynamic_slice_in_dim(
                jnp.asarray(np.pad(t, ((0, max(0, length - len(t))), (0, 0)))), start, n
            )
            for t in rope
        )
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            x, layer_cache = layer(x, cos, sin, cache=layer_cache, start=start)
            new_cache.append(layer_cache)
        return self.norm(x), new_cache
