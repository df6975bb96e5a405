"""Token-Shuffle's output side: a head that predicts a whole window of `s^2` ids per step.

Ma et al. 2025 (Token-Shuffle; see `visgen.generators.token_shuffle` for the
input side and the token order). The window's hidden state `[D]` goes
through token-unshuffle into `s^2` states, an RMSNorm, and one categorical
classifier shared by the window (the head reads normalised states, as
without shuffling). Training is the cross-entropy of every original token.

How a window's tokens are drawn:

- independent (the paper): conditionally independent given the window's
  state; each token with its own Gumbel vector. Exact per-token
  probabilities, so speculative Jacobi decoding applies.
- coupled (`WindowOptions.coupled`; not in the paper): the same, but the
  window's tokens share one Gumbel vector, so tokens whose distributions agree
  take the same id (a window whose tokens each put a third on three colours
  gets one colour, not a patchwork). Each token is still an exact draw of its
  own distribution, but the window is not their product: SJD refuses it.
- causal (`causal=True`; not in the paper): token `j`'s state gets
  `sum_{i<j} E_i[t_i]` (one embedding table per earlier slot) added and goes
  through one more residual MLP before the norm, so the window's tokens are
  drawn one after another from one transformer pass; a token's logits never
  read its own or later tokens of the window. Teacher forcing stays one pass.

Registered as `token_shuffle` with `window` (s), `blocks` (residual MLP blocks
on each side, the paper's 2), `causal` and `zero_init`.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators.base import CAUSAL_PROBS, EXACT_PROBS, HEADS, DrawContext, guided_rows
from visgen.generators.categorical import (
    CategoricalOptions,
    Classifier,
    cross_entropy,
    draw_step,
    require_discrete,
    sample_logits,
)
from visgen.generators.token_shuffle import ResidualMLP, TokenUnshuffle, WindowSteps, fused_layout
from visgen.nn.llama import RMSNorm
from visgen.token_spec import TokenSpec


@dataclasses.dataclass(frozen=True)
class WindowOptions(CategoricalOptions):
    """`CategoricalOptions` plus `coupled`: one shared Gumbel vector per window
    (independent heads only; a causal head draws its tokens in order)."""

    coupled: bool = False


class WindowHead(nnx.Module):
    """Hidden `[..., D]` (one row per window) -> logits `[..., s^2, V]`; see the module doc."""

    Options = WindowOptions

    def __init__(
        self,
        width: int,
        vocab_size: int,
        window: int,
        *,
        blocks: int = 2,
        zero_init: bool = True,
        causal: bool = False,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.window = window
        self.vocab_size = vocab_size
        self.causal = causal
        self.unshuffle = TokenUnshuffle(width, window, blocks=blocks, dtype=dtype, rngs=rngs)
        if causal:
            init = nnx.initializers.normal(0.02)
            self.context = nnx.List(
                [
                    nnx.Embed(vocab_size, width, embedding_init=init, rngs=rngs)
                    for _ in range(window * window - 1)
                ]
            )
            self.mix = ResidualMLP(width, dtype=dtype, rngs=rngs)
        self.norm = RMSNorm(width)
        self.categorical = Classifier(
            width, vocab_size, zero_init=zero_init, dtype=dtype, rngs=rngs
        )

    def capabilities(self, options: WindowOptions) -> frozenset[str]:
        if self.causal:  # draws in order, whatever `coupled` says
            return frozenset({CAUSAL_PROBS})
        return frozenset() if options.coupled else frozenset({EXACT_PROBS})

    def describe(self, options: WindowOptions) -> str:
        s = self.window
        if self.causal:
            return f"a causal {s} x {s} window head (a window's tokens drawn one after another)"
        if options.coupled:
            return f"a {s} x {s} window head with coupled draws (option coupled=True)"
        return f"a {s} x {s} window head (a window's tokens drawn independently)"

    def _context(self, steps: jax.Array) -> jax.Array:
        """Window tokens `[..., s^2]` -> `[..., s^2, D]`: row `j` is `sum_{i<j} E_i[t_i]`."""
        earlier = jnp.stack([embed(steps[..., i]) for i, embed in enumerate(self.context)], -2)
        running = jnp.cumsum(earlier.astype(jnp.float32), axis=-2)
        return jnp.concatenate([jnp.zeros_like(running[..., :1, :]), running], axis=-2)

    def _states(self, hidden: jax.Array, steps: jax.Array | None) -> jax.Array:
        states = self.unshuffle(hidden)
        if self.causal:
            if steps is None:
                raise ValueError(
                    "a causal window head predicts each token from the window's earlier ones: "
                    "its logits need the windows' tokens [B, M, s^2] (teacher forcing)"
                )
            states = self.mix(states + self._context(steps))
        return self.norm(states)

    def logits(self, hidden: jax.Array, steps: jax.Array | None = None) -> jax.Array:
        """Hidden `[B, M, D]` -> float32 logits `[B, M, s^2, V]`; a causal head reads the
        windows' tokens `steps: [B, M, s^2]` (teacher forcing; the others ignore them)."""
        return self.categorical(self._states(hidden, steps))

    def loss(self, hidden: jax.Array, targets: jax.Array, rng: jax.Array | None) -> jax.Array:
        """Cross-entropy of every token: hidden `[B, M, D]`, targets `[B, M, s^2]` int ->
        `[B, M, s^2]` float32."""
        del rng
        return cross_entropy(self.logits(hidden, targets), targets)

    def draw(self, hidden: jax.Array, rng: jax.Array, context: DrawContext) -> jax.Array:
        """One window per row: hidden `[R, D]` -> ids `[B, s^2]` int32.

        Independent or coupled: one key for the window. Causal: token `j` with key
        `fold_in(rng, j)`, guided and filtered like a plain token, given the tokens
        chosen before it (the same logits as `logits` with those tokens).
        """
        options = context.options
        if not self.causal:
            logits = guided_rows(self.logits(hidden[:, None])[:, 0], context)
            return draw_step(logits, rng, context.temperature, options, options.coupled)
        states = self.unshuffle(hidden[:, None])[:, 0]  # [R, s^2, D]
        context_sum = jnp.zeros_like(states[:, 0])
        chosen = []
        for j in range(self.window * self.window):
            state = self.norm(self.mix(states[:, j] + context_sum))
            logits = guided_rows(self.categorical(state), context)
            token = sample_logits(logits, jax.random.fold_in(rng, j), context.temperature, options)
            chosen.append(token)
            if j < len(self.context):
                both = jnp.concatenate([token, token]) if context.guided else token
                context_sum = context_sum + self.context[j](both).astype(jnp.float32)
        return jnp.stack(chosen, axis=-1)


@HEADS.register("token_shuffle")
class TokenShuffle:
    """`token_shuffle`: Token-Shuffle windows. Args: `window` (s, default 2), `blocks`
    (default 2), `causal` (default False), `zero_init` (default True)."""

    Options = WindowOptions

    @staticmethod
    def build(
        spec: TokenSpec,
        width: int,
        *,
        token_embed: nnx.Module,
        dtype: Any,
        rngs: nnx.Rngs,
        window: int = 2,
        blocks: int = 2,
        causal: bool = False,
        zero_init: bool = True,
    ) -> tuple[WindowSteps, WindowHead]:
        require_discrete(spec, "token_shuffle")
        fused_layout(spec.layout, window)  # a clear error for a window that does not fit
        if window < 2:
            raise ValueError(
                f"the token_shuffle head needs a window >= 2, got {window} (for one token per "
                "step use the categorical head)"
            )
        kw = dict(blocks=blocks, dtype=dtype, rngs=rngs)
        steps = WindowSteps(spec.layout, window, token_embed, width, **kw)
        head = WindowHead(width, spec.vocab_size, window, zero_init=zero_init, causal=causal, **kw)
        return steps, head
