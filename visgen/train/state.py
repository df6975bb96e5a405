"""The train state pytree and the jitted train step.

A model's variables are split three ways:
  params - `nnx.Param`, what the optimizer updates and EMA tracks;
  frozen - `Frozen` variables (pretrained perceptual networks): loaded from
           files, never updated, never checkpointed;
  rest   - every other variable (codebook usage EMAs, LeCam EMAs): updated by
           the forward pass or `Task.after_update`, checkpointed.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from visgen.nn.frozen import Frozen
from visgen.train.task import Batch, Task


@struct.dataclass
class TrainState:
    """Everything a checkpoint holds besides the data iterator.

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params, rest: model variables (see module docstring).
      opt_state: the optax state.
      ema_params: exponential moving average of `params`.
      rng: base key; step `s` uses `fold_in(rng, s)`, so resuming is exact.
      nonfinite_step: int32, the first step whose loss or gradients were
        non-finite (its update was skipped), or -1.
    """

    step: jax.Array
    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    ema_params: nnx.State
    rng: jax.Array
    nonfinite_step: jax.Array


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """(graphdef, params, frozen, rest)."""
    return nnx.split(model, nnx.Param, Frozen, ...)


def init_state(
    task: Task, tx: optax.GradientTransformation, seed: int
) -> tuple[TrainState, nnx.State]:
    """Builds the model from `seed`: (train state, frozen variables)."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    model = task.build(nnx.Rngs(init_key))
    _, params, frozen, rest = split_model(model)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        ema_params=params,
        rng=train_key,
        nonfinite_step=jnp.full((), -1, jnp.int32),
    )
    return state, frozen


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """EMA decay warmed up as min(decay, (1 + s) / (10 + s)), so short runs
    are not dominated by the initial weights."""
    s = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def make_train_step(
    graphdef: nnx.GraphDef,
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    ema_decay: float,
):
    """Returns `train_step(state, frozen, batch) -> (state, metrics)`, pure and jit-able.

    A step whose loss or gradients are non-finite leaves params, optimizer and
    EMA untouched and records its number in `state.nonfinite_step`; the loop
    stops on it at the next log, so the last checkpoint stays good.
    """

    def train_step(state: TrainState, frozen: nnx.State, batch: Batch):
        loss_rng, update_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))

        def loss_of(params, rest):
            model = nnx.merge(graphdef, params, frozen, rest, copy=True)
            loss, metrics, aux = task.loss(model, batch, loss_rng, state.step)
            return loss, (metrics, aux, nnx.state(model, nnx.Not(nnx.Any(nnx.Param, Frozen))))

        (loss, (metrics, aux, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.params, state.rest
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        model = nnx.merge(graphdef, params, frozen, rest, copy=True)
        task.after_update(model, aux, update_rng)
        _, params, _, rest = split_model(model)
        d = ema_decay_at(state.step, ema_decay)
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema_params, params)

        finite = jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            rest=keep(rest, state.rest),
            opt_state=keep(opt_state, state.opt_state),
            ema_params=keep(ema, state.ema_params),
            nonfinite_step=jnp.where(
                finite | (state.nonfinite_step >= 0), state.nonfinite_step, state.step
            ),
        )
        metrics = dict(
            metrics,
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            update_norm=optax.tree.norm(updates),
            param_norm=optax.tree.norm(params),
            lr=schedule(state.step),
        )
        return new_state, metrics

    return train_step
