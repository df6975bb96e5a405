"""The tokenizer protocol every tokenizer in the zoo implements.

Generators read `spec` (`visgen.token_spec.TokenSpec`) to size their
embedding and head; the sampling loop reads it to know how many tokens of
which kind to produce. Inputs are images `[B, H, W, 3]` or videos
`[B, T, H, W, 3]` in [-1, 1]. The tokenizer task trains any tokenizer through
`training_step`, so a tokenizer that owns its objective (a flow-matching
decoder, TiTok's proxy-code cross-entropy) needs no task of its own.
"""

import dataclasses
from typing import Protocol, runtime_checkable

import jax

from visgen.quantizers import Quantizer
from visgen.token_spec import TokenKind, TokenSpec

__all__ = [
    "Encoded",
    "TokenKind",
    "TokenSpec",
    "Tokenizer",
    "TokenizerOutput",
    "check_input",
    "spec_from_quantizer",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Encoded:
    """The output of `Tokenizer.encode`.

    Attributes:
      tokens: `[B, *layout]` int32 ids for discrete kinds, else None.
      latents: `[B, *layout, C]` float latents the decoder consumes (quantized
        for discrete kinds, sampled for continuous ones).
      losses: auxiliary losses to add to the training objective, already
        weighted (commitment + codebook, KL).
      stats: scalar statistics for logging (perplexity, code usage).
    """

    tokens: jax.Array | None
    latents: jax.Array
    losses: dict[str, jax.Array]
    stats: dict[str, jax.Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TokenizerOutput:
    """The output of `Tokenizer.training_step`: what the tokenizer task optimises.

    Attributes:
      recon: `[B, *input_shape]` float32 pixels in about [-1, 1], or None for a
        tokenizer whose training step does not produce them (a flow decoder).
      losses: every weighted loss term of the tokenizer's own objective
        (the quantizer's included); the task adds them as they are.
      stats: scalar statistics for logging.
      encoded: the training-mode `encode` output (tokens, latents).
      regress_pixels: True: the task adds its pixel losses on `recon`
        (reconstruction, perceptual, GAN). False: the tokenizer owns its
        objective and `recon`, if given, is only logged (PSNR).
    """

    recon: jax.Array | None
    losses: dict[str, jax.Array]
    stats: dict[str, jax.Array]
    encoded: Encoded
    regress_pixels: bool = dataclasses.field(default=True, metadata=dict(static=True))


def check_input(name: str, x: jax.Array, input_shape: tuple[int, ...]) -> None:
    """Raises a clear error unless `x` is `[B, *input_shape]`."""
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{name} expects input [B, {', '.join(map(str, input_shape))}], got {tuple(x.shape)}"
        )


def spec_from_quantizer(
    quantizer: Quantizer, layout: tuple[int, ...], *, needs_text: bool = False
) -> TokenSpec:
    """The spec of tokens on `layout` made by `quantizer`: its ids (discrete) or latents."""
    if quantizer.kind == "discrete":
        return TokenSpec.discrete(
            layout, quantizer.codebook_size, channels=quantizer.dim, needs_text=needs_text
        )
    return TokenSpec.continuous(layout, quantizer.dim, needs_text=needs_text)


@runtime_checkable
class Tokenizer(Protocol):
    """Images or videos to tokens and back, and how to train that.

    Attributes:
      spec: what a generator must produce for `decode`.
      quantizer: the bottleneck (`visgen.quantizers`); a discrete one's
        `codes()` are what evaluation perturbs tokens within (pFID).
      revivable: whether `revive` changes anything (declared, so the task
        skips the encoder pass revival needs when it would not).
    """

    spec: TokenSpec
    quantizer: Quantizer
    revivable: bool

    def encode(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> Encoded:
        """`x`: `[B, H, W, 3]` or `[B, T, H, W, 3]` in [-1, 1]; `train` updates
        running statistics, `rng` drives stochastic bottlenecks."""
        ...

    def decode(
        self,
        tokens: jax.Array,
        *,
        text: jax.Array | None = None,
        num_tokens: int | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Token ids `[B, *layout]` (or latents `[B, *layout, C]`) to pixels in [-1, 1].

        `num_tokens` decodes from a prefix (FlexTok); `rng` drives flow decoders.
        """
        ...

    def __call__(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, Encoded]:
        """Reconstruction for evaluation and previews: (pixels `[B, *input]` float32, Encoded)."""
        ...

    def training_step(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> TokenizerOutput:
        """The training forward pass on a batch `x` (running statistics update)."""
        ...

    def revive(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> None:
        """After an optimizer update: refresh unused codes from the batch `x`'s
        features. A no-op unless `revivable`."""
        ...
