"""`QUANTIZERS`: quantizer names -> classes, and building one from a config section.

A tokenizer's config names its quantizer in a nested section,
`config.tokenizer.quantizer = dict(name="vq", codebook_size=4096, ...)`; the
tokenizer adds `dim` (its latent width) and calls `make_quantizer`. The
classes register in `visgen/quantizers/__init__.py`, one line each.
"""

from collections.abc import Mapping
from typing import Any

from flax import nnx

from visgen.quantizers.base import Quantizer
from visgen.registry import Registry

QUANTIZERS: Registry[type[nnx.Module]] = Registry("quantizer")


def make_quantizer(name: str, *, dim: int, rngs: nnx.Rngs, **kwargs) -> Quantizer:
    """Build the quantizer registered as `name` returning `dim`-channel latents."""
    return QUANTIZERS.get(name)(dim=dim, rngs=rngs, **kwargs)


def quantizer_input_dim(name: str, *, dim: int, **kwargs) -> int:
    """The channels `make_quantizer(name, dim=dim, **kwargs)` reads, drawing no parameters.

    The quantizer is built abstractly (`nnx.eval_shape`, a throwaway key), so a
    tokenizer can size its encoder's output before it creates the quantizer:
    parameters are drawn in creation order, and moving the quantizer's first
    would change every initial value.
    """
    abstract = nnx.eval_shape(lambda: make_quantizer(name, dim=dim, rngs=nnx.Rngs(0), **kwargs))
    return abstract.input_dim


def quantizer_kwargs(section: Mapping[str, Any], *, dim: int, owner: str) -> dict[str, Any]:
    """A quantizer config section (`name` plus typed arguments) with `dim` added.

    Args:
      section: e.g. `{"name": "vq", "codebook_size": 1024}`; `dim` is not given
        there: `owner` decides it.
      dim: the latent channels the quantizer must return.
      owner: who sets `dim` (for the error message), e.g. `TiTok token_dim`.
    """
    if "name" not in section:
        raise ValueError(
            f"a quantizer section needs a name (one of {', '.join(QUANTIZERS.names())}), "
            f"got {dict(section)}"
        )
    if "dim" in section:
        raise ValueError(
            f"quantizer dim={section['dim']} is set by the {owner} ({dim}); leave it out"
        )
    return {**section, "dim": dim}
