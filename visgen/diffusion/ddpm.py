"""DDPM maths: forward noising, the posterior, the model's mean and variance, the training loss.

Ho et al. 2020 (epsilon prediction, the simple MSE loss) with Nichol and
Dhariwal 2021's learned-range variance (`openai/improved-diffusion`,
`gaussian_diffusion.py`; MAR's `DiffLoss` uses it with `LossType.MSE`):

- `q_sample`: `x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`;
- `p_mean_variance`: `x_0 = sqrt(1/alpha_bar_t) x_t - sqrt(1/alpha_bar_t - 1) eps_hat`
  (not clipped, as MAR samples), the posterior mean `c1 x_0 + c2 x_t`, and the
  log-variance: learned range `f log beta_t + (1 - f) log beta~_t` with
  `f = (v + 1) / 2` from the network's extra channels `v`, or without them
  the fixed "large" variance `beta_t` (`beta~_1` at `t = 0`);
- `training_losses`: `mean_C (eps - eps_hat)^2`, plus with learned variance
  the variational bound term (KL of the true posterior to the model's, the
  mean's gradient stopped, in bits; at `t = 0` the discretized Gaussian
  decoder NLL, IDDPM's pixel-bin likelihood MAR keeps for latents).

Arrays: latents `[B, C]` (any trailing shape), timesteps `[B]` int32 indices
into a `visgen.diffusion.schedule.Schedule`, float32 compute.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from visgen.diffusion.schedule import Schedule

# `model_fn(x_t [B, ...], t [B] int32) -> [B, ..., C]` (eps) or `[B, ..., 2C]` (eps, v).
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def extract(values: np.ndarray, t: jax.Array, like: jax.Array) -> jax.Array:
    """`values[t]` as float32, shaped `[B, 1, ...]` to broadcast against `like` `[B, ...]`."""
    out = jnp.asarray(values, jnp.float32)[t]
    return out.reshape(out.shape + (1,) * (like.ndim - out.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Noised latents `x_t` `[B, ...]` float32."""
    a = extract(np.sqrt(schedule.alphas_cumprod), t, x0)
    s = extract(np.sqrt(1.0 - schedule.alphas_cumprod), t, x0)
    return a * x0 + s * noise


def q_posterior(
    schedule: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`q(x_{t-1} | x_t, x_0)`: (mean, clipped log-variance), each `[B, ...]` float32."""
    mean = (
        extract(schedule.posterior_mean_coef1, t, xt) * x0
        + extract(schedule.posterior_mean_coef2, t, xt) * xt
    )
    log_var = extract(schedule.posterior_log_variance_clipped, t, xt)
    return mean, jnp.broadcast_to(log_var, xt.shape)


def fixed_log_variance(schedule: Schedule) -> np.ndarray:
    """IDDPM's `FIXED_LARGE` log-variance `[S]`: `log beta_t`, `log beta~_1` at `t = 0`."""
    return np.log(np.append(schedule.posterior_variance[1:2], schedule.betas[1:]))


def p_mean_variance(
    schedule: Schedule, eps: jax.Array, v: jax.Array | None, xt: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The model's `p(x_{t-1} | x_t)`: (mean, log-variance) `[B, ...]` float32.

    `eps`: the predicted noise; `v`: the learned-range channels (None: fixed variance).
    """
    x0 = (
        extract(schedule.sqrt_recip_alphas_cumprod, t, xt) * xt
        - extract(schedule.sqrt_recipm1_alphas_cumprod, t, xt) * eps
    )
    mean, min_log = q_posterior(schedule, x0, xt, t)
    if v is None:
        log_var = jnp.broadcast_to(extract(fixed_log_variance(schedule), t, xt), xt.shape)
    else:
        frac = (v + 1.0) / 2.0
        log_var = frac * extract(np.log(schedule.betas), t, xt) + (1.0 - frac) * min_log
    return mean, log_var


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
        + jnp.square(mean1 - mean2) * jnp.exp(-logvar2)
    )  # fmt: skip


def _approx_standard_normal_cdf(x: jax.Array) -> jax.Array:
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: jax.Array, mean: jax.Array, log_scale: jax.Array
) -> jax.Array:
    """Log-likelihood of `x` (in [-1, 1], 255 bins of width 2/255) under a discretized
    Gaussian, elementwise, nats (IDDPM's decoder term)."""
    centered = x - mean
    inv_std = jnp.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
    log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
    return jnp.where(
        x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta)
    )


def _mean_over_channels(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def training_losses(
    schedule: Schedule,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    learn_sigma: bool,
) -> jax.Array:
    """The per-example loss `[B]` float32 at timesteps `t` `[B]` with `noise` like `x0`.

    `mean_C (eps - eps_hat)^2`, plus with `learn_sigma` (the network returns
    `2C` channels: `eps_hat || v`) the variational-bound term in bits.
    """
    mse, bound = training_loss_terms(schedule, model_fn, x0, t, noise, learn_sigma)
    return mse + bound


def training_loss_terms(
    schedule: Schedule,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    learn_sigma: bool,
) -> tuple[jax.Array, jax.Array]:
    """`training_losses`' two terms, each `[B]` float32: the epsilon MSE, and the
    variational-bound term in bits (zeros without `learn_sigma`)."""
    xt = q_sample(schedule, x0, t, noise)
    out = model_fn(xt, t)
    if not learn_sigma:
        mse = _mean_over_channels(jnp.square(noise - out))
        return mse, jnp.zeros_like(mse)
    eps, v = jnp.split(out, 2, axis=-1)
    mse = _mean_over_channels(jnp.square(noise - eps))
    # The bound trains the variance only: the mean's prediction is frozen in it.
    mean, log_var = p_mean_variance(schedule, jax.lax.stop_gradient(eps), v, xt, t)
    true_mean, true_log_var = q_posterior(schedule, x0, xt, t)
    kl = _mean_over_channels(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
    nll = _mean_over_channels(nll) / math.log(2.0)
    return mse, jnp.where(t == 0, nll, kl)


def gaussian_baseline_mse(schedule: Schedule, var: np.ndarray) -> float:
    """The expected epsilon MSE, over the schedule's timesteps and the channels, of the
    best denoiser for data `N(mean, diag(var))` (`var` `[C]`): one that knows each
    channel's mean and variance and nothing else (the mean drops out of the error).

    With `a = alpha_bar_t`, `x_t ~ N(sqrt(a) mean, a var + 1 - a)` and
    `E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mean) / (a var + 1 - a)`, whose error is
    `a var / (a var + 1 - a)` per channel. A context-free bound,
    the analogue of a categorical head's frequency-only baseline.
    """
    a = np.asarray(schedule.alphas_cumprod, np.float64)[:, None]
    var = np.asarray(var, np.float64)[None, :]
    return float(np.mean(a * var / (a * var + 1.0 - a)))
