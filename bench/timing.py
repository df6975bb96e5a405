"""Timing helpers shared by the benchmarks: a median wall time and the real train step.

`time_train_step` builds a task from a resolved config (`time_task_step`
takes a built task) and times the same jitted step the training loop runs
(loss, gradients, optimizer, EMA, non-finite guard; the state donated), so
benchmark rows measure what `launch.train` does per step, minus data loading.
"""

import resource
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

    Returns what `time_task_step` does, for `make_task(config)` and `config.optim`.
    """
    from visgen.tasks import make_task
    from visgen.train.optim import OptimConfig

    return time_task_step(make_task(config), OptimConfig(**config.optim), batch, repeats)


def time_task_step(task, optim, batch: dict, repeats: int) -> dict:
    """Times the training loop's jitted step for `task` (a `visgen.train.task.Task`)
    with optimizer settings `optim` (an `OptimConfig`) on `batch`.

    Returns `params` (trainable), `step_seconds` (median of `repeats` after
    a warm-up), `examples_per_s`, `compile_seconds`, `step_flops` (XLA's
    count for the whole step) and `xla_peak_bytes` (arguments + outputs +
    temporaries - donated aliases; None where XLA does not say), and the
    process's page faults and kernel CPU seconds per step over the timed calls
    (high when each step's temporary buffer is freshly mapped; see
    `visgen.huge_pages`).
    """
    from visgen.train.optim import learning_rate_schedule, make_optimizer
    from visgen.train.state import init_state, make_train_step, split_model

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

    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = median_seconds(run, repeats)
    after = resource.getrusage(resource.RUSAGE_SELF)
    calls = repeats + 1  # median_seconds' warm-up call included
    examples = len(next(iter(batch.values())))
    return {
        "params": int(sum(x.size for x in jax.tree.leaves(holder["state"].params))),
        "step_seconds": seconds,
        "examples_per_s": examples / seconds,
        "compile_seconds": compile_seconds,
        "step_flops": float((compiled.cost_analysis() or {}).get("flops", float("nan"))),
        "xla_peak_bytes": peak,
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / calls,
        "system_seconds_per_step": (after.ru_stime - before.ru_stime) / calls,
    }
