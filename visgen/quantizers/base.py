"""The output every quantizer returns.

Tokenizers read `latents` for the decoder, `indices` for discrete tokens, and
add `losses` (already weighted) to their objective; `stats` are for logging.
"""

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Quantized:
    """A quantizer's output for features `z: [..., D]`.

    Attributes:
      latents: `[..., D]` float32 values the decoder consumes (straight-through
        quantized codes for VQ, a posterior sample or mode for a Gaussian).
      indices: `[...]` int32 code ids for discrete quantizers, else None.
      losses: weighted auxiliary losses (scalars) to add to the objective.
      stats: scalar float32 statistics for logging.
    """

    latents: jax.Array
    indices: jax.Array | None
    losses: dict[str, jax.Array]
    stats: dict[str, jax.Array]
