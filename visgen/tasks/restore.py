"""Restoring a trained workdir for inference: its config, task and EMA model.

Evaluation, sampling and the models that embed a frozen tokenizer all start
from a workdir written by `launch.train`: `config.json` plus `checkpoints/`.
Restoring builds the model abstractly (`nnx.eval_shape`, no initialisation),
builds no optimizer and reads only the EMA parameters and the non-parameter
state `rest` from the checkpoint; the optimizer state is never read.
"""

import os

import jax
import ml_collections
from flax import nnx

from visgen.nn.frozen import FrozenSnapshot
from visgen.tasks import make_task
from visgen.train.checkpoint import Checkpointer
from visgen.train.state import split_model
from visgen.train.task import Task
from visgen.train.workdir import load_config


def load_trained(
    workdir: str, *, step: int | None = None
) -> tuple[ml_collections.ConfigDict, Task, nnx.Module, int]:
    """(config, task, model with EMA parameters, step) from a workdir's checkpoint.

    Args:
      workdir: a training workdir.
      step: the checkpoint to read; None = the latest.

    `Frozen` variables (pretrained networks, an embedded frozen tokenizer) are
    not checkpointed: they come from one jitted build of the model whose only
    outputs they are, as the training loop makes them.

    Raises:
      FileNotFoundError: no `config.json`, or no checkpoint yet.
    """
    config = load_config(workdir)
    task = make_task(config)
    build = lambda: task.build(nnx.Rngs(0))
    ckpt = Checkpointer(workdir, async_save=False)
    try:
        steps = ckpt.manager.all_steps()
        if step is None and not steps:
            raise FileNotFoundError(f"{workdir} has no checkpoint yet ({ckpt.directory} is empty)")
        if step is not None and step not in steps:
            raise FileNotFoundError(
                f"{workdir} has no checkpoint at step {step} (it has steps "
                f"{', '.join(map(str, sorted(steps))) or 'none'})"
            )
        step = max(steps) if step is None else step
        graphdef, params, frozen, rest = split_model(nnx.eval_shape(build))
        restored = ckpt.restore_fields({"ema_params": params, "rest": rest}, step)
    finally:
        ckpt.close()
    if jax.tree.leaves(frozen):
        frozen = jax.jit(lambda: split_model(build())[2])()
    model = nnx.merge(graphdef, restored["ema_params"], frozen, restored["rest"])
    return config, task, model, step


class FrozenCheckpoint(FrozenSnapshot):
    """A trained workdir's model, held on the host, to embed frozen in another model.

    A two-stage TiTok decodes through its proxy tokenizer and a generator
    tokenizes through its tokenizer; both keep that model's weights as
    `Frozen` variables, so they are neither trained nor checkpointed again.
    The weights (EMA params and statistics) are read once, as numpy arrays, so
    `build` also works while the outer model is being traced.

    Attributes:
      workdir, step: where the weights come from.
      config: that workdir's resolved config.
    """

    def __init__(self, workdir: str, *, step: int | None = None):
        self.workdir = workdir
        self.config, self._task, model, self.step = load_trained(workdir, step=step)
        super().__init__(model)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights (see `visgen.data.token_cache.fingerprint`)."""
        from visgen.data.token_cache import fingerprint

        if not hasattr(self, "_fingerprint"):
            self._fingerprint = fingerprint(self._state)
        return self._fingerprint


_FROZEN: dict[tuple[str, int | None], FrozenCheckpoint] = {}


def load_frozen(workdir: str, *, step: int | None = None) -> FrozenCheckpoint:
    """`FrozenCheckpoint(workdir, step=step)`, loaded once per process."""
    key = (os.path.abspath(workdir), step)
    if key not in _FROZEN:
        _FROZEN[key] = FrozenCheckpoint(workdir, step=step)
    return _FROZEN[key]
