"""`TOKENIZERS`: tokenizer names -> classes, one line each.

`make_tokenizer` builds one from a name and its typed keyword arguments,
listing the valid names on a miss.
"""

from flax import nnx

from visgen.registry import Registry
from visgen.tokenizers.flextok import FlexTok
from visgen.tokenizers.titok import TiTok
from visgen.tokenizers.vq2d import VQ2D

TOKENIZERS: Registry[type[nnx.Module]] = Registry("tokenizer")
TOKENIZERS.register("flextok")(FlexTok)
TOKENIZERS.register("titok")(TiTok)
TOKENIZERS.register("vq2d")(VQ2D)


def make_tokenizer(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Build the tokenizer registered as `name` with its keyword arguments."""
    return TOKENIZERS.get(name)(rngs=rngs, **kwargs)
