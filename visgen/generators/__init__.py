"""Generators: learn p(tokens | condition) over a tokenizer's tokens.

A generator is a condition embedding, a per-token embedding chosen by the
tokenizer's `TokenSpec`, a trunk, and a token interface (a step embedding
and a head) registered in `HEADS` by name. `GENERATORS` maps config names to
generator classes; `make_generator` builds one from a name and its typed
keyword arguments, listing the valid names on a miss.
"""

from flax import nnx

# Importing a head module registers it in `HEADS`.
from visgen.generators import categorical, diffusion_head, window_head  # noqa: F401
from visgen.generators.ar import SIZES as AR_SIZES
from visgen.generators.ar import ARGenerator
from visgen.generators.base import (
    CAPABILITIES,
    EXACT_PROBS,
    HEADS,
    CountsEvaluations,
    DrawContext,
    Head,
    StepEmbedding,
    guide,
    head_options_type,
)
from visgen.generators.categorical import CategoricalHead, CategoricalOptions
from visgen.generators.diffusion_head import ANY_ORDER, DiffusionHead, DiffusionOptions
from visgen.generators.mar import SIZES as MAR_SIZES
from visgen.generators.mar import MaskedGenerator
from visgen.generators.token_shuffle import fused_layout, shuffle, unshuffle
from visgen.generators.trunk import Cache
from visgen.generators.window_head import WindowHead, WindowOptions
from visgen.registry import Registry

GENERATORS: Registry[type[nnx.Module]] = Registry("generator")
GENERATORS.register("ar")(ARGenerator)
GENERATORS.register("mar")(MaskedGenerator)


def make_generator(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Build the generator registered as `name` with its keyword arguments."""
    return GENERATORS.get(name)(rngs=rngs, **kwargs)


__all__ = [
    "ANY_ORDER",
    "AR_SIZES",
    "CAPABILITIES",
    "EXACT_PROBS",
    "GENERATORS",
    "HEADS",
    "MAR_SIZES",
    "ARGenerator",
    "Cache",
    "CategoricalHead",
    "CategoricalOptions",
    "CountsEvaluations",
    "DiffusionHead",
    "DiffusionOptions",
    "DrawContext",
    "Head",
    "MaskedGenerator",
    "StepEmbedding",
    "WindowHead",
    "WindowOptions",
    "fused_layout",
    "guide",
    "head_options_type",
    "make_generator",
    "shuffle",
    "unshuffle",
]
