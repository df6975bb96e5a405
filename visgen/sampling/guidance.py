"""Classifier-free guidance schedules: the scale `s(t)` at each step of a sampling loop.

A head applies the scale to what it guides (`visgen.generators.guide`:
`u + (c - u) * s(t)` on logits for categorical heads, Ho & Salimans 2022;
LlamaGen's `uncond + (cond - uncond) * cfg_scale`).
The scale at step `t` of `N` (the step producing token `t`, 0-based):

- `constant`: `s` (LlamaGen, VAR-free AR baselines).
- `linear`: `1 + (s - 1) * t / N`, MAR's `1 + (cfg - 1) * (256 - mask_len) / 256`
  with `t` tokens already generated.
- `half-linear` (Token-Shuffle, the paper's default): ramps linearly from 1 to
  `s` over the first half of the tokens, then stays at `s`:
  `1 + (s - 1) * min(1, 2t / N)`.

`interval = (start, end)` applies guidance only on steps with
`start <= t / N < end` and uses scale 1 (the conditional logits) elsewhere, a
fractional form of LlamaGen's `cfg_interval` (which stops CFG after a step).
"""

from typing import Literal

import jax
import jax.numpy as jnp

Schedule = Literal["constant", "linear", "half-linear"]
SCHEDULES: tuple[str, ...] = ("constant", "linear", "half-linear")


def guidance_scale(
    schedule: Schedule,
    scale: float,
    step: jax.Array | int,
    num_steps: int,
    interval: tuple[float, float] | None = None,
) -> jax.Array:
    """The guidance scale at `step` (0-based, may be traced) of `num_steps`: a float32 scalar."""
    frac = jnp.asarray(step, jnp.float32) / num_steps
    if schedule == "constant":
        ramp = jnp.float32(1.0)
    elif schedule == "linear":
        ramp = frac
    elif schedule == "half-linear":
        ramp = jnp.minimum(1.0, 2.0 * frac)
    else:
        raise ValueError(f"unknown cfg schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    s = 1.0 + (scale - 1.0) * ramp
    if interval is not None:
        start, end = interval
        s = jnp.where((frac >= start) & (frac < end), s, 1.0)
    return s.astype(jnp.float32)
