"""The quantizer protocol and the output every quantizer returns.

A quantizer is the bottleneck between a tokenizer's encoder and decoder. It
reads encoder features `z: [..., input_dim]` and returns `Quantized`: the
latents `[..., dim]` the decoder consumes, integer ids for discrete
quantizers, and its (already weighted) losses and statistics. Tokenizers read
`latents` for the decoder, `indices` for discrete tokens, add `losses` to
their objective and log `stats`. What a quantizer produces (`kind`,
`codebook_size`, `dim`) is what its tokenizer's `TokenSpec` is derived from.
"""

import dataclasses
from typing import Literal, Protocol, runtime_checkable

import jax

QuantizerKind = Literal["discrete", "continuous"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Quantized:
    """A quantizer's output for features `z: [..., input_dim]`.

    Attributes:
      latents: `[..., dim]` float32 values the decoder consumes (straight-through
        quantized codes for VQ, a posterior sample or mode for a Gaussian).
      indices: `[...]` int32 code ids for discrete quantizers, else None.
      losses: weighted auxiliary losses (scalars) to add to the objective.
      stats: scalar float32 statistics for logging.
    """

    latents: jax.Array
    indices: jax.Array | None
    losses: dict[str, jax.Array]
    stats: dict[str, jax.Array]


@runtime_checkable
class Quantizer(Protocol):
    """What every registered quantizer implements (`visgen.quantizers.QUANTIZERS`).

    Constructors take `dim` (the latent channels `C` they return) and
    `rngs` as keywords, plus their own typed arguments.

    Attributes:
      kind: `discrete` (ids into a codebook of `codebook_size` codes) or
        `continuous` (latents only).
      codebook_size: codes `K` of a discrete quantizer; 0 for continuous ones.
      dim: channels `C` of the latents it returns.
      input_dim: channels of the features it reads, i.e. what the encoder must
        emit: `C` for VQ, `2C` (mean and log-variance) for the Gaussian.
      revivable: whether `revive` changes anything (a declared capability, so
        a task can skip the encoder pass that revival needs when it would not).
    """

    kind: QuantizerKind
    codebook_size: int
    dim: int
    input_dim: int
    revivable: bool

    def __call__(
        self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None
    ) -> Quantized:
        """Quantize `z: [..., input_dim]`; `train` updates running statistics, `rng`
        drives stochastic quantizers (the deterministic choice without)."""
        ...

    def embed(self, indices: jax.Array) -> jax.Array:
        """Ids `[...]` int -> latents `[..., dim]` float32 (discrete quantizers;
        continuous ones raise)."""
        ...

    def codes(self) -> jax.Array:
        """The codebook `[codebook_size, dim]` float32 the ids index (discrete
        quantizers; continuous ones raise)."""
        ...

    def revive(self, features: jax.Array, rng: jax.Array | None = None) -> None:
        """After an optimizer update: refresh unused codes from a batch's features
        `[N, input_dim]`. A no-op unless `revivable`."""
        ...
