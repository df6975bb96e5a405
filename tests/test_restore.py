"""Restoring a trained workdir for inference: EMA weights and `rest` only, no optimizer.

The checkpoint's optimizer state here is a large random array in a structure
no optimizer makes: restoring must neither need its structure nor read it
(tensorstore's byte counter shows what was read).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorstore as ts
from flax import nnx

from visgen.nn.frozen import Frozen
from visgen.tasks import restore
from visgen.train.checkpoint import Checkpointer
from visgen.train.state import TrainState, split_model
from visgen.train.workdir import save_config

STEP = 7
OPT_SHAPE = (1024, 1024)  # float32: 4 MiB that do not compress


class ToyTask:
    """A linear model with a statistic (`rest`) and a pretrained `Frozen` vector."""

    def __init__(self):
        self.eager_builds = 0

    def build(self, rngs: nnx.Rngs) -> nnx.Module:
        if not isinstance(jnp.zeros(()), jax.core.Tracer):
            self.eager_builds += 1
        model = nnx.Linear(3, 4, rngs=rngs)
        model.count = nnx.BatchStat(jnp.zeros(()))
        model.pretrained = Frozen(jnp.arange(3.0))
        return model


def _bytes_read() -> int:
    metrics = ts.experimental_collect_matching_metrics("/tensorstore/kvstore/file/bytes_read")
    return sum(v["value"] for m in metrics for v in m["values"])


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> tuple[str, ToyTask, dict]:
    """A workdir whose checkpoint holds distinct params and EMA params."""
    task = ToyTask()
    monkeypatch.setattr(restore, "make_task", lambda config: task)
    save_config(str(tmp_path), ml_collections.ConfigDict({"task": "toy"}))
    _, params, _, rest = split_model(task.build(nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    ema = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    rest = jax.tree.map(lambda x: x + 5.0, rest)
    state = TrainState(
        step=jnp.asarray(STEP, jnp.int32),
        params=params,
        rest=rest,
        opt_state={"junk": jnp.asarray(rng.normal(size=OPT_SHAPE), jnp.float32)},
        ema_params=ema,
        rng=jax.random.PRNGKey(1),
        nonfinite_step=jnp.asarray(-1, jnp.int32),
    )
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(STEP, state)
    ckpt.close()
    task.eager_builds = 0
    return str(tmp_path), task, ema


def test_load_trained_reads_the_ema_weights_and_rest_only(workdir):
    path, task, ema = workdir
    before = _bytes_read()
    config, got_task, model, step = restore.load_trained(path)
    read = _bytes_read() - before
    assert config.task == "toy" and got_task is task and step == STEP
    np.testing.assert_array_equal(model.kernel[...], ema["kernel"][...])
    np.testing.assert_array_equal(model.bias[...], ema["bias"][...])
    assert float(model.count[...]) == 5.0
    # Frozen variables are not checkpointed: they come from the (traced) build.
    np.testing.assert_array_equal(model.pretrained[...], np.arange(3.0))
    assert task.eager_builds == 0, "the model was initialised eagerly"
    # A quarter of the optimizer state's bytes: far more than the weights, far less than it.
    assert 0 < read < np.prod(OPT_SHAPE), f"{read} bytes read: the optimizer state too?"


def test_frozen_checkpoint_is_loaded_once_and_builds_frozen(workdir):
    path, _, ema = workdir
    frozen = restore.load_frozen(path)
    assert restore.load_frozen(path) is frozen and frozen.step == STEP
    model = frozen.build()
    assert not jax.tree.leaves(nnx.state(model, nnx.Param))
    np.testing.assert_array_equal(model.kernel[...], ema["kernel"][...])
    assert len(frozen.fingerprint) == 64


def test_a_workdir_without_checkpoints_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(restore, "make_task", lambda config: ToyTask())
    save_config(str(tmp_path), ml_collections.ConfigDict({"task": "toy"}))
    with pytest.raises(FileNotFoundError, match="has no checkpoint yet"):
        restore.load_trained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        restore.load_trained(str(tmp_path / "nope"))


def test_a_checkpoint_of_another_structure_is_refused(workdir, monkeypatch):
    """A model with a parameter the checkpoint lacks (a renamed module) must not come back
    half abstract: the restore names what is missing."""
    path, task, _ = workdir
    build = task.build

    def renamed(rngs):
        model = build(rngs)
        model.extra = nnx.Param(jnp.zeros((2,)))
        return model

    monkeypatch.setattr(task, "build", renamed)
    with pytest.raises(ValueError, match=r"does not hold 1 arrays the model has .*extra"):
        restore.load_trained(path)
