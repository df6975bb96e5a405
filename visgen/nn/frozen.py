"""`Frozen`: the variable type of pretrained weights that training never updates.

The train loop splits models into `nnx.Param` (optimized), `Frozen` (loaded
from a local file or another workdir, excluded from the optimizer, EMA and
checkpoints) and the rest (mutable statistics, checkpointed). Perceptual
networks and the proxy tokenizer of a two-stage TiTok store their weights as
`Frozen`.
"""

import jax
import numpy as np
from flax import nnx


class Frozen(nnx.Variable):
    """Pretrained weights: never optimized, never checkpointed."""


def freeze(module: nnx.Module) -> nnx.Module:
    """Turns every variable of `module` (params and statistics) into `Frozen`, in place."""
    for _, node in list(nnx.iter_graph(module)):
        if isinstance(node, nnx.Variable) or not hasattr(node, "__dict__"):
            continue
        for name, value in list(vars(node).items()):
            if isinstance(value, nnx.Variable) and not isinstance(value, Frozen):
                setattr(node, name, Frozen(value[...]))
    return module


class FrozenSnapshot:
    """A model's variables held on the host as numpy arrays, to embed it frozen elsewhere.

    `build` returns a fresh copy with every variable `Frozen`; since the
    arrays are numpy, it also works while the outer model is being traced
    (inside `jax.jit` or `jax.eval_shape`).
    """

    def __init__(self, model: nnx.Module):
        self._graphdef, state = nnx.split(model)
        self._state = jax.tree.map(np.asarray, state)

    def build(self) -> nnx.Module:
        """A fresh copy of the model with every variable `Frozen`."""
        return freeze(nnx.merge(self._graphdef, jax.tree.map(jax.numpy.asarray, self._state)))
