"""`Frozen`: the variable type of pretrained weights that training never updates.

The train loop splits models into `nnx.Param` (optimized), `Frozen` (loaded
from a local file, excluded from the optimizer, EMA and checkpoints) and the
rest (mutable statistics, checkpointed). Perceptual networks store their
weights as `Frozen`.
"""

from flax import nnx


class Frozen(nnx.Variable):
    """Pretrained weights: never optimized, never checkpointed."""
