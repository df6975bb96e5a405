"""Multi-process runs on JAX's distributed runtime: start-up and the few host collectives.

One job is N processes (one per host, or several on one machine for tests)
that each see their local devices and together one global mesh; the same
jitted code runs as on one process (GSPMD). This module holds what differs:

- `initialize()`: reads the job's layout from the environment, in one place:
  `VISGEN_COORDINATOR` (`host:port` of process 0), `VISGEN_NUM_PROCESSES`,
  `VISGEN_PROCESS_ID`; without them, JAX's own auto-detection (TPU pods,
  SLURM, or `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`).
  CPU collectives use gloo, so a localhost job of CPU processes works.
- `split(n)`: the contiguous share `[start, stop)` of `n` items (batches, samples)
  that this process handles; `allgather(obj)`: every process's picklable
  value, in process order, on every process (`gather_in_order` concatenates
  per-item results back into the global order). Values travel as bytes, so
  float64 and int64 arrive exactly, whatever `jax_enable_x64` says.

A single-process run never touches the collectives: every helper short-cuts.
"""

import dataclasses
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

COORDINATOR = "VISGEN_COORDINATOR"
NUM_PROCESSES = "VISGEN_NUM_PROCESSES"
PROCESS_ID = "VISGEN_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class Layout:
    """An explicit job layout (from `VISGEN_*`); None fields let JAX detect them."""

    coordinator: str
    num_processes: int
    process_id: int


def explicit_layout(environ: Mapping[str, str] | None = None) -> Layout | None:
    """The `VISGEN_*` layout, or None when `VISGEN_COORDINATOR` is unset.

    Raises:
      ValueError: a coordinator without a valid process count and id.
    """
    env = os.environ if environ is None else environ
    coordinator = env.get(COORDINATOR, "")
    if not coordinator:
        return None
    try:
        num, pid = int(env[NUM_PROCESSES]), int(env[PROCESS_ID])
    except (KeyError, ValueError):
        raise ValueError(
            f"{COORDINATOR}={coordinator} needs integer {NUM_PROCESSES} and {PROCESS_ID}, got "
            f"{env.get(NUM_PROCESSES)!r} and {env.get(PROCESS_ID)!r}"
        ) from None
    if num < 1 or not 0 <= pid < num:
        raise ValueError(f"{PROCESS_ID}={pid} must be in [0, {NUM_PROCESSES}={num})")
    return Layout(coordinator, num, pid)


def is_multiprocess_job(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment describes a multi-process job (VISGEN_*, SLURM with
    several tasks, a multi-host TPU slice, or `JAX_COORDINATOR_ADDRESS`)."""
    env = os.environ if environ is None else environ
    if explicit_layout(env) is not None:
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return True
    return "," in env.get("TPU_WORKER_HOSTNAMES", "") or bool(env.get("JAX_COORDINATOR_ADDRESS"))


def initialize(environ: Mapping[str, str] | None = None) -> None:
    """`jax.distributed.initialize` for this job; call before anything touches a device.

    With `VISGEN_COORDINATOR` the layout is explicit; otherwise JAX detects it
    (cluster environments, `JAX_COORDINATOR_ADDRESS`).
    """
    # CPU devices of different processes talk through gloo; GPUs and TPUs ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    layout = explicit_layout(environ)
    if layout is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=layout.coordinator,
            num_processes=layout.num_processes,
            process_id=layout.process_id,
        )


def split(n: int) -> tuple[int, int]:
    """This process's contiguous share `[start, stop)` of `n` items; the first
    `n % process_count` processes take one extra."""
    count, index = jax.process_count(), jax.process_index()
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def allgather(value: Any) -> list[Any]:
    """Every process's `value` (any picklable object), in process order, on every process.

    A collective: every process must call it, in the same order.
    """
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    payload = np.frombuffer(pickle.dumps(value), np.uint8)
    sizes = multihost_utils.process_allgather(np.int32(payload.size))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    # Only this job's own processes wrote these bytes.
    return [pickle.loads(gathered[p, : int(sizes[p])].tobytes()) for p in range(len(sizes))]


def gather_in_order(local: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-item results of this process's `split(n)` share -> all `n` in global order."""
    return [item for share in allgather(list(local)) for item in share]


def first_set(value: Any) -> Any:
    """The first non-None of every process's `value`, in process order (None if none is).

    The training loop asks this each step with its own received signal, so a SIGTERM
    to one process stops every process at the same step. A collective.
    """
    if jax.process_count() == 1:
        return value
    return next((v for v in allgather(value) if v is not None), None)
