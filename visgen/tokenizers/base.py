"""The tokenizer protocol every tokenizer in the zoo implements.

Generators read `spec` to size their embedding and head; the sampling loop
reads it to know how many tokens of which kind to produce. Inputs are images
`[B, H, W, 3]` or videos `[B, T, H, W, 3]` in [-1, 1].
"""

import dataclasses
from typing import Literal, Protocol, runtime_checkable

import jax

TokenKind = Literal["discrete", "continuous", "multiscale", "dimwise"]


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """What a generator needs to know about a tokenizer's tokens.

    Attributes:
      kind: `discrete` (integer ids), `continuous` (float latents),
        `multiscale` (a list of scales), `dimwise` (one id per channel).
      layout: token layout, `(K,)` for 1D tokenizers, `(h, w)` or `(t, h, w)`
        for grids; for `multiscale` the per-scale lengths.
      vocab_size: codebook size for discrete kinds, 0 for continuous.
      channels: latent channels per token (codebook dim, or latent width).
      needs_text: whether encode/decode need a text condition.
    """

    kind: TokenKind
    layout: tuple[int, ...]
    vocab_size: int
    channels: int
    needs_text: bool = False

    @property
    def num_tokens(self) -> int:
        """Tokens per example (the product of the layout; sum for multiscale)."""
        if self.kind == "multiscale":
            return int(sum(self.layout))
        n = 1
        for d in self.layout:
            n *= d
        return n


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


def check_input(name: str, x: jax.Array, input_shape: tuple[int, ...]) -> None:
    """Raises a clear error unless `x` is `[B, *input_shape]`."""
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{name} expects input [B, {', '.join(map(str, input_shape))}], got {tuple(x.shape)}"
        )


@runtime_checkable
class Tokenizer(Protocol):
    """Images or videos to tokens and back."""

    spec: TokenSpec

    def encode(
        self, x: jax.Array, *, text: jax.Array | None = None, train: bool = False
    ) -> Encoded:
        """`x`: `[B, H, W, 3]` or `[B, T, H, W, 3]` in [-1, 1]."""
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
