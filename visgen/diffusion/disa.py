"""DiSA: fewer diffusion steps for the later tokens of an autoregressive sample.

Zhao et al. 2025, "DiSA: Diffusion Step Annealing in Autoregressive Image
Generation" (arXiv 2505.20297, `Qinyu-Allen-Zhao/DiSA`), training-free: the
official code builds one respaced sampler per step count `lower..upper` and
picks one per AR iteration `step` of `num_iter` (`U = num_iter - 1`,
`N = upper - lower`, index `k` into the ascending list, so `lower + k` steps):

- `linear`: `k = int((U - step) / U * N)`: `upper` steps first, `lower` last;
- `cosine`: `k = int((cos(pi * step / U) + 1) / 2 * N)`;
- `two-stage`: `k = N` while `step < U / 2`, then 0;
- `constant`: `k = 0` (`lower` steps throughout).

Its sampler also clamps every kept timestep to `min(t, 950)` (`DISA_CLIP`;
MAR's own sampler has no clamp), so `t = 999` starts at 950 and clamped
duplicates collapse: a 50-step DiSA sampler runs 48 steps
(`visgen.diffusion.schedule.space_timesteps`).

A schedule is written `strategy:upper[:lower]` (`linear:50:5`,
`cosine:50:5`, `two-stage:50:5`, `constant:50`; `lower` defaults to
`upper`). The step counts are computed on the host in float64, as the
official code does, into a table the sampling loop indexes with its
(traced) step.
"""

import dataclasses
import math

import numpy as np

from visgen.diffusion.schedule import NUM_TIMESTEPS, space_timesteps

STRATEGIES = ("linear", "cosine", "two-stage", "constant")
DISA_CLIP = 950


@dataclasses.dataclass(frozen=True)
class DisaSchedule:
    """A parsed DiSA schedule: `strategy`, and step counts from `upper` down to `lower`."""

    strategy: str
    upper: int
    lower: int

    @classmethod
    def parse(cls, text: str) -> "DisaSchedule":
        """`strategy:upper[:lower]` -> a schedule; a ValueError names the valid forms."""
        parts = text.split(":")
        form = f"strategy:upper[:lower] with strategy one of {', '.join(STRATEGIES)}"
        if len(parts) not in (2, 3) or parts[0] not in STRATEGIES:
            raise ValueError(f"a DiSA schedule is {form} (e.g. linear:50:5), got {text!r}")
        try:
            upper, lower = int(parts[1]), int(parts[-1])
        except ValueError:
            raise ValueError(f"DiSA step counts must be integers: {form}, got {text!r}") from None
        if not 1 <= lower <= upper <= NUM_TIMESTEPS:
            raise ValueError(
                f"DiSA needs 1 <= lower <= upper <= {NUM_TIMESTEPS} steps, got {text!r}"
            )
        return cls(parts[0], upper, lower)

    def index(self, step: int, num_iter: int) -> int:
        """The official code's index `k` into `lower..upper` at AR iteration `step`."""
        u, n = num_iter - 1, self.upper - self.lower
        if self.strategy == "constant":
            return 0
        if u == 0:  # a single iteration (the official code divides by zero): `upper` steps
            return n
        if self.strategy == "linear":
            return int((u - step) / u * n)
        if self.strategy == "cosine":
            return int((math.cos(math.pi * step / u) + 1) / 2 * n)
        return n if step < u / 2 else 0  # two-stage

    def steps(self, num_iter: int) -> np.ndarray:
        """Diffusion steps asked for at each of `num_iter` AR iterations: `[num_iter]` int32."""
        return np.asarray([self.lower + self.index(s, num_iter) for s in range(num_iter)], np.int32)


def effective_steps(steps: int, clip: int | None) -> int:
    """The steps a `steps`-step sampler with timestep clamp `clip` runs (duplicates collapse)."""
    return len(space_timesteps(NUM_TIMESTEPS, steps, clip))
