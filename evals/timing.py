"""Timing helpers shared by the benchmarks: a median wall time and the real train step.

`time_train_step` builds a task from a resolved config and times the same
jitted step the training loop runs (loss, gradients, optimizer, EMA,
non-finite guard; the state donated), so benchmark rows measure what
`launch.train` does per step, minus data loading.
"""

import statistics
import time

import jax
from flax import nnx


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn` (blocked on its result) after a warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_train_step(config, batch: dict, repeats: int) -> dict:
    """Times the real train step of `config`'s task on `batch` (a dict of arrays).

    Returns `params` (trainable), `step_seconds` (median of `repeats` after
    a warm-up), `examples_per_s`, `compile_seconds`, `step_flops` (XLA's
    count for the whole step) and `xla_peak_bytes` (arguments + outputs +
    temporaries - donated aliases; None where XLA does not say).
    """
    from visgen.tasks import make_task
    from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
    from visgen.train.state import init_state, make_train_step, split_model

    task = make_task(config)
    optim = OptimConfig(**config.optim)
    tx = make_optimizer(optim, 1000)
    state, frozen = jax.jit(lambda: init_state(task, tx, 0))()
    graphdef = split_model(nnx.eval_shape(lambda: task.build(nnx.Rngs(0))))[0]
    step_fn = make_train_step(graphdef, task, tx, learning_rate_schedule(optim, 1000), 0.999)
    t = time.perf_counter()
    compiled = jax.jit(step_fn, donate_argnums=(0,)).lower(state, frozen, batch).compile()
    compile_seconds = time.perf_counter() - t
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], frozen, batch)
        return metrics["loss"]

    seconds = median_seconds(run, repeats)
    examples = len(next(iter(batch.values())))
    return {
        "params": int(sum(x.size for x in jax.tree.leaves(holder["state"].params))),
        "step_seconds": seconds,
        "examples_per_s": examples / seconds,
        "compile_seconds": compile_seconds,
        "step_flops": float((compiled.cost_analysis() or {}).get("flops", float("nan"))),
        "xla_peak_bytes": peak,
    }
