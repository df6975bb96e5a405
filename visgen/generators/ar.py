"""The autoregressive generator: condition, token embedding, causal trunk and a head.

Sun et al. 2024, "Autoregressive Model Beats Diffusion: Llama for Scalable
Image Generation" (`FoundationVision/LlamaGen`, `autoregressive/models/gpt.py`),
made token-agnostic:

- `condition`: a class or text prefix (`visgen.generators.conditions`),
  dropped to the null condition with probability `cond_dropout` per example
  in training (classifier-free guidance);
- `token_embed`: one token -> `[D]`, chosen by the tokenizer's `TokenSpec`
  kind (ids: `TokenIdEmbedding`; latents: a linear layer);
- `trunk_input` and `head`: the token interface registered under
  `head["name"]` (`visgen.generators.base.HEADS`): the step embedding
  (`trunk_input`, what the trunk reads) groups tokens into steps (one token
  each for `categorical`, `s x s` windows for `token_shuffle`) and the head
  predicts a step's tokens;
- `trunk`: Llama blocks over `[prefix, steps]` (`visgen.generators.trunk`).

Token dropout on the input embeddings (prefix included) and residual dropout
inside the blocks, both 0.1 in LlamaGen's training scripts; weight init
`normal(0.02)`; zero-initialised classifier.

Tokens in and out (`hidden_states`, `loss`, `token_losses`, `logits`) are in
the tokenizer's raster order of `spec.layout`; the cached-decoding methods
(`prefill`, `decode_step`, used by `visgen.sampling`) speak steps
`[B, n, g, ...]` (`trunk_input.to_steps` / `from_steps` convert).
"""

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators.base import HEADS
from visgen.generators.categorical import TokenIdEmbedding
from visgen.generators.conditions import ClassEmbedder, TextEmbedder
from visgen.generators.trunk import Cache, CausalTrunk, Rope, rope_tables
from visgen.token_spec import TokenSpec

# (width, depth, heads) of LlamaGen's class-conditional GPT-B/L/XL; `tiny` for tests and demos.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (96, 4, 4),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1280, 36, 20),
}

CATEGORICAL = {"name": "categorical"}


def token_embedding(spec: TokenSpec, width: int, rngs: nnx.Rngs) -> nnx.Module:
    """The per-token input embedding for a spec's kind: ids `[...]`, or latents `[..., C]`
    through a linear layer (MAR's `z_proj`, Xavier-uniform) -> `[..., D]` float32."""
    if spec.kind == "discrete":
        return TokenIdEmbedding(spec.vocab_size, width, rngs=rngs)
    if spec.kind == "continuous":
        return nnx.Linear(
            spec.channels, width, kernel_init=nnx.initializers.xavier_uniform(), rngs=rngs
        )
    raise ValueError(f"no input embedding for {spec.kind} tokens yet")


