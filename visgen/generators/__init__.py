"""Generators: AR transformers that learn p(tokens | condition), and their heads.

`GENERATORS` maps config names to classes; `make_generator` builds one from a
name and its typed keyword arguments, listing the valid names on a miss.
"""

from flax import nnx

from visgen.generators.ar import SIZES as AR_SIZES
from visgen.generators.ar import ARTransformer, Cache
from visgen.generators.heads import CategoricalHead, Head
from visgen.generators.token_shuffle import TokenShuffleHead, fused_layout, shuffle, unshuffle
from visgen.registry import Registry

GENERATORS: Registry[type[nnx.Module]] = Registry("generator")
GENERATORS.register("ar")(ARTransformer)


def make_generator(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Build the generator registered as `name` with its keyword arguments."""
    return GENERATORS.get(name)(rngs=rngs, **kwargs)


__all__ = [
    "AR_SIZES",
    "GENERATORS",
    "ARTransformer",
    "Cache",
    "CategoricalHead",
    "Head",
    "TokenShuffleHead",
    "fused_layout",
    "make_generator",
    "shuffle",
    "unshuffle",
]
