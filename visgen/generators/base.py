"""The token side of a generator: a step embedding and a head, registered in pairs by name.

A generator (`visgen.generators.ar.ARGenerator`) is a condition embedding, a
per-token embedding chosen by the tokenizer's `TokenSpec`, a trunk that knows
nothing about token kinds, and a *token interface*: a `StepEmbedding` that
groups the tokens into the trunk's steps and embeds each step, and a `Head`
that predicts a step's tokens from the trunk's hidden state. The pair is
registered in `HEADS` under one name (`categorical`, `token_shuffle`, ...)
and a config picks it with `generator.head.name`; a new kind of head is one
new file and one registry line.

Shapes: `N` tokens per example in the tokenizer's raster order, `M` steps of
`g` tokens each (`N = M g`), hidden width `D`. A step's tokens are ids `[g]`
for discrete heads (other heads may add trailing axes, e.g. latents `[g, C]`).

Sampling talks to a head only through `draw(hidden, rng, context)`; a
sampler that needs more (speculative decoding needs per-token
probabilities) asks `head.capabilities(options)` through
`visgen.sampling.require`, the one place that refuses a head.
"""

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

from visgen.registry import Registry
from visgen.token_spec import TokenSpec

# Capabilities a head may declare (`Head.capabilities`), with the phrase a refusal uses.
EXACT_PROBS = "exact_probs"
CAUSAL_PROBS = "causal_probs"
CAPABILITIES: dict[str, str] = {
    EXACT_PROBS: (
        "exact per-token probabilities (`head.logits`), each token of a step drawn on its "
        "own from them"
    ),
    CAUSAL_PROBS: (
        "per-token probabilities conditional on the step's earlier tokens "
        "(`head.logits(hidden, steps)`), a step's tokens drawn from them in order"
    ),
}


@dataclasses.dataclass(frozen=True)
class DrawContext:
    """What a head's `draw` sees at one step of a sampling loop.

    Attributes:
      temperature: shared across heads; 0 means greedy / deterministic (static).
      options: the head's own sampling options, an instance of `head.Options` (static).
      guided: whether the hidden rows are doubled for classifier-free guidance:
        rows `[0, B)` conditional, rows `[B, 2B)` the null condition (static).
      scale: the guidance scale at this step (a traced float32 scalar).
      step: the loop's step index, 0-based (may be traced): a head whose draw
        changes along the sample (DiSA's step counts) reads it.
      num_steps: the steps `M` of a whole sample (static).
    """

    temperature: float
    options: Any
    guided: bool
    scale: jax.Array | float = 1.0
    step: jax.Array | int = 0
    num_steps: int = 1


def guide(cond: jax.Array, uncond: jax.Array, scale: jax.Array | float) -> jax.Array:
    """Classifier-free guidance `u + (c - u) * scale` (Ho and Salimans 2022), any shape."""
    return uncond + (cond - uncond) * scale


def guided_rows(values: jax.Array, context: DrawContext) -> jax.Array:
    """`[R, ...]` per-row values -> `[B, ...]`: guided when `context.guided` (`R = 2B`)."""
    if not context.guided:
        return values
    b = values.shape[0] // 2
    return guide(values[:b], values[b:], context.scale)


@runtime_checkable
class StepEmbedding(Protocol):
    """Groups tokens into the trunk's steps and embeds them.

    Attributes:
      step_layout: the layout of the steps (what the trunk's positions follow):
        the token layout, or a fused grid for Token-Shuffle windows.
      tokens_per_step: `g`.
    """

    step_layout: tuple[int, ...]
    tokens_per_step: int

    def to_steps(self, tokens: jax.Array) -> jax.Array:
        """Raster tokens `[B, N, ...]` -> steps `[B, M, g, ...]`."""
        ...

    def from_steps(self, steps: jax.Array) -> jax.Array:
        """Steps `[B, M, g, ...]` -> raster tokens `[B, N, ...]`, the inverse of `to_steps`."""
        ...

    def __call__(self, steps: jax.Array) -> jax.Array:
        """Steps `[B, m, g, ...]` -> trunk inputs `[B, m, D]` float32."""
        ...


@runtime_checkable
class Head(Protocol):
    """Predicts a step's tokens from the trunk's hidden state.

    Attributes:
      Options: the frozen (hashable) dataclass of the head's own sampling
        options; `Options()` are its defaults.
    """

    Options: type

    def capabilities(self, options: Any) -> frozenset[str]:
        """What this head offers samplers under `options` (see `CAPABILITIES`)."""
        ...

    def describe(self, options: Any) -> str:
        """A few words naming the head and how it draws, for messages."""
        ...

    def loss(self, hidden: jax.Array, targets: jax.Array, rng: jax.Array | None) -> jax.Array:
        """`hidden: [B, M, D]`, targets `[B, M, g, ...]` -> per-token loss `[B, M, g]` float32.

        `rng` is None in evaluation (a stochastic loss then uses a fixed key)."""
        ...

    def draw(self, hidden: jax.Array, rng: jax.Array, context: DrawContext) -> jax.Array:
        """One step's tokens: hidden `[R, D]` (`R = 2B` when guided) -> `[B, g, ...]`."""
        ...


@runtime_checkable
class CountsEvaluations(Protocol):
    """Optional, for a head that runs a network of its own several times per step (a
    diffusion head): samplers report `head_evaluations` in their stats from it."""

    def evaluations(self, options: Any, num_steps: int) -> int:
        """The head network's evaluations to draw all `num_steps` steps of one batch
        (each over the whole batch, a guided batch's doubled rows included)."""
        ...


class TokenInterface(Protocol):
    """A `HEADS` registry entry: builds the step embedding and the head that pair up."""

    Options: type

    def build(
        self,
        spec: TokenSpec,
        width: int,
        *,
        token_embed: nnx.Module,
        dtype: Any,
        rngs: nnx.Rngs,
        **args: Any,
    ) -> tuple[StepEmbedding, Head]:
        """`token_embed` embeds single tokens (`[..., *token]` -> `[..., D]`); the step
        embedding wraps it. `args` are the config's `generator.head` fields."""
        ...


HEADS: Registry[TokenInterface] = Registry("head")


def head_options_type(name: str) -> type:
    """The sampling-options dataclass of the head registered as `name`."""
    return HEADS.get(name).Options
