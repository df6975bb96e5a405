"""Respaced ancestral DDPM sampling as one `lax` loop whose step count may be traced.

IDDPM's `p_sample_loop` over a `SpacedDiffusion` (MAR's `DiffLoss.sample`):
from `x_T ~ N(0, I)`, each step predicts the noise, takes the model's mean
and variance (`visgen.diffusion.ddpm.p_mean_variance`) and draws

    x_{k-1} = mean + [k > 0] exp(log_var / 2) z temperature,    z ~ N(0, I),

so the temperature scales the injected noise (MAR), not `x_T`; temperature
0 returns the chain's mean path from `x_T`.

The step count `steps` may be a traced integer (DiSA picks one per AR
iteration inside a jitted decode loop): the respaced schedules of every
count in the static `choices` are stacked, zero-padded, into `SpacedTables`
on the host, and the loop gathers the row of `steps` and runs its length
(`lax.fori_loop` with a traced bound). `clip` is the timestep clamp of DiSA's
sampler (`min(t, clip)`; None: MAR's sampler, no clamp), applied when the
timesteps are chosen (`visgen.diffusion.schedule.space_timesteps`).
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from visgen.diffusion.ddpm import fixed_log_variance
from visgen.diffusion.schedule import NUM_TIMESTEPS, cosine_schedule

# `eps_fn(x [B, ...], t [B] int32 original timesteps) -> (eps [B, ...], v [B, ...] or None)`:
# the predicted noise and the learned-range channels (None: fixed variance).
EpsFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array | None]]

_COEFFICIENTS = (
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_log_variance_clipped",
    "log_betas",
    "fixed_log_variance",
)


@dataclasses.dataclass(frozen=True)
class SpacedTables:
    """The respaced cosine schedules of several step counts, stacked: row `r` is
    `choices[r]` steps, `lengths[r]` of them after the clamp (numpy, host side).

    Attributes:
      choices: the step counts asked for, `[K]`.
      lengths: the steps each runs, `[K]` (fewer than asked when clamped timesteps collide).
      timesteps: `[K, S]` int32 original timesteps (zero-padded; `S = max(choices)`).
      coefficients: name -> `[K, S]` float32 (`_COEFFICIENTS`).
    """

    choices: tuple[int, ...]
    lengths: np.ndarray
    timesteps: np.ndarray
    coefficients: dict[str, np.ndarray]


@functools.lru_cache(maxsize=32)
def spaced_tables(
    choices: tuple[int, ...], clip: int | None, num_timesteps: int = NUM_TIMESTEPS
) -> SpacedTables:
    """`SpacedTables` of the cosine schedule respaced to each count in `choices`."""
    width = max(choices)
    lengths = np.zeros(len(choices), np.int32)
    timesteps = np.zeros((len(choices), width), np.int32)
    coefficients = {name: np.zeros((len(choices), width), np.float32) for name in _COEFFICIENTS}
    for r, steps in enumerate(choices):
        schedule = cosine_schedule(steps, clip, num_timesteps)
        n = len(schedule)
        lengths[r] = n
        timesteps[r, :n] = schedule.timesteps
        values = {
            "log_betas": np.log(schedule.betas),
            "fixed_log_variance": fixed_log_variance(schedule),
        }
        for name in _COEFFICIENTS:
            coefficients[name][r, :n] = values[name] if name in values else getattr(schedule, name)
    return SpacedTables(tuple(choices), lengths, timesteps, coefficients)


def p_sample_loop(
    eps_fn: EpsFn,
    shape: Sequence[int],
    steps: jax.Array | int,
    rng: jax.Array,
    temperature: float = 1.0,
    clip: int | None = None,
    *,
    choices: Sequence[int] | None = None,
) -> jax.Array:
    """Samples `[*shape]` float32 (`shape[0]` the batch) in `steps` respaced steps.

    Args:
      eps_fn: the network (see `EpsFn`); it sees original timesteps `[0, 1000)`.
      shape: the latents' shape, batch first.
      steps: the step count, a Python int or a traced int32 scalar among `choices`.
      rng: `x_T` and each step's noise (`fold_in(rng, k)`).
      temperature: scales the injected noise (static).
      clip: the timestep clamp (static; None: none).
      choices: the counts a traced `steps` may take (static); default `(steps,)`.
    """
    if choices is None:
        if not isinstance(steps, int):
            raise ValueError("a traced step count needs the static `choices` it is among")
        choices = (steps,)
    if isinstance(steps, int) and steps not in choices:
        raise ValueError(f"steps {steps} is not among the choices {tuple(choices)}")
    tables = spaced_tables(tuple(int(c) for c in choices), clip)
    row = jnp.argmax(jnp.asarray(tables.choices) == steps)
    length = jnp.asarray(tables.lengths)[row]
    timesteps = jnp.asarray(tables.timesteps)[row]
    coef = {name: jnp.asarray(values)[row] for name, values in tables.coefficients.items()}
    batch = shape[0]
    x_rng, step_rng = jax.random.split(rng)

    def body(i, x):
        k = length - 1 - i  # the respaced index, counting down
        t = jnp.full((batch,), timesteps[k], jnp.int32)
        eps, v = eps_fn(x, t)

        def at(name: str) -> jax.Array:
            return coef[name][k]

        x0 = at("sqrt_recip_alphas_cumprod") * x - at("sqrt_recipm1_alphas_cumprod") * eps
        mean = at("posterior_mean_coef1") * x0 + at("posterior_mean_coef2") * x
        if v is None:
            log_var = at("fixed_log_variance")
        else:
            frac = (v + 1.0) / 2.0
            log_var = frac * at("log_betas") + (1.0 - frac) * at("posterior_log_variance_clipped")
        if temperature == 0.0:
            return mean
        noise = jax.random.normal(jax.random.fold_in(step_rng, i), x.shape, jnp.float32)
        return mean + (k > 0) * jnp.exp(0.5 * log_var) * noise * temperature

    x = jax.random.normal(x_rng, tuple(shape), jnp.float32)
    return jax.lax.fori_loop(0, length, body, x)
