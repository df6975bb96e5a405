"""The text-encoder contract: captions (host strings) -> fixed-shape embedding arrays.

Captions are Python strings, so encoding runs on the host, outside `jax.jit`:
a generator task encodes each batch's captions before the batch enters the
jitted train step, and the sampling CLI encodes its prompt the same way. The
output has a static shape `[B, L, D]` whatever the captions, so one compiled
step serves every batch; the generator reads it through its `TextEmbedder`
(`visgen.generators.ar`, LlamaGen's CaptionEmbedder).
"""

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class TextEmbeddings:
    """An encoded batch of captions.

    Attributes:
      embeddings: float32 `[B, L, D]`; rows past a caption's end are zeros.
      mask: bool `[B, L]`, True where a row holds a real (not padding) token.
    """

    embeddings: np.ndarray
    mask: np.ndarray


class TextEncoder(Protocol):
    """Frozen caption encoder: `length` = L tokens of `dim` = D features each."""

    length: int
    dim: int

    def encode(self, captions: Sequence[str]) -> TextEmbeddings:
        """`B` captions -> `TextEmbeddings` with embeddings `[B, L, D]` float32."""
        ...
