"""The training loop's step on the configured tiny generator, fed token batches.

Token batches (`{"tokens", "label"}`) are what a token cache feeds a generator
task; the step is the loop's own (`init_state` + `make_train_step`: loss,
gradients, AdamW, EMA, non-finite guard) with `configs/ar.py:tiny`'s generator
and optimizer settings, compiled once with the state donated.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.config import load_config_file
from visgen.tasks.generator import TokenBatchTask
from visgen.token_spec import TokenSpec
from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from visgen.train.state import init_state, make_train_step, split_model

VOCAB, LAYOUT, CLASSES = 1024, (32,), 10  # the tiny TiTok's tokens, 10 classes


def test_train_step_runs_the_configured_tiny_generator_on_token_batches():
    config = load_config_file("configs/ar.py:tiny")
    spec = TokenSpec(kind="discrete", layout=LAYOUT, vocab_size=VOCAB, channels=8)
    task = TokenBatchTask(dict(config.generator, num_classes=CLASSES), spec)
    optim = OptimConfig(**config.optim)
    tx = make_optimizer(optim, 1000)
    state, frozen = jax.jit(lambda: init_state(task, tx, 0))()
    graphdef = split_model(nnx.eval_shape(lambda: task.build(nnx.Rngs(0))))[0]
    step_fn = make_train_step(graphdef, task, tx, learning_rate_schedule(optim, 1000), 0.999)
    rng = np.random.default_rng(0)
    batch = {
        "tokens": jnp.asarray(rng.integers(0, VOCAB, (2, math.prod(LAYOUT))), jnp.int32),
        "label": jnp.asarray(rng.integers(0, CLASSES, (2,)), jnp.int32),
    }
    compiled = jax.jit(step_fn, donate_argnums=(0,)).lower(state, frozen, batch).compile()
    assert float((compiled.cost_analysis() or {}).get("flops", 0.0)) > 0

    model = task.build(nnx.Rngs(0))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert sum(x.size for x in jax.tree.leaves(state.params)) == params
    before = jax.tree.map(np.asarray, state.params)
    for _ in range(2):
        state, metrics = compiled(state, frozen, batch)
    assert int(state.step) == 2 and int(state.nonfinite_step) == -1
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, state.params)
    assert any(jax.tree.leaves(moved))
