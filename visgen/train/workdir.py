"""Reading a training workdir back: its resolved config and its trained model.

Evaluation, sampling and generators that consume a frozen tokenizer all start
from a workdir written by `launch.train`: `config.json` plus `checkpoints/`.
"""

import json
import os

import jax
import ml_collections
from flax import nnx

from visgen.nn.frozen import FrozenSnapshot
from visgen.train.checkpoint import Checkpointer
from visgen.train.loop import TrainConfig
from visgen.train.optim import OptimConfig, make_optimizer
from visgen.train.state import init_state

CONFIG_FILE = "config.json"


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{workdir} is not a training workdir: {CONFIG_FILE} is missing "
            "(train one with `python -m launch.train --config ... --workdir DIR`)"
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_trained(workdir: str, *, step: int | None = None):
    """(config, task, model with EMA parameters, step) from a workdir's latest checkpoint."""
    from visgen.tasks import make_task

    config = load_config(workdir)
    task = make_task(config)
    ckpt = Checkpointer(workdir, async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir} has no checkpoint yet ({ckpt.directory} is empty)")
    tx = make_optimizer(OptimConfig(**config.optim), TrainConfig(**config.train).steps)
    init_fn = lambda: init_state(task, tx, config.train.seed)
    abstract_state, _ = jax.eval_shape(init_fn)
    state = ckpt.restore_state(abstract_state, step)
    ckpt.close()
    model = task.build(nnx.Rngs(0))
    nnx.update(model, state.ema_params, state.rest)
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
