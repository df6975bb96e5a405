"""Train a resolved config in a workdir: what `launch.train`, the demo and tests call.

`train_config(config, workdir)` writes the config to `<workdir>/config.json`
(from process 0), builds the task the config names and runs the shared loop
(`visgen.train.loop.train`) with the config's typed sections. Running it
in-process lets a caller use components it registered itself (a test's toy
head or quantizer) through the same code path as the command line.
"""

import jax
import ml_collections

from visgen.data import DataConfig
from visgen.tasks import make_task
from visgen.train.loop import TrainConfig, TrainResult, train
from visgen.train.optim import OptimConfig
from visgen.train.workdir import save_config


def train_config(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    """Trains `config` in `workdir` (resuming from its latest checkpoint)."""
    if jax.process_index() == 0:
        save_config(workdir, config)
    return train(
        make_task(config),
        workdir,
        TrainConfig(**config.train),
        DataConfig(**config.data),
        OptimConfig(**config.optim),
    )
