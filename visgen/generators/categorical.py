"""Discrete tokens: the id embedding, drawing from logits, and the categorical head.

- `TokenIdEmbedding`: ids `[...]` -> `[..., D]` (LlamaGen's `tok_embeddings`,
  init `normal(0.02)`), the per-token embedding of every discrete spec.
- Drawing (LlamaGen's `generate.py`): logits -> `/ temperature` -> top-k ->
  top-p -> a categorical draw; temperature 0 takes the argmax.
  `CategoricalOptions` holds the head-side options (top-k, top-p);
  `process_logits` gives the exact distribution a draw follows, which
  speculative decoding tests drafts against.
- `CategoricalHead` (registered as `categorical`): one token per step, a
  bias-free linear classifier over the vocabulary (LlamaGen's `output`,
  zero-initialised so an untrained model predicts the uniform distribution);
  guidance on the logits; exact per-token probabilities.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators.base import EXACT_PROBS, HEADS, DrawContext, guided_rows
from visgen.nn.llama import DENSE_INIT
from visgen.token_spec import TokenSpec


@dataclasses.dataclass(frozen=True)
class CategoricalOptions:
    """Sampling options of heads that draw ids from logits (hashable: static in loops).

    Attributes:
      top_k: keep the `top_k` largest logits (0 = off).
      top_p: nucleus sampling: keep the smallest set of tokens whose
        probability reaches `top_p` (1 = off).
    """

    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Top-k then top-p filtering of logits `[..., V]`: dropped entries become -inf.

    Top-p keeps the highest-probability tokens up to and including the one
    whose cumulative probability first exceeds `top_p` (HF / LlamaGen rule);
    tokens tied with the last kept logit are kept too.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = -jnp.sort(-logits, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # The number of kept tokens: those before the first cumulative > top_p, plus it.
        keep = jnp.sum(cumulative <= top_p, axis=-1, keepdims=True) + 1
        keep = jnp.minimum(keep, logits.shape[-1])
        cutoff = jnp.take_along_axis(sorted_logits, keep - 1, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def process_logits(
    logits: jax.Array, temperature: float, options: CategoricalOptions
) -> tuple[jax.Array, jax.Array]:
    """Guided logits `[..., V]` -> (logits a draw samples from, their probabilities `p`).

    Temperature, then top-k and top-p; at temperature 0 `p` is one-hot on the argmax.
    """
    if temperature == 0.0:
        return logits, jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1])
    filtered = filter_logits(logits / temperature, options.top_k, options.top_p)
    return filtered, jax.nn.softmax(filtered, axis=-1)


def draw_processed(processed: jax.Array, rng: jax.Array, temperature: float) -> jax.Array:
    """One id per row of `process_logits` output `[..., V]` -> `[...]` int32.

    The rows are drawn as one flattened `[R, V]` batch with one key, so a caller
    that flattens the same rows draws the same ids.
    """
    if temperature == 0.0:
        return jnp.argmax(processed, axis=-1).astype(jnp.int32)
    flat = processed.reshape(-1, processed.shape[-1])
    drawn = jax.random.categorical(rng, flat, axis=-1).astype(jnp.int32)
    return drawn.reshape(processed.shape[:-1])


def sample_logits(
    logits: jax.Array, rng: jax.Array, temperature: float, options: CategoricalOptions
) -> jax.Array:
    """One id per row from float32 logits `[R, V]`: `[R]` int32."""
    return draw_processed(process_logits(logits, temperature, options)[0], rng, temperature)


def draw_step(
    logits: jax.Array,
    rng: jax.Array,
    temperature: float,
    options: CategoricalOptions,
    coupled: bool = False,
) -> jax.Array:
    """The ids of one step from guided float32 logits `[B, g, V]`: `[B, g]` int32.

    Independent draws (one Gumbel vector per token), or with `coupled`
    Gumbel-max with one vector `[B, 1, V]` shared by the step: each token is
    still `argmax(logits + G)` of its own (tempered, filtered) logits, an exact
    draw of its distribution, but the draws are coupled, so tokens with the
    same distribution take the same id. `temperature = 0` is the argmax either way.
    """
    b, g, v = logits.shape
    if not coupled or g == 1 or temperature == 0:
        return sample_logits(logits.reshape(b * g, v), rng, temperature, options).reshape(b, g)
    filtered = process_logits(logits, temperature, options)[0]
    gumbel = jax.random.gumbel(rng, (b, 1, v), filtered.dtype)
    return jnp.argmax(filtered + gumbel, axis=-1).astype(jnp.int32)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """`-log softmax(logits)[target]`: logits `[..., V]`, int targets `[...]` -> `[...]`."""
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - picked[..., 0]


def require_discrete(spec: TokenSpec, head: str) -> None:
    """Raise unless the tokenizer's tokens are discrete ids, naming the head."""
    if spec.kind != "discrete":
        raise ValueError(
            f"the {head} head draws discrete token ids; the tokenizer makes {spec.kind} "
            "tokens: choose a head for that kind (generator.head.name)"
        )


