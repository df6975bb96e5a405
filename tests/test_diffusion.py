"""The diffusion maths: the cosine schedule, respacing, DiSA's step schedules, the sampler.

Values are checked against the reference formulas (IDDPM's
`betas_for_alpha_bar` and `SpacedDiffusion`, DiSA's index rules) written out
here independently, and the sampler against the exact noise predictor of a
Gaussian, whose samples it must reproduce.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visgen.diffusion import (
    DISA_CLIP,
    DisaSchedule,
    cosine_betas,
    cosine_schedule,
    effective_steps,
    gaussian_baseline_mse,
    p_sample_loop,
    space_timesteps,
    spaced_tables,
    training_loss_terms,
)
from visgen.generators import DiffusionOptions


def _alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def test_cosine_betas_follow_alpha_bar_and_cap_at_0_999():
    betas = cosine_betas()
    assert betas.shape == (1000,) and betas.dtype == np.float64
    for i in (0, 1, 500, 998):
        assert betas[i] == pytest.approx(1 - _alpha_bar((i + 1) / 1000) / _alpha_bar(i / 1000))
    assert betas[0] == pytest.approx(4.1284e-05, rel=1e-4)  # hand-checked
    assert betas[-1] == 0.999  # alpha_bar(1) = cos(pi / 2)^2 ~ 0: capped


def test_space_timesteps_and_the_clamp():
    assert space_timesteps(1000, 5) == (0, 250, 500, 749, 999)
    assert space_timesteps(1000, 1) == (0,)
    assert space_timesteps(1000, 1000) == tuple(range(1000))
    assert len(space_timesteps(1000, 100)) == 100
    # DiSA's clamp: 958, 979 and 999 all become 950, one step; 938 is kept.
    clamped = space_timesteps(1000, 50, clip=DISA_CLIP)
    assert len(clamped) == 48 and clamped[-2:] == (938, 950)
    assert effective_steps(50, DISA_CLIP) == 48 and effective_steps(50, None) == 50
    assert effective_steps(100, DISA_CLIP) == 96 and effective_steps(5, DISA_CLIP) == 5
    with pytest.raises(ValueError, match="1 to 1000 steps"):
        space_timesteps(1000, 0)


def test_respacing_matches_the_reference_formula():
    full = cosine_schedule()
    spaced = cosine_schedule(5)
    np.testing.assert_array_equal(spaced.timesteps, [0, 250, 500, 749, 999])
    # SpacedDiffusion: beta_k = 1 - alpha_bar(t_k) / alpha_bar(t_{k-1}), from the kept ones.
    ac = full.alphas_cumprod
    np.testing.assert_allclose(spaced.alphas_cumprod, ac[[0, 250, 500, 749, 999]], rtol=1e-8)
    assert spaced.betas[0] == pytest.approx(full.betas[0])
    # Away from the capped last beta, alpha_bar(t) = f((t + 1) / T) / f(0).
    for k, (t, prev) in enumerate([(250, 0), (500, 250), (749, 500)], start=1):
        expected = 1 - _alpha_bar((t + 1) / 1000) / _alpha_bar((prev + 1) / 1000)
        assert spaced.betas[k] == pytest.approx(expected, rel=1e-9)
    assert spaced.betas[1] == pytest.approx(0.1541, abs=1e-4)  # hand-checked
    assert spaced.betas[3] == pytest.approx(0.7069, abs=1e-4)
    # The posterior of the respaced chain, IDDPM's formulas.
    k = 2
    var = spaced.betas[k] * (1 - spaced.alphas_cumprod[k - 1]) / (1 - spaced.alphas_cumprod[k])
    assert spaced.posterior_variance[k] == pytest.approx(var)
    assert spaced.posterior_log_variance_clipped[0] == pytest.approx(
        math.log(spaced.posterior_variance[1])
    )
    # A clamped respacing starts at timestep 950.
    assert cosine_schedule(50, DISA_CLIP).timesteps[-1] == 950
    tables = spaced_tables((5, 50), DISA_CLIP)
    np.testing.assert_array_equal(tables.lengths, [5, 48])
    assert tables.timesteps.shape == (2, 50) and tables.timesteps[1, 47] == 950


def test_disa_schedules_give_the_documented_step_counts():
    linear = DisaSchedule.parse("linear:50:5").steps(64)
    assert linear[0] == 50 and linear[-1] == 5
    assert linear[32] == 5 + int((63 - 32) / 63 * 45) == 27
    assert np.all(np.diff(linear) <= 0)
    cosine = DisaSchedule.parse("cosine:50:5").steps(64)
    assert cosine[0] == 50 and cosine[-1] == 5 and cosine[32] == 26
    two_stage = DisaSchedule.parse("two-stage:50:5").steps(64)
    assert set(two_stage[:32]) == {50} and set(two_stage[32:]) == {5}
    np.testing.assert_array_equal(DisaSchedule.parse("constant:50").steps(8), [50] * 8)
    np.testing.assert_array_equal(DisaSchedule.parse("constant:50:5").steps(8), [5] * 8)
    # The head asks for these counts, and runs them with the clamp (50 -> 48 steps).
    options = DiffusionOptions(disa="linear:50:5")
    np.testing.assert_array_equal(options.step_counts(64), linear)
    assert options.timestep_clip == DISA_CLIP and DiffusionOptions().timestep_clip is None
    assert DiffusionOptions(clip=900).timestep_clip == 900
    assert DiffusionOptions(disa="linear:50:5", clip=980).timestep_clip == 980
    np.testing.assert_array_equal(DiffusionOptions(diffusion_steps=7).step_counts(3), [7, 7, 7])
    for bad in ("linear", "fast:50:5", "linear:5:50", "linear:a:5", "linear:2000:5"):
        with pytest.raises(ValueError, match="DiSA"):
            DiffusionOptions(disa=bad)
    with pytest.raises(ValueError, match="diffusion_steps must be in 1..1000"):
        DiffusionOptions(diffusion_steps=0)
    with pytest.raises(ValueError, match="clip must be in 0..999"):
        DiffusionOptions(clip=1000)


def _gaussian_eps(mean: float, std: float):
    """The exact noise predictor for data N(mean, std^2): E[eps | x_t]."""
    ac = jnp.asarray(cosine_schedule().alphas_cumprod, jnp.float32)

    def eps_fn(x, t):
        a = jnp.sqrt(ac[t])[:, None]
        s2 = (1.0 - ac[t])[:, None]
        return jnp.sqrt(s2) * (x - a * mean) / (a**2 * std**2 + s2), None

    return eps_fn


def test_sampler_reproduces_a_gaussian_and_takes_a_traced_step_count():
    eps_fn = _gaussian_eps(0.5, 0.3)
    rng = jax.random.key(0)
    x = p_sample_loop(eps_fn, (4000, 2), 50, rng)
    assert x.shape == (4000, 2) and x.dtype == jnp.float32
    assert float(jnp.mean(x)) == pytest.approx(0.5, abs=0.02)
    assert float(jnp.std(x)) == pytest.approx(0.3, abs=0.02)
    # A traced count inside one jitted program picks the same respaced chain.
    run = jax.jit(lambda steps: p_sample_loop(eps_fn, (4000, 2), steps, rng, choices=(10, 50)))
    np.testing.assert_allclose(run(jnp.int32(50)), x, rtol=1e-5, atol=1e-5)
    few = run(jnp.int32(10))
    np.testing.assert_allclose(few, p_sample_loop(eps_fn, (4000, 2), 10, rng), atol=1e-5)
    # Temperature 0 injects no noise: the chain's mean path from x_T, a narrower spread.
    cold = p_sample_loop(eps_fn, (4000, 2), 50, rng, temperature=0.0)
    assert float(jnp.std(cold)) < 0.01  # the mean path ends at the data's mean
    with pytest.raises(ValueError, match="not among the choices"):
        p_sample_loop(eps_fn, (2, 2), 7, rng, choices=(10, 50))


def test_mean_latent_baseline_is_the_optimal_gaussian_denoisers_mse():
    # Data N(mean, diag(var)); the exact E[eps | x_t] reaches the baseline, a worse one does not.
    schedule = cosine_schedule()
    mean, var = np.array([0.5, -1.0, 0.0]), np.array([0.04, 1.0, 2.25])
    n = 200_000
    keys = jax.random.split(jax.random.key(0), 3)
    x0 = jnp.asarray(mean + np.sqrt(var) * np.asarray(jax.random.normal(keys[0], (n, 3))))
    t = jax.random.randint(keys[1], (n,), 0, 1000)
    noise = jax.random.normal(keys[2], (n, 3))
    a = jnp.asarray(schedule.alphas_cumprod, jnp.float32)[t][:, None]

    def optimal(xt, t):
        return jnp.sqrt(1 - a) * (xt - jnp.sqrt(a) * mean) / (a * var + 1 - a)

    baseline = gaussian_baseline_mse(schedule, var)
    mse, bound = training_loss_terms(schedule, optimal, x0, t, noise, learn_sigma=False)
    assert float(jnp.mean(mse)) == pytest.approx(baseline, rel=0.01)
    assert not np.any(np.asarray(bound))
    blind, _ = training_loss_terms(schedule, lambda x, t: jnp.zeros_like(x), x0, t, noise, False)
    assert float(jnp.mean(blind)) == pytest.approx(1.0, rel=0.01) and baseline < 0.7
    # Unit-variance data: E_t[alpha_bar_t], the schedule's mean signal fraction.
    unit = gaussian_baseline_mse(schedule, np.ones(4))
    assert unit == pytest.approx(float(np.mean(schedule.alphas_cumprod)), rel=1e-9)
