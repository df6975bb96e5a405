"""A localhost multi-process job for tests: N real command lines, one JAX distributed runtime.

`run_job(["-m", "launch.train", ...], processes=2, devices=4, env=...)` starts
`python -m launch.train ...` N times from the repo root, each with
`XLA_FLAGS=--xla_force_host_platform_device_count=<devices>` and the
`VISGEN_COORDINATOR` / `VISGEN_NUM_PROCESSES` / `VISGEN_PROCESS_ID` layout
(`visgen.distributed`) on a free loopback port, so the job sees
`processes x devices` CPU devices. Each process has a timeout; the first one
to fail (or time out) takes the whole group down, and the error names every
process's exit status with the tail of its output.
"""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class ProcessResult:
    index: int
    returncode: int
    output: str  # stdout and stderr together

    def tail(self, chars: int = 3000) -> str:
        return f"--- process {self.index} (exit {self.returncode}) ---\n{self.output[-chars:]}"


class JobFailed(AssertionError):
    """A process of the job exited non-zero or timed out."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(base: dict[str, str], index: int, processes: int, devices: int, port: int) -> dict:
    env = dict(base)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        VISGEN_COORDINATOR=f"127.0.0.1:{port}",
        VISGEN_NUM_PROCESSES=str(processes),
        VISGEN_PROCESS_ID=str(index),
        # gloo gives a process 30 s to join a collective that another has entered; a
        # compilation-cache hit in one process and a compile in the other can exceed it
        # on a loaded machine, so every process compiles.
        JAX_ENABLE_COMPILATION_CACHE="false",
    )
    return env


def start_job(
    args: list[str], *, processes: int, devices: int, env: dict[str, str]
) -> list[tuple[subprocess.Popen, "tempfile._TemporaryFileWrapper"]]:
    """Starts the processes (each in its own session, output to a temp file)."""
    port = free_port()
    procs = []
    for index in range(processes):
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (wait_job closes it)
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=job_env(env, index, processes, devices, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        procs.append((proc, log))
    return procs


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_job(procs, *, timeout: float, check: bool = True) -> list[ProcessResult]:
    """Waits for every process; on a failure or timeout kills the rest and raises
    JobFailed with each process's output tail (unless `check=False`)."""
    deadline = time.monotonic() + timeout
    failed = timed_out = False
    while any(p.poll() is None for p, _ in procs):
        if check and any(p.poll() not in (None, 0) for p, _ in procs):
            failed = True
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.2)
    for p, _ in procs:
        _kill(p)
    results = []
    for index, (p, log) in enumerate(procs):
        log.seek(0)
        results.append(ProcessResult(index, p.returncode, log.read()))
        log.close()
    if timed_out or (check and (failed or any(r.returncode != 0 for r in results))):
        why = f"timed out after {timeout:.0f} s" if timed_out else "a process failed"
        raise JobFailed(f"multi-process job {why}:\n" + "\n".join(r.tail() for r in results))
    return results


def run_job(
    args: list[str], *, processes: int = 2, devices: int = 4, env: dict[str, str], timeout=600
) -> list[ProcessResult]:
    """Runs `python ARGS` as a `processes x devices` job; returns each process's result."""
    return wait_job(start_job(args, processes=processes, devices=devices, env=env), timeout=timeout)


def output_so_far(procs, index: int) -> str:
    """What process `index` of a started job has written so far (read without moving the
    file offset that the child writes at)."""
    log = procs[index][1]
    return os.pread(log.fileno(), 1 << 22, 0).decode(errors="replace")
