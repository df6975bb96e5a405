"""The train step and loop with a toy task: non-finite handling, EMA, sharding rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.data import DataConfig
from visgen.train.checkpoint import Checkpointer
from visgen.train.loop import NonFiniteError, TrainConfig, train
from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from visgen.train.sharding import fsdp_spec
from visgen.train.state import ema_decay_at, init_state, make_train_step, split_model

BAD_STEP = 2


class ToyTask:
    """Regress the mean colour; the loss turns NaN from `BAD_STEP` on."""

    def prepare_data(self, data_cfg):
        del data_cfg

    def host_batch(self, batch):
        return batch

    def build(self, rngs):
        return nnx.Linear(3, 3, rngs=rngs)

    def loss(self, model, batch, rng, step):
        colour = batch["image"].mean(axis=(1, 2))
        loss = jnp.mean((model(colour) - colour) ** 2)
        return jnp.where(step >= BAD_STEP, jnp.nan, loss), {}, None

    def after_update(self, model, aux, rng):
        pass

    def eval_batch(self, model, batch):
        return {"n": jnp.sum(batch["mask"])}

    def eval_summary(self, sums):
        return {"n": float(sums["n"])}

    def preview(self, model, batch):
        return batch["image"][None, :2]


def test_nonfinite_step_is_skipped_and_recorded():
    task, cfg = ToyTask(), OptimConfig(lr=1e-2, warmup_steps=0)
    tx = make_optimizer(cfg, 10)
    state, frozen = init_state(task, tx, seed=0)
    graphdef = split_model(task.build(nnx.Rngs(0)))[0]
    step = jax.jit(make_train_step(graphdef, task, tx, learning_rate_schedule(cfg, 10), 0.9))
    batch = {"image": jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)))}
    history = []
    for _ in range(4):
        state, metrics = step(state, frozen, batch)
        history.append(jax.tree.map(np.asarray, state.params))
    assert int(state.nonfinite_step) == BAD_STEP
    assert int(state.step) == 4
    for later in history[BAD_STEP:]:  # no update once the loss is NaN
        jax.tree.map(np.testing.assert_array_equal, later, history[BAD_STEP - 1])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.ema_params))


def test_loop_stops_on_nonfinite_and_keeps_last_good_checkpoint(tmp_path, shapes_dir):
    data = DataConfig(data_dir=shapes_dir, batch_size=8)
    cfg = TrainConfig(steps=6, log_every=1, checkpoint_every=1, tensorboard=False)
    with pytest.raises(NonFiniteError, match=f"step {BAD_STEP}"):
        train(ToyTask(), str(tmp_path), cfg, data, OptimConfig(warmup_steps=0))
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == BAD_STEP
    state = ckpt.restore_state(None)
    ckpt.close()
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_ema_decay_warms_up():
    assert float(ema_decay_at(jnp.asarray(0), 0.999)) == pytest.approx(0.1)
    assert float(ema_decay_at(jnp.asarray(10**6), 0.999)) == pytest.approx(0.999)


@pytest.mark.parametrize(
    "shape, fsdp, spec",
    [
        ((512, 1024), 4, (None, "fsdp")),  # the largest divisible axis
        ((1000, 12), 8, ("fsdp", None)),
        ((30, 30), 4, ()),  # too small: replicated
        ((4097, 3), 2, ()),  # no divisible axis
        ((512, 1024), 1, ()),
    ],
)
def test_fsdp_rule(shape, fsdp, spec):
    assert tuple(fsdp_spec(shape, fsdp, min_fsdp_size=1000)) == spec
