"""Noise schedules and respacing: the discrete-time Gaussian diffusion's coefficients.

Nichol and Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models"
(`openai/improved-diffusion`, `gaussian_diffusion.py` and `respace.py`), as MAR
(`LTH14/mar`, `diffusion/`) uses them:

- `cosine_betas`: `alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2` over
  `T = 1000` steps, `beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), 0.999)`
  (`betas_for_alpha_bar`);
- `space_timesteps`: the `n` of the `T` timesteps a respaced sampler keeps
  (one section: `round(i (T - 1) / (n - 1))`, `i < n`), optionally clamped
  to `min(t, clip)` (DiSA's sampler, `visgen.diffusion.disa`), clamped
  duplicates collapsing into one;
- `Schedule`: every coefficient the training loss and the sampler read,
  for the full schedule (`Schedule.from_betas`) or a respaced one
  (`Schedule.respaced`: the betas `1 - alpha_bar_k / alpha_bar_{k-1}` between
  consecutive kept timesteps, `timesteps` mapping each respaced index to the
  original timestep the network is told).

Everything is numpy float64 on the host (as the reference computes it); the
jitted code gathers float32 copies.
"""

import dataclasses
import functools
import math

import numpy as np

NUM_TIMESTEPS = 1000
MAX_BETA = 0.999


def cosine_alpha_bar(t: np.ndarray | float) -> np.ndarray:
    """`alpha_bar` of the cosine schedule at fractional time `t` in [0, 1]."""
    return np.cos((np.asarray(t, np.float64) + 0.008) / 1.008 * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int = NUM_TIMESTEPS, max_beta: float = MAX_BETA) -> np.ndarray:
    """The cosine schedule's betas `[T]` float64 (`betas_for_alpha_bar`)."""
    i = np.arange(num_timesteps, dtype=np.float64)
    ratio = cosine_alpha_bar((i + 1) / num_timesteps) / cosine_alpha_bar(i / num_timesteps)
    return np.minimum(1.0 - ratio, max_beta)


def space_timesteps(num_timesteps: int, count: int, clip: int | None = None) -> tuple[int, ...]:
    """The sorted original timesteps a `count`-step sampler keeps (IDDPM, one section).

    `clip` replaces each kept `t` by `min(t, clip)` (DiSA's `create_diffusion`);
    clamped duplicates collapse, so the result may hold fewer than `count`.
    """
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"a sampler takes 1 to {num_timesteps} steps, got {count}")
    stride = (num_timesteps - 1) / (count - 1) if count > 1 else 1.0
    kept = {round(i * stride) for i in range(count)}
    if clip is not None:
        kept = {min(t, clip) for t in kept}
    return tuple(sorted(kept))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The coefficients of a (possibly respaced) diffusion, each `[S]` float64.

    Attributes:
      betas: `beta_k`; `alphas_cumprod` `alpha_bar_k`, `alphas_cumprod_prev` `alpha_bar_{k-1}`
        (1 at `k = 0`).
      timesteps: `[S]` int, the original timestep of index `k` (what the network sees).
      posterior_variance, posterior_log_variance_clipped: `q(x_{k-1} | x_k, x_0)`'s
        variance, and its log with index 0 replaced by index 1 (it is 0 there).
      posterior_mean_coef1, posterior_mean_coef2: its mean `c1 x_0 + c2 x_k`.
      sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod: `x_0` from `eps`:
        `x_0 = a x_k - b eps`.
    """

    betas: np.ndarray
    timesteps: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray

    @classmethod
    def from_betas(cls, betas: np.ndarray, timesteps: np.ndarray | None = None) -> "Schedule":
        """IDDPM's `GaussianDiffusion.__init__` coefficients for `betas` `[S]`."""
        betas = np.asarray(betas, np.float64)
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        var = betas * (1.0 - ac_prev) / (1.0 - ac)
        # Index 0's posterior variance is 0; its log is clipped to index 1's.
        log_var = np.log(np.append(var[1], var[1:])) if len(var) > 1 else np.log(betas)
        return cls(
            betas=betas,
            timesteps=np.arange(len(betas)) if timesteps is None else np.asarray(timesteps),
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            posterior_variance=var,
            posterior_log_variance_clipped=log_var,
            posterior_mean_coef1=betas * np.sqrt(ac_prev) / (1.0 - ac),
            posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1.0),
        )

    def respaced(self, kept: tuple[int, ...]) -> "Schedule":
        """The schedule over the `kept` timesteps (`SpacedDiffusion`): betas from the kept
        `alpha_bar`s, `timesteps` the kept ones."""
        kept = np.asarray(sorted(kept))
        ac = self.alphas_cumprod[kept]
        betas = 1.0 - ac / np.append(1.0, ac[:-1])
        return Schedule.from_betas(betas, self.timesteps[kept])

    def __len__(self) -> int:
        return len(self.betas)


@functools.lru_cache(maxsize=64)
def cosine_schedule(
    steps: int | None = None, clip: int | None = None, num_timesteps: int = NUM_TIMESTEPS
) -> Schedule:
    """The cosine schedule, full (`steps` None, the training schedule) or respaced to
    `steps` with the timestep clamp `clip` (None: no clamp)."""
    full = Schedule.from_betas(cosine_betas(num_timesteps))
    if steps is None:
        return full
    return full.respaced(space_timesteps(num_timesteps, steps, clip))