class TokenIdEmbedding(nnx.Module):
    """Token ids `[...]` int -> embeddings `[..., D]` float32 (init `normal(0.02)`)."""

    def __init__(self, vocab_size: int, width: int, *, rngs: nnx.Rngs):
        self.table = nnx.Embed(vocab_size, width, embedding_init=DENSE_INIT, rngs=rngs)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return self.table(ids.astype(jnp.int32))


class Classifier(nnx.Module):
    """A bias-free linear layer `[..., D]` -> float32 logits `[..., V]`.

    Zero-initialised by default (LlamaGen's `zero_init`); else `normal(0.02)`.
    """

    def __init__(
        self,
        width: int,
        vocab_size: int,
        *,
        zero_init: bool = True,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.vocab_size = vocab_size
        self.dtype = dtype
        init = nnx.initializers.zeros_init() if zero_init else DENSE_INIT
        self.output = nnx.Linear(
            width, vocab_size, use_bias=False, kernel_init=init, dtype=dtype, rngs=rngs
        )

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.output(hidden.astype(self.dtype)).astype(jnp.float32)


class TokenSteps(nnx.Module):
    """One token per step: the steps are the tokens themselves, `g = 1`."""

    def __init__(self, layout: tuple[int, ...], token_embed: nnx.Module):
        self.step_layout = tuple(int(n) for n in layout)
        self.tokens_per_step = 1
        self.token_embed = token_embed

    def to_steps(self, tokens: jax.Array) -> jax.Array:
        """`[B, N, ...]` -> `[B, N, 1, ...]`."""
        return tokens[:, :, None]

    def from_steps(self, steps: jax.Array) -> jax.Array:
        """`[B, N, 1, ...]` -> `[B, N, ...]`."""
        return steps[:, :, 0]

    def __call__(self, steps: jax.Array) -> jax.Array:
        return self.token_embed(steps[:, :, 0])


class CategoricalHead(nnx.Module):
    """One id per step from a linear classifier; guidance on the logits."""

    Options = CategoricalOptions

    def __init__(
        self,
        width: int,
        vocab_size: int,
        *,
        zero_init: bool = True,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.vocab_size = vocab_size
        self.classifier = Classifier(width, vocab_size, zero_init=zero_init, dtype=dtype, rngs=rngs)

    def capabilities(self, options: CategoricalOptions) -> frozenset[str]:
        del options
        return frozenset({EXACT_PROBS})

    def describe(self, options: CategoricalOptions) -> str:
        del options
        return "the categorical head (one id per step)"

    def logits(self, hidden: jax.Array, steps: jax.Array | None = None) -> jax.Array:
        """`hidden: [..., D]` -> float32 logits `[..., 1, V]` (`steps` unused)."""
        del steps
        return self.classifier(hidden)[..., None, :]

    def loss(self, hidden: jax.Array, targets: jax.Array, rng: jax.Array | None) -> jax.Array:
        """Cross-entropy: hidden `[B, M, D]`, int targets `[B, M, 1]` -> `[B, M, 1]` float32."""
        del rng
        return cross_entropy(self.logits(hidden), targets)

    def draw(self, hidden: jax.Array, rng: jax.Array, context: DrawContext) -> jax.Array:
        """`[R, D]` -> ids `[B, 1]` int32."""
        logits = guided_rows(self.logits(hidden), context)
        return draw_step(logits, rng, context.temperature, context.options)


@HEADS.register("categorical")
class Categorical:
    """`categorical`: ids one per step (LlamaGen). Args: `zero_init` (default True)."""

    Options = CategoricalOptions

    @staticmethod
    def build(
        spec: TokenSpec,
        width: int,
        *,
        token_embed: nnx.Module,
        dtype: Any,
        rngs: nnx.Rngs,
        zero_init: bool = True,
    ) -> tuple[TokenSteps, CategoricalHead]:
        require_discrete(spec, "categorical")
        head = CategoricalHead(width, spec.vocab_size, zero_init=zero_init, dtype=dtype, rngs=rngs)
        return TokenSteps(spec.layout, token_embed), head