class ARGenerator(nnx.Module):
    """A decoder-only generator over a tokenizer's tokens with a condition prefix.

    Args:
      spec: the tokenizer's token spec; `N = spec.num_tokens` tokens per example.
      head: the token interface: `{"name": ..., **its arguments}` (see `HEADS`).
      width, depth, heads: trunk size (see `SIZES`).
      num_classes: class-conditional with this many classes (index
        `num_classes` is the null class). Exclusive with `text_dim`.
      text_dim: text-conditional on `[B, cls_token_num, text_dim]` embeddings.
      cls_token_num: condition prefix length `c` (1 for class in LlamaGen, the
        text length for text).
      qk_norm, mlp_multiple_of, rope_base, zero_cond_rope, resid_dropout,
        token_dropout: trunk settings (`CausalTrunk`).
      cond_dropout: probability of replacing the condition by the null one in
        training (classifier-free guidance).
      dtype: compute dtype; parameters, norms and softmax stay float32.
      rngs: parameter initialisation.
    """

    # The sampler of `visgen.sampling.METHODS` this generator is drawn with by default
    # (`sjd` also takes it); `MaskedGenerator` says `mar`.
    method = "ar"

    def __init__(
        self,
        *,
        spec: TokenSpec,
        head: Mapping[str, Any] = CATEGORICAL,
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
        layout = tuple(int(n) for n in spec.layout)
        if not 1 <= len(layout) <= 3 or min(layout) < 1:
            raise ValueError(f"layout must be 1 to 3 positive sizes, got {layout}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        head_args = dict(head)
        if "name" not in head_args:
            raise ValueError(f"generator.head needs a name; valid: {', '.join(HEADS.names())}")
        self.head_name = head_args.pop("name")
        interface = HEADS.get(self.head_name)
        self.spec = spec
        self.width = width
        self.num_tokens = math.prod(layout)
        self.prefix = cls_token_num
        self.num_classes = num_classes
        self.text_dim = text_dim
        self.cond_dropout = cond_dropout

        # Creation order fixes the parameters' initial values: condition, token
        # embedding, trunk, then the head's pair.
        if num_classes:
            self.condition = ClassEmbedder(num_classes, width, cls_token_num, rngs=rngs)
        else:
            self.condition = TextEmbedder(text_dim, width, cls_token_num, dtype=dtype, rngs=rngs)
        token_embed = token_embedding(spec, width, rngs)
        self.trunk = CausalTrunk(
            prefix=cls_token_num,
            width=width,
            depth=depth,
            heads=heads,
            qk_norm=qk_norm,
            mlp_multiple_of=mlp_multiple_of,
            resid_dropout=resid_dropout,
            dtype=dtype,
            token_dropout=token_dropout,
            rngs=rngs,
        )
        self.trunk_input, self.head = interface.build(
            spec, width, token_embed=token_embed, dtype=dtype, rngs=rngs, **head_args
        )
        self.step_layout = tuple(self.trunk_input.step_layout)
        self.tokens_per_step = int(self.trunk_input.tokens_per_step)
        self.num_steps = math.prod(self.step_layout)
        self.rope_base = float(rope_base)
        self.zero_cond_rope = zero_cond_rope
        self.rope()  # a clear error now if head_dim does not split over the layout

    # --- condition and positions ----------------------------------------------------

    def rope(self) -> Rope:
        """RoPE tables `[c + M, head_dim / 2]` over the steps' layout."""
        return rope_tables(
            self.step_layout,
            self.trunk.head_dim,
            self.prefix,
            self.rope_base,
            self.zero_cond_rope,
        )

    def condition_drop(self, batch: int, rng: jax.Array) -> jax.Array:
        """Training's classifier-free-guidance dropout: `[batch]` bool, True w.p. `cond_dropout`."""
        return jax.random.uniform(rng, (batch,)) < self.cond_dropout

    def embed_condition(self, cond: jax.Array, *, drop: jax.Array | None = None) -> jax.Array:
        """Labels `[B]` or text `[B, c, D_text]` -> prefix `[B, c, D]` float32.

        `drop: [B]` bool replaces those examples' condition by the null one.
        """
        return self.condition(cond, drop)

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
        """Raster tokens `[B, N, ...]` -> the head's inputs `[B, M, D]` float32.

        Row `i` has seen the prefix and the steps before step `i`. `train`
        applies condition, token and residual dropout and then needs `rng`;
        `drop: [B]` bool forces the null condition.
        """
        b, n = tokens.shape[:2]
        if n != self.num_tokens:
            raise ValueError(
                f"teacher forcing takes all {self.num_tokens} tokens of layout "
                f"{tuple(self.spec.layout)}, got {n}"
            )
        keys: list[jax.Array | None] = [None, None, None]
        if train:
            if rng is None:
                raise ValueError("train=True needs an rng for dropout")
            keys = list(jax.random.split(rng, 3))
            if drop is None and self.cond_dropout > 0:
                drop = self.condition_drop(b, keys[0])
        prefix = self.embed_condition(cond, drop=drop)
        steps = self.trunk_input(self.trunk_input.to_steps(tokens)[:, :-1])
        return self.trunk(prefix, steps, self.rope(), token_rng=keys[1], layer_rng=keys[2])

    def _step_losses(self, tokens, cond, *, train, rng, drop) -> jax.Array:
        hidden = self.hidden_states(tokens, cond, train=train, rng=rng, drop=drop)
        head_rng = None if rng is None else jax.random.fold_in(rng, 3)
        return self.head.loss(hidden, self.trunk_input.to_steps(tokens), head_rng)

    def loss(
        self,
        tokens: jax.Array,
        cond: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        drop: jax.Array | None = None,
    ) -> jax.Array:
        """The mean per-token loss over `[B, N]` (cross-entropy for categorical heads)."""
        return jnp.mean(self._step_losses(tokens, cond, train=train, rng=rng, drop=drop))

    def token_losses(self, tokens: jax.Array, cond: jax.Array) -> jax.Array:
        """Evaluation: the head's loss of every token, `[B, N]` float32 in raster order."""
        losses = self._step_losses(tokens, cond, train=False, rng=None, drop=None)
        return self.trunk_input.from_steps(losses)

    def logits(
        self, tokens: jax.Array, cond: jax.Array, *, drop: jax.Array | None = None
    ) -> jax.Array:
        """Teacher-forced logits of a head with logits: `[B, N]` -> `[B, N, V]` float32.

        `logits[:, i]` predicts token `i` from the condition and the steps before
        token `i`'s step (and, for a causal window head, the window's earlier tokens).
        """
        hidden = self.hidden_states(tokens, cond, drop=drop)
        return self.trunk_input.from_steps(
            self.head.logits(hidden, self.trunk_input.to_steps(tokens))
        )

    # --- cached decoding ------------------------------------------------------------

    @property
    def max_len(self) -> int:
        """Sequence positions a full sample needs: prefix plus `M - 1` fed steps."""
        return self.prefix + self.num_steps - 1

    def init_cache(
        self, batch: int, max_len: int | None = None, dtype: jnp.dtype | None = None
    ) -> Cache:
        """Zero KV cache: per layer `{"k", "v"}` of `[batch, H, max_len, Dh]` (default
        `max_len = c + M - 1`, `dtype` the compute dtype)."""
        return self.trunk.init_cache(batch, max_len or self.max_len, dtype)

    def prefill(
        self, cond: jax.Array, cache: Cache, *, drop: jax.Array | None = None
    ) -> tuple[jax.Array, Cache]:
        """Run the condition prefix into `cache`: the head's input for step 0 `[B, D]`, and
        the cache. `drop: [B]` bool uses the null condition for those rows."""
        prefix = self.embed_condition(cond, drop=drop)
        hidden, cache = self.trunk.run_cached(prefix, 0, cache, self.rope())
        return hidden[:, -1], cache

    def decode_step(
        self, steps: jax.Array, pos: jax.Array | int, cache: Cache
    ) -> tuple[jax.Array, Cache]:
        """Feed `n` steps `[B, n, g, ...]` whose first is step `pos` (0-based; may be traced).

        Returns the head's inputs `[B, n, D]`, row `j` predicting step `pos + j + 1`,
        and the cache with positions `c + pos .. c + pos + n - 1` written.
        """
        x = self.trunk_input(steps)
        return self.trunk.run_cached(x, self.prefix + pos, cache, self.rope())
