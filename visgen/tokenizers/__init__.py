"""Tokenizers: images and videos to tokens and back (`base.Tokenizer` protocol).

`TOKENIZERS` maps config names to classes; `make_tokenizer` builds one from a
name and its typed keyword arguments, listing the valid names on a miss. What
a tokenizer's tokens are is its `spec` (`visgen.token_spec.TokenSpec`).
"""

from visgen.token_spec import TokenSpec
from visgen.tokenizers.base import Encoded, Tokenizer, TokenizerOutput
from visgen.tokenizers.flextok import FlexTok
from visgen.tokenizers.registry import TOKENIZERS, make_tokenizer
from visgen.tokenizers.titok import SIZES as TITOK_SIZES
from visgen.tokenizers.titok import TiTok
from visgen.tokenizers.vq2d import VQ2D

__all__ = [
    "TITOK_SIZES",
    "TOKENIZERS",
    "VQ2D",
    "Encoded",
    "FlexTok",
    "TiTok",
    "TokenSpec",
    "Tokenizer",
    "TokenizerOutput",
    "make_tokenizer",
]
