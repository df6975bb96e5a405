"""The diffusion head (MAR) alone on a toy target, and a continuous generator end to end.

The head learns a two-component Gaussian mixture in 2D from a constant
condition; its samples must match the mixture's mean and covariance. Then a
Gaussian-bottleneck grid tokenizer and a diffusion-head generator train two
steps each through the real task and loop (`visgen.tasks.run`), sample
through the real CLI with plain steps and a DiSA schedule (the stats count
the denoiser's evaluations), and speculative decoding is refused in one line.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config
from flax import nnx

from visgen.diffusion import DISA_CLIP, DisaSchedule, effective_steps
from visgen.generators import DiffusionHead, DiffusionOptions, DrawContext

# Two equal components at +-(1, 0.5), std 0.25: mean 0, covariance [[1.0625, 0.5], [0.5, 0.3125]].
CENTRES = np.array([[-1.0, -0.5], [1.0, 0.5]], np.float32)
STD = 0.25
MIXTURE_COV = np.array([[1.0625, 0.5], [0.5, 0.3125]])
WIDTH = 8


def _mixture(rng: np.random.Generator, n: int) -> np.ndarray:
    which = rng.integers(0, 2, n)
    return CENTRES[which] + STD * rng.normal(size=(n, 2)).astype(np.float32)


def test_head_learns_a_gaussian_mixture_and_samples_its_moments():
    head = DiffusionHead(WIDTH, 2, depth=2, mlp_width=64, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(head, optax.adam(3e-3), wrt=nnx.Param)
    hidden = jnp.ones((1, 256, WIDTH), jnp.float32)  # one condition, 256 tokens a batch

    @nnx.jit
    def step(head, optimizer, targets, rng):
        def loss_fn(head):
            return jnp.mean(head.loss(hidden, targets, rng))

        loss, grads = nnx.value_and_grad(loss_fn)(head)
        optimizer.update(head, grads)
        return loss

    data = np.random.default_rng(0)
    losses = []
    for i in range(400):
        targets = jnp.asarray(_mixture(data, 256)).reshape(1, 256, 1, 2)
        losses.append(float(step(head, optimizer, targets, jax.random.key(i))))
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:10])
    # Evaluation: no rng, a fixed key, a deterministic loss [B, M, 1].
    targets = jnp.asarray(_mixture(data, 256)).reshape(1, 256, 1, 2)
    eval_loss = head.loss(hidden, targets, None)
    assert eval_loss.shape == (1, 256, 1)
    np.testing.assert_array_equal(eval_loss, head.loss(hidden, targets, None))

    # 50 steps with timesteps clamped to 950 (DiSA's sampler): unclamped, the first step
    # divides this briefly trained head's noise error (~0.08 at t = 999) by
    # sqrt(alpha_bar_999) ~ 5e-5 and the samples blow up.
    n = 4000
    context = DrawContext(1.0, DiffusionOptions(diffusion_steps=50, clip=950), guided=False)
    draw = nnx.jit(lambda head, h, rng: head.draw(h, rng, context))
    x = np.asarray(draw(head, jnp.ones((n, WIDTH)), jax.random.key(1)))
    assert x.shape == (n, 1, 2) and x.dtype == np.float32
    x = x[:, 0].astype(np.float64)
    # Tolerances: the mean's standard error is ~0.016 (x) and ~0.009 (y); the fit adds bias.
    np.testing.assert_allclose(x.mean(0), [0.0, 0.0], atol=0.1)
    np.testing.assert_allclose(np.cov(x.T), MIXTURE_COV, atol=0.15)
    assert 0.4 < np.mean(x[:, 0] > 0) < 0.6  # both modes

    # Guidance at scale 1 draws what the conditional rows alone draw (the null rows differ).
    guided = DrawContext(
        1.0, DiffusionOptions(diffusion_steps=10, clip=950), guided=True, scale=1.0
    )
    plain = DrawContext(1.0, DiffusionOptions(diffusion_steps=10, clip=950), guided=False)
    h = jnp.concatenate([jnp.ones((8, WIDTH)), jnp.zeros((8, WIDTH))])
    np.testing.assert_allclose(
        head.draw(h, jax.random.key(2), guided),
        head.draw(h[:8], jax.random.key(2), plain),
        atol=1e-5,
    )


def test_evaluations_count_the_clamped_steps_of_every_ar_iteration():
    head = nnx.eval_shape(lambda: DiffusionHead(WIDTH, 2, depth=1, mlp_width=8, rngs=nnx.Rngs(0)))
    assert head.evaluations(DiffusionOptions(), 256) == 256 * 100
    schedule = DisaSchedule.parse("linear:50:5")
    expected = sum(effective_steps(int(s), DISA_CLIP) for s in schedule.steps(64))
    assert head.evaluations(DiffusionOptions(disa="linear:50:5"), 64) == expected
    # 50 steps run 48 after the clamp: the first iteration's count.
    assert expected < int(schedule.steps(64).sum())
    assert head.capabilities(DiffusionOptions()) == frozenset()
    assert "DiSA linear:50:5" in head.describe(DiffusionOptions(disa="linear:50:5"))
    # An explicit clamp applies without DiSA too: 100 steps run 96.
    assert head.evaluations(DiffusionOptions(clip=950), 2) == 2 * 96
    assert "clamped to 950" in head.describe(DiffusionOptions(clip=950))


def test_config_variants_for_continuous_tokens():
    from visgen.config import load_config_file
    from visgen.tasks.generator import config_sample_options

    vae = load_config_file("configs/vq2d.py:tiny,latent=vae")
    assert vae.tokenizer.quantizer.to_dict() == {"name": "gaussian", "kl_weight": 1e-6}
    assert (vae.tokenizer.token_dim, vae.tokenizer.patch_size) == (16, 4)  # an 8 x 8 grid
    assert load_config_file("configs/vq2d.py:latent=vae").tokenizer.token_dim == 16
    with pytest.raises(ValueError, match="latent must be one of vq, vae"):
        load_config_file("configs/vq2d.py:tiny,latent=fsq")
    with pytest.raises(ValueError, match="codes=V .* not latent=vae"):
        load_config_file("configs/vq2d.py:tiny,latent=vae,codes=64")

    config = load_config_file("configs/ar.py:tokenizer=vq2d,tiny,diffusion")
    assert config.generator.head.name == "diffusion" and config.generator.head.depth == 3
    options = config_sample_options(config, disa="cosine:50:5")
    assert options.cfg_schedule == "linear"
    assert options.head == DiffusionOptions(diffusion_steps=100, disa="cosine:50:5", clip=950)
    assert load_config_file("configs/ar.py:diffusion").generator.head.mlp_width == 1024
    with pytest.raises(ValueError, match="diffusion and shuffle=S exclude each other"):
        load_config_file("configs/ar.py:tokenizer=vq2d,tiny,diffusion,shuffle=2")


@pytest.mark.slow
def test_continuous_generator_trains_and_samples_through_the_task_and_cli(shapes_dir, tmp_path):
    from launch import sample as sample_cli
    from visgen.tasks.restore import load_trained
    from visgen.tasks.run import train_config

    tokenizer = tiny_config("configs/vq2d.py:tiny,latent=vae", shapes_dir)
    tok_dir = str(tmp_path / "tokenizer")
    assert train_config(tokenizer, tok_dir).step == 2

    generator = tiny_config(
        "configs/ar.py:tokenizer=vq2d,tiny,diffusion", shapes_dir, tokenizer_workdir=tok_dir
    )
    with generator.unlocked():
        generator.sample.diffusion_steps = 5  # the preview's sampler
    gen_dir = str(tmp_path / "generator")
    result = train_config(generator, gen_dir)
    assert result.step == 2 and np.isfinite(result.eval_metrics["diffusion_loss"])
    assert "cross_entropy" not in result.eval_metrics
    assert 0 < result.eval_metrics["mean_latent_baseline_mse"] < 1
    assert os.path.isfile(os.path.join(gen_dir, "images", "preview_0000002.png"))
    _, _, model, _ = load_trained(gen_dir)
    assert model.generator.spec.kind == "continuous" and model.generator.spec.channels == 16

    out = str(tmp_path / "samples")
    base = ["--workdir", gen_dir, "--out", out, "--num", "3", "--batch-size", "3"]
    stats = sample_cli.run([*base, "--diffusion-steps", "4"])
    assert stats["options"]["diffusion_steps"] == 4 and stats["options"]["disa"] == ""
    assert stats["forward_passes"] == 64 and stats["head_evaluations"] == 64 * 4  # no collision
    with np.load(os.path.join(out, "samples.npz")) as f:
        assert f["images"].shape == (3, 32, 32, 3) and f["images"].dtype == np.uint8
    disa = sample_cli.run([*base, "--disa", "linear:6:2"])
    counts = DisaSchedule.parse("linear:6:2").steps(64)
    assert disa["head_evaluations"] == sum(effective_steps(int(c), 950) for c in counts)
    with open(os.path.join(out, "stats.json")) as f:
        assert json.load(f)["head_evaluations"] == disa["head_evaluations"]

    with pytest.raises(sample_cli.UsageError) as refused:
        sample_cli.run([*base, "--method", "sjd"])
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("--method sjd needs") and "the diffusion head (" in message
    with pytest.raises(sample_cli.UsageError, match="unknown sampling option 'top_k'"):
        sample_cli.run([*base, "--top-k", "3"])
