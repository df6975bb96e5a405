"""The decoder-only AR transformer that learns p(tokens | condition), LlamaGen style.

Sun et al. 2024, "Autoregressive Model Beats Diffusion: Llama for Scalable
Image Generation" (`FoundationVision/LlamaGen`, `autoregressive/models/gpt.py`):

- Sequence: `[condition prefix (c positions), tok_0, ..., tok_{N-2}]`, `c + N - 1`
  positions. The output at position `c - 1 + i` predicts token `i`, so the
  prefix's last position predicts the first token (LlamaGen's
  `logits[:, cls_token_num - 1:]`).
- Condition prefix: a class embedding `[num_classes + 1, c * D]` whose last
  row is the null class used for classifier-free guidance, or text embeddings
  `[B, L = c, D_text]` from any text encoder projected by a bias-free
  `Linear -> GELU(tanh) -> Linear` MLP, with a learned null text embedding
  `[L, D_text]` (init `randn / sqrt(D_text)`) substituted before the MLP.
  Training drops the condition with probability `cond_dropout` per example.
- Trunk: `depth` Llama blocks (`visgen.nn.llama`), final RMSNorm, then a head
  (`visgen.generators.heads`, categorical here). Token dropout on the input
  embeddings (prefix included) and residual dropout inside the blocks, both
  0.1 in LlamaGen's training scripts; weight init `normal(0.02)`; zero-initialised
  head.
- Positions: RoPE over the token layout (1D `(K,)`, 2D `(h, w)`, 3D `(t, h, w)`);
  the prefix positions get LlamaGen's `cos = sin = 0` (`zero_cond_rope`).

Token-Shuffle (`shuffle_window = s > 1`, `visgen.generators.token_shuffle`):
the trunk runs over `M = N / s^2` fused positions, one per `s x s` window of
the `(h, w)` or `(t, h, w)` grid, with RoPE over the fused layout
`(h/s, w/s)` or `(t, h/s, w/s)`; each step predicts the next window's `s^2`
tokens. Token ids in and out (`hidden_states`, `__call__`, `loss`) stay in
the tokenizer's raster order of `layout`; only the cached-decoding methods
speak the fused order (`to_fused` / `to_raster` convert). `s = 1` is exactly
the plain model: the same parameters and outputs. `causal_window` (ours)
makes the head predict a window's tokens in order within it.

Cached decoding (used by `visgen.sampling`): `init_cache` makes per-layer
`{"k", "v"}` arrays `[B, H, c + M - 1, Dh]` (heads-first), `prefill` runs the prefix,
`decode_step` feeds whole windows at a traced fused position. Shapes are
static. A cache allocated longer than `c + M - 1` (`init_cache(batch,
max_len=...)`) lets a window of several tokens run past the last token
(speculative Jacobi decoding); the positions past the layout get a zero
rotation.

Simplifications vs LlamaGen: no grouped-query attention, no attention dropout
or drop-path (both 0 in its configs), no text padding mask (LlamaGen's
`emb_masks`); a class prefix may span `c > 1` positions (LlamaGen: `c = 1`).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.generators import token_shuffle
from visgen.generators.heads import CategoricalHead
from visgen.nn.llama import DENSE_INIT, LayerCache, LlamaBlock, RMSNorm, dropout, swiglu_hidden
from visgen.nn.rope import rope_table

# (width, depth, heads) of LlamaGen's class-conditional GPT-B/L/XL; `tiny` for tests and demos.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (96, 4, 4),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1280, 36, 20),
}

# The KV cache: one `{"k": [B, H, S, Dh], "v": [B, H, S, Dh]}` per layer (heads-first).
Cache = list[LayerCache]


@functools.lru_cache(maxsize=32)
def _rope(
    layout: tuple[int, ...], head_dim: int, prefix: int, base: float, zero_prefix: bool
) -> tuple[np.ndarray, np.ndarray]:
    return rope_table(layout, head_dim, prefix=prefix, base=base, zero_prefix=zero_prefix)


class ClassEmbedder(nnx.Module):
    """Labels `[B]` int -> prefix `[B, c, D]` float32; label `num_classes` is the null class."""

    def __init__(self, num_classes: int, width: int, prefix: int, *, rngs: nnx.Rngs):
        self.num_classes = num_classes
        self.prefix = prefix
        self.embedding = nnx.Embed(
            num_classes + 1, prefix * width, embedding_init=DENSE_INIT, rngs=rngs
        )

    def __call__(self, labels: jax.Array, drop: jax.Array | None = None) -> jax.Array:
        labels = labels.astype(jnp.int32)
        if drop is not None:
            labels = jnp.where(drop, self.num_classes, labels)
        return self.embedding(labels).reshape(labels.shape[0], self.prefix, -1)


class TextEmbedder(nnx.Module):
    """Text embeddings `[B, L, D_text]` -> prefix `[B, L, D]` float32 (LlamaGen CaptionEmbedder)."""

    def __init__(self, text_dim: int, width: int, length: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.null = nnx.Param(
            jax.random.normal(rngs.params(), (length, text_dim), jnp.float32) / text_dim**0.5
        )
        kw = dict(use_bias=False, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(text_dim, width, **kw)
        self.fc2 = nnx.Linear(width, width, **kw)

    def __call__(self, text: jax.Array, drop: jax.Array | None = None) -> jax.Array:
        text = text.astype(jnp.float32)
        if drop is not None:
            text = jnp.where(drop[:, None, None], self.null[...], text)
        h = jax.nn.gelu(self.fc1(text.astype(self.dtype)), approximate=True)
        return self.fc2(h).astype(jnp.float32)


class ARTransformer(nnx.Module):
    """Decoder-only transformer over token ids `[B, N]` with a condition prefix.

    Args:
      vocab_size: number of token ids `V`.
      layout: token layout of the tokenizer, `(K,)`, `(h, w)` or `(t, h, w)`;
        `N = prod(layout)` tokens in raster order.
      width, depth, heads: trunk size (see `SIZES`).
      num_classes: class-conditional with this many classes (index
        `num_classes` is the null class). Exclusive with `text_dim`.
      text_dim: text-conditional on `[B, cls_token_num, text_dim]` embeddings.
      cls_token_num: condition prefix length `c` (1 for class in LlamaGen, the
        text length for text).
      qk_norm: RMSNorm on queries and keys per head.
      mlp_multiple_of: SwiGLU hidden size rounding (LlamaGen: 256).
      rope_base: RoPE base frequency.
      zero_cond_rope: LlamaGen's zeroed RoPE (so zeroed q, k) on prefix positions.
      resid_dropout, token_dropout: dropout rates in training.
      cond_dropout: probability of replacing the condition by the null one in
        training (classifier-free guidance).
      zero_init_head: zero-initialise the output classifier (LlamaGen).
      shuffle_window: Token-Shuffle window `s`; 1 is the plain model. It must
        divide both spatial sizes of a 2D or 3D layout.
      shuffle_blocks: residual MLP blocks on each side of the trunk when
        shuffling (the paper's 2).
      causal_window: with shuffling, predict a window's tokens one after
        another from the same transformer pass
        (`token_shuffle.TokenShuffleHead(causal=True)`; not in the paper).
      dtype: compute dtype; parameters, norms and softmax stay float32.
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        layout: tuple[int, ...],
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        num_classes: int = 0,
        text_dim: int = 0,
        cls_token_num: int = 1,
        qk_norm: bool = False,
        mlp_multiple_of: int = 256,
        rope_base: float = 10000.0,
        zero_cond_rope: bool = True,
        resid_dropout: float = 0.1,
        token_dropout: float = 0.1,
        cond_dropout: float = 0.1,
        zero_init_head: bool = True,
        shuffle_window: int = 1,
        shuffle_blocks: int = 2,
        causal_window: bool = False,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if (num_classes > 0) == (text_dim > 0):
            raise ValueError(
                f"exactly one of num_classes ({num_classes}) and text_dim ({text_dim}) "
                "must be positive"
            )
        if cls_token_num < 1:
            raise ValueError(f"cls_token_num must be >= 1, got {cls_token_num}")
        self.layout = tuple(int(n) for n in layout)
        if not 1 <= len(self.layout) <= 3 or min(self.layout) < 1:
            raise ValueError(f"layout must be 1 to 3 positive sizes, got {layout}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.vocab_size = vocab_size
        self.num_tokens = math.prod(self.layout)
        self.shuffle_window = int(shuffle_window)
        if causal_window and self.shuffle_window == 1:
            raise ValueError(
                "causal_window orders the tokens of a window: it needs shuffle_window > 1"
            )
        self.causal_window = bool(causal_window)
        self.fused_layout = token_shuffle.fused_layout(self.layout, self.shuffle_window)
        self.window_tokens = self.shuffle_window**2
        self.num_steps = math.prod(self.fused_layout)
        self.prefix = cls_token_num
        self.width, self.depth, self.heads = width, depth, heads
        self.head_dim = width // heads
        self.num_classes = num_classes
        self.text_dim = text_dim
        self.rope_base = float(rope_base)
        self.zero_cond_rope = zero_cond_rope
        self.resid_dropout = resid_dropout
        self.token_dropout = token_dropout
        self.cond_dropout = cond_dropout
        self.dtype = dtype
        # Validates head_dim against the layout's RoPE split now, not at first call.
        self._rope_table()

        if num_classes:
            self.cond_embed = ClassEmbedder(num_classes, width, cls_token_num, rngs=rngs)
        else:
            self.cond_embed = TextEmbedder(text_dim, width, cls_token_num, dtype=dtype, rngs=rngs)
        self.tok_embeddings = nnx.Embed(vocab_size, width, embedding_init=DENSE_INIT, rngs=rngs)
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
        if self.shuffle_window == 1:
            self.shuffle_in = None
            self.head = CategoricalHead(
                width, vocab_size, zero_init=zero_init_head, dtype=dtype, rngs=rngs
            )
        else:
            kw = dict(blocks=shuffle_blocks, dtype=dtype, rngs=rngs)
            self.shuffle_in = token_shuffle.TokenShuffle(width, self.shuffle_window, **kw)
            self.head = token_shuffle.TokenShuffleHead(
                width, vocab_size, self.shuffle_window, zero_init=zero_init_head,
                causal=self.causal_window, **kw
            )  # fmt: skip

    # --- condition ------------------------------------------------------------------

    def _rope_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin) `[c + M, head_dim / 2]`: the prefix, then the fused positions in raster
        order (the tokens themselves without shuffling)."""
        return _rope(
            self.fused_layout, self.head_dim, self.prefix, self.rope_base, self.zero_cond_rope
        )

    def _check_cond(self, cond: jax.Array) -> None:
        if self.num_classes and cond.ndim != 1:
            raise ValueError(f"class labels must be [B], got {tuple(cond.shape)}")
        if self.text_dim and (cond.ndim != 3 or cond.shape[1:] != (self.prefix, self.text_dim)):
            raise ValueError(
                f"text embeddings must be [B, {self.prefix}, {self.text_dim}], "
                f"got {tuple(cond.shape)}"
            )

    def condition_drop(self, batch: int, rng: jax.Array) -> jax.Array:
        """Training's classifier-free-guidance dropout: `[batch]` bool, True w.p. `cond_dropout`."""
        return jax.random.uniform(rng, (batch,)) < self.cond_dropout

    def embed_condition(self, cond: jax.Array, *, drop: jax.Array | None = None) -> jax.Array:
        """Labels `[B]` or text `[B, c, D_text]` -> prefix `[B, c, D]` float32.

        `drop: [B]` bool replaces those examples' condition by the null one.
        """
        self._check_cond(cond)
        return self.cond_embed(cond, drop)

    # --- token order ----------------------------------------------------------------

    def to_fused(self, tokens: jax.Array) -> jax.Array:
        """Raster-ordered ids `[B, N]` -> fused order `[B, N]`: window by window (raster
        order of the fused grid), each window's `s^2` ids in raster order. Identity at s = 1."""
        if self.shuffle_window == 1:
            return tokens
        return token_shuffle.shuffle(tokens, self.layout, self.shuffle_window).reshape(tokens.shape)

    def to_raster(self, tokens: jax.Array) -> jax.Array:
        """Fused-order ids `[B, N]` -> raster order `[B, N]`, the inverse of `to_fused`."""
        if self.shuffle_window == 1:
            return tokens
        windows = tokens.reshape(tokens.shape[0], self.num_steps, self.window_tokens)
        return token_shuffle.unshuffle(windows, self.layout, self.shuffle_window)

    def _embed(self, fused: jax.Array) -> jax.Array:
        """Fused-order ids `[B, k * s^2]` (k whole windows) -> input embeddings `[B, k, D]`."""
        x = self.tok_embeddings(fused.astype(jnp.int32))
        if self.shuffle_in is None:
            return x
        return self.shuffle_in(x.reshape(x.shape[0], -1, self.window_tokens, self.width))

    # --- teacher forcing ------------------------------------------------------------

    def hidden_states(
        self,
        tokens: jax.Array,
        cond: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        drop: jax.Array | None = None,
    ) -> jax.Array:
        """Raster-ordered tokens `[B, n]` (n <= N) -> normalised hidden states `[B, n, D]` float32.

        Row `i` has seen the prefix and tokens `< i` and is what the head reads
        to predict token `i`. `train` applies condition, token and residual
        dropout and then needs `rng`; `drop: [B]` bool forces the null condition.
        With shuffling, `n = N` and the states are per fused position,
        `[B, M, D]`: row `j` predicts window `j` from the windows before it.
        """
        b, n = tokens.shape
        if n > self.num_tokens:
            raise ValueError(f"got {n} tokens, the layout {self.layout} has {self.num_tokens}")
        if self.shuffle_window > 1 and n != self.num_tokens:
            raise ValueError(
                f"with shuffle_window={self.shuffle_window} the model reads whole windows: "
                f"teacher forcing takes all {self.num_tokens} tokens of layout {self.layout}, "
                f"got {n}"
            )
        keys: list[jax.Array | None] = [None, None, None]
        if train:
            if rng is None:
                raise ValueError("train=True needs an rng for dropout")
            keys = list(jax.random.split(rng, 3))
            if drop is None and self.cond_dropout > 0:
                drop = self.condition_drop(b, keys[0])
        prefix = self.embed_condition(cond, drop=drop)
        x = self._embed(self.to_fused(tokens)[:, : n - self.window_tokens])
        x = dropout(jnp.concatenate([prefix, x], axis=1), self.token_dropout, keys[1])
        seq = self.prefix + n // self.window_tokens - 1
        cos, sin = (jnp.asarray(t[:seq]) for t in self._rope_table())
        for i, layer in enumerate(self.layers):
            layer_rng = None if keys[2] is None else jax.random.fold_in(keys[2], i)
            x, _ = layer(x, cos, sin, rng=layer_rng)
        return self.norm(x[:, self.prefix - 1 :])

    def __call__(
        self,
        tokens: jax.Array,
        cond: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        drop: jax.Array | None = None,
    ) -> jax.Array:
        """Teacher forcing: tokens `[B, n]` int -> logits `[B, n, V]` float32 (raster order).

        `logits[:, i]` predicts token `i` from the condition and tokens `< i`
        (with shuffling: from the windows before token `i`'s window).
        """
        hidden = self.hidden_states(tokens, cond, train=train, rng=rng, drop=drop)
        if self.shuffle_window == 1:
            return self.head.logits(hidden)
        windows = token_shuffle.shuffle(tokens, self.layout, self.shuffle_window)
        logits = self.head.logits(hidden, windows)  # a causal window head reads them
        return token_shuffle.unshuffle(logits, self.layout, self.shuffle_window)

    def loss(
        self,
        tokens: jax.Array,
        cond: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        drop: jax.Array | None = None,
    ) -> jax.Array:
        """Mean per-token loss (cross-entropy for the categorical head), a float32 scalar.

        With shuffling every original token counts: the mean over `[B, M, s^2]`.
        """
        hidden = self.hidden_states(tokens, cond, train=train, rng=rng, drop=drop)
        if self.shuffle_window > 1:
            tokens = token_shuffle.shuffle(tokens, self.layout, self.shuffle_window)
        return jnp.mean(self.head.loss(hidden, tokens))

    # --- cached decoding ------------------------------------------------------------

    @property
    def max_len(self) -> int:
        """Sequence positions a full sample needs: prefix plus `M - 1` fed (fused) tokens."""
        return self.prefix + self.num_steps - 1

    def init_cache(
        self, batch: int, max_len: int | None = None, dtype: jnp.dtype | None = None
    ) -> Cache:
        """Zero KV cache: per layer `{"k", "v"}` of `[batch, H, max_len, Dh]` (default
        `max_len = c + M - 1`, `dtype` the compute dtype)."""
        shape = (batch, self.heads, max_len or self.max_len, self.head_dim)
        dtype = dtype or self.dtype
        return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in self.layers]

    def _run_cached(self, x: jax.Array, start: jax.Array | int, cache: Cache):
        n, length = x.shape[1], cache[0]["k"].shape[2]
        # A cache longer than `c + N` (room for a speculative window running past the
        # last token) gets `cos = sin = 0` rows for the extra positions: their outputs
        # are never used and causal masking keeps them out of earlier positions. Without
        # the padding, `dynamic_slice` would clamp `start` and shift every position.
        cos, sin = (
            jax.lax.dynamic_slice_in_dim(
                jnp.asarray(np.pad(t, ((0, max(0, length - len(t))), (0, 0)))), start, n
            )
            for t in self._rope_table()
        )
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            x, layer_cache = layer(x, cos, sin, cache=layer_cache, start=start)
            new_cache.append(layer_cache)
        return self.norm(x), new_cache

    def prefill(
        self,
        cond: jax.Array,
        cache: Cache,
        *,
        drop: jax.Array | None = None,
        return_hidden: bool = False,
    ) -> tuple[jax.Array, Cache]:
        """Run the condition prefix into `cache`: returns logits for the first step and the cache.

        The logits are `[B, V]` for token 0, or with shuffling `[B, s^2, V]`
        for window 0. `drop: [B]` bool uses the null condition for those rows
        (the unconditional half of a classifier-free-guidance batch).
        `return_hidden` returns the head's input `[B, D]` instead (a causal
        window head samples from it with `head.draw_window`).
        """
        hidden, cache = self._run_cached(self.embed_condition(cond, drop=drop), 0, cache)
        if return_hidden:
            return hidden[:, -1], cache
        return self.head.logits(hidden[:, -1:])[:, 0], cache

    def decode_step(
        self, tokens: jax.Array, pos: jax.Array | int, cache: Cache, *, return_hidden: bool = False
    ) -> tuple[jax.Array, Cache]:
        """Feed `n` steps' tokens `[B, n * s^2]` (fused order) whose first step is `pos`.

        `pos` (0-based; may be traced) counts steps: tokens without
        shuffling, windows with it. Returns float32 logits `[B, n, V]`, or
        `[B, n, s^2, V]` with shuffling, row `j` predicting step `pos + j + 1`,
        and the cache with positions `c + pos .. c + pos + n - 1` written.
        Requires `c + pos + n <= max_len` (not checked: a traced `pos` past
        the end is clamped by `dynamic_update_slice`). `return_hidden` returns
        the head's input `[B, n, D]` instead of logits.
        """
        x = self._embed(tokens)
        hidden, cache = self._run_cached(x, self.prefix + pos, cache)
        return (hidden if return_hidden else self.head.logits(hidden)), cache
