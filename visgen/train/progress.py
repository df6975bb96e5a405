"""Progress lines with steps/s, examples/s and ETA, for anything long."""

import sys
import time


def format_seconds(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


class Progress:
    """Rate and ETA over a known number of steps, measured since the last `start`.

    `update(step)` returns a dict with `steps_per_s`, `examples_per_s` and
    `eta_s`, from the steps since the last call, so restarts and evaluations do
    not skew it. The first call after construction returns `{}`: its interval
    holds the train step's compilation, so its rate would say nothing about
    training (the log line says "compiling" instead).
    """

    def __init__(self, total: int, examples_per_step: int = 1):
        self.total = total
        self.examples_per_step = examples_per_step
        self._t = time.perf_counter()
        self._step: int | None = None
        self._compiled = False

    def start(self, step: int) -> None:
        self._t, self._step = time.perf_counter(), step

    def update(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        done = step - (self._step if self._step is not None else step)
        rate = done / max(now - self._t, 1e-9) if done > 0 else 0.0
        self._t, self._step = now, step
        if not self._compiled:
            self._compiled = True
            return {}
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        return {
            "steps_per_s": rate,
            "examples_per_s": rate * self.examples_per_step,
            "eta_s": eta,
        }


def progress_bar(iterable, total: int, desc: str = "", every: float = 0.5, file=None):
    """A dependency-free progress bar with rate and ETA for host loops (`file`: default the
    `sys.stderr` of the time of the call, so a replaced stderr is honoured)."""
    file = file or sys.stderr
    start = last = time.perf_counter()
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every or i == total:
            last = now
            rate = i / max(now - start, 1e-9)
            eta = format_seconds((total - i) / rate) if rate > 0 else "?"
            bar = "#" * int(20 * i / max(total, 1))
            file.write(f"\r{desc} [{bar:<20}] {i}/{total} {rate:.1f}/s ETA {eta}")
            file.flush()
    file.write("\n")
