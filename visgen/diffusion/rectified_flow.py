"""Rectified flow: the interpolation, its velocity target, logit-normal times and Euler sampling.

Liu et al. 2023 ("Flow Straight and Fast") with the conventions FlexTok's decoder
uses (`../shared/papers/tokenizers.md` section 2; Esser et al. 2024 for the
logit-normal times):

- noising: `x_t = t * eps + (1 - t) * x0` for `t` in [0, 1], so `t = 1` is pure noise;
- velocity target: `v = dx_t / dt = eps - x0`;
- training times: `t = sigmoid(mean + std * n)`, `n ~ N(0, 1)` (logit-normal);
- sampling: Euler from `t = 1` to `t = 0` on `steps` equal steps,
  `x <- x - (t_i - t_{i+1}) * v(x, t_i)`; with one step this is the closed form
  `x0_hat = eps - v(eps, 1)`;
- classifier-free guidance on velocities, `v_u + w * (v_c - v_u)`.

Pure jax, no parameters: the network is the caller's `velocity(x, t)`. The
sampler is one `jax.lax.fori_loop` with a static step count, so it jits.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

Velocity = Callable[[jax.Array, jax.Array], jax.Array]


def logit_normal_times(
    rng: jax.Array, batch: int, *, mean: float = 0.0, std: float = 1.0
) -> jax.Array:
    """Training times `[batch]` float32 in (0, 1): `sigmoid(mean + std * N(0, 1))`."""
    return jax.nn.sigmoid(mean + std * jax.random.normal(rng, (batch,), jnp.float32))


def _expand(t: jax.Array, x: jax.Array) -> jax.Array:
    """`t [B]` broadcast against `x [B, ...]`."""
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def interpolate(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """`x_t = t * eps + (1 - t) * x0`: data `x0` and noise `eps` `[B, ...]`, times `t [B]`."""
    t = _expand(t, x0)
    return t * eps + (1.0 - t) * x0


def velocity_target(x0: jax.Array, eps: jax.Array) -> jax.Array:
    """The rectified-flow velocity `eps - x0` (`[B, ...]`)."""
    return eps - x0


def guided(v_cond: jax.Array, v_uncond: jax.Array, scale: float | jax.Array) -> jax.Array:
    """Classifier-free guidance on velocities: `v_u + scale * (v_c - v_u)`; 1 is no guidance."""
    return v_uncond + scale * (v_cond - v_uncond)


def euler_sample(velocity: Velocity, noise: jax.Array, steps: int) -> jax.Array:
    """Integrate `dx/dt = velocity(x, t)` from `t = 1` (`noise [B, ...]`) to `t = 0`.

    `steps` equal Euler steps (static, >= 1); `velocity(x [B, ...], t [B]) -> [B, ...]`.
    Returns the sample `x_0` `[B, ...]` float32.
    """
    if steps < 1:
        raise ValueError(f"the Euler sampler takes >= 1 steps, got {steps}")
    batch = noise.shape[0]
    dt = 1.0 / steps

    def step(i, x):
        t = 1.0 - i * dt
        v = velocity(x, jnp.full((batch,), t, jnp.float32))
        return x - dt * v.astype(jnp.float32)

    return jax.lax.fori_loop(0, steps, step, noise.astype(jnp.float32))
