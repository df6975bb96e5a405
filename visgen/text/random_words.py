"""A frozen random-word-embedding text encoder: each word a fixed pseudo-random vector.

A stand-in for a pretrained text encoder. LlamaGen conditions its T2I models
on FLAN-T5-XL (120 tokens x 2048 features); this framework downloads nothing
at run time, so a pretrained encoder can only come from a local weights file.
This encoder needs no file at all and suits small caption vocabularies such
as the embedded `shapes` dataset's:

- words: the caption lower-cased and split on every non-letter
  ("a small red circle, at the top-left" -> a, small, red, circle, at, the,
  top, left);
- each word -> a fixed vector `[D]`, normal with variance `1 / D` (so about
  unit norm), generated from a SHAKE-256 digest of `seed` and the word
  itself: no vocabulary file, unknown words get a stable vector of their own,
  and the vectors do not depend on numpy's or Python's random generators, so
  a trained generator keeps reading the same features across versions;
- with `positions`, the word in slot `l` also gets a fixed sinusoidal code of
  `l` (Vaswani et al. 2017, scaled to about unit norm) added. The generator's
  condition prefix carries no positions of its own (LlamaGen zeroes RoPE on
  it), so without them it would see a bag of words and could not tell "a red
  circle and a blue square" from "a blue circle and a red square";
- `L = length` slots: shorter captions are padded with zero rows (`mask`
  False); a longer caption raises ValueError, or with `truncate` keeps its
  first `L` words (T5 pipelines truncate the same way).

What it cannot do: it is not contextual and knows nothing of meaning, so
synonyms, paraphrases and words never seen in training captions give
vectors the generator has not learned to read. The generator's
`TextEmbedder` MLP learns to read these features during training.
"""

import functools
import hashlib
import math
import re
from collections.abc import Sequence

import numpy as np

from visgen.text.base import TextEmbeddings

_NON_LETTERS = re.compile(r"[^a-z]+")


def split_words(caption: str) -> list[str]:
    """Lower-case `caption` and split it on every run of non-letters (empty parts dropped)."""
    return [word for word in _NON_LETTERS.split(caption.lower()) if word]


@functools.lru_cache(maxsize=65536)
def word_vector(word: str, dim: int, seed: int = 0) -> np.ndarray:
    """The fixed vector of `word`: float32 `[dim]`, normal with variance `1 / dim`.

    Box-Muller over uniforms taken from SHAKE-256 of `seed` and the word, so it
    depends on nothing but its arguments.
    """
    digest = hashlib.shake_256(f"{seed}\x00{word}".encode()).digest(8 * dim)
    bits = np.frombuffer(digest, dtype="<u4").reshape(2, dim).astype(np.float64)
    u1 = (bits[0] + 1.0) / 2.0**32  # in (0, 1]: log stays finite
    u2 = bits[1] / 2.0**32
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    vector = (normal / math.sqrt(dim)).astype(np.float32)
    vector.flags.writeable = False
    return vector


def position_codes(length: int, dim: int) -> np.ndarray:
    """Sinusoidal codes `[length, dim]` float32, each of norm about 1."""
    half = dim // 2
    freqs = 1.0 / 10000.0 ** (np.arange(half) / max(half, 1))
    angles = np.arange(length)[:, None] * freqs[None]
    codes = np.zeros((length, dim), np.float64)
    codes[:, 0 : 2 * half : 2] = np.sin(angles)
    codes[:, 1 : 2 * half : 2] = np.cos(angles)
    return (codes / math.sqrt(max(half, 1))).astype(np.float32)


class RandomWordEncoder:
    """Captions -> `[B, length, dim]` fixed random word vectors (see the module docstring).

    Args:
      length: token slots `L` per caption (the generator's prefix length).
      dim: features per slot `D`.
      seed: which fixed vectors the words get.
      positions: add a sinusoidal code of the slot to each word's vector.
      truncate: keep the first `length` words of a longer caption instead of
        raising ValueError.
    """

    def __init__(
        self,
        *,
        length: int,
        dim: int,
        seed: int = 0,
        positions: bool = True,
        truncate: bool = False,
    ):
        if length < 1 or dim < 1:
            raise ValueError(f"length and dim must be positive, got {length} and {dim}")
        self.length, self.dim, self.seed = length, dim, seed
        self.truncate = truncate
        self._positions = position_codes(length, dim) if positions else None

    def words(self, caption: str) -> list[str]:
        """The words of `caption` that fill slots (at most `length`)."""
        words = split_words(caption)
        if len(words) > self.length and not self.truncate:
            raise ValueError(
                f"caption has {len(words)} words, more than the encoder's length "
                f"{self.length}: {caption!r} (raise the text encoder's length, or truncate)"
            )
        return words[: self.length]

    def encode(self, captions: Sequence[str]) -> TextEmbeddings:
        """`B` captions -> embeddings `[B, L, D]` float32 (zero rows past each caption's
        end) and mask `[B, L]` bool."""
        if isinstance(captions, str):
            raise TypeError("encode takes a sequence of captions, not one string")
        embeddings = np.zeros((len(captions), self.length, self.dim), np.float32)
        mask = np.zeros((len(captions), self.length), bool)
        for i, caption in enumerate(captions):
            words = self.words(str(caption))
            for slot, word in enumerate(words):
                embeddings[i, slot] = word_vector(word, self.dim, self.seed)
            mask[i, : len(words)] = True
        if self._positions is not None:
            embeddings += mask[..., None] * self._positions
        return TextEmbeddings(embeddings, mask)
