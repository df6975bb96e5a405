"""MAR's masked generator and its sampler (`visgen.generators.mar`, `visgen.sampling.mar`).

The cosine schedule reveals exactly MAR's counts per iteration (hand-checked);
the training mask follows the truncated normal; the backbone is bidirectional
and a masked position never sees its own token; the loss counts the masked
tokens only; the jitted sampler reveals every token once and counts backbone
passes and head evaluations; and a masked generator trains two steps through
the real task and loop and samples through the real CLI, which refuses the
causal samplers for it (`tests/test_contracts.py` checks that the masked sampler refuses
every causal generator); `configs/mar.py`'s variants give MAR's sizes.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

from visgen.diffusion import effective_steps
from visgen.generators import DiffusionOptions, MaskedGenerator
from visgen.generators.mar import MASK_RATIO_MIN
from visgen.sampling import SampleOptions, reveal_counts, sample_mar
from visgen.token_spec import TokenSpec

SPEC = TokenSpec.continuous((4, 4), 3)
HEAD = {"name": "diffusion", "depth": 1, "mlp_width": 16, "diffusion_batch_mul": 2}


def _model(**kwargs) -> MaskedGenerator:
    args = dict(spec=SPEC, head=HEAD, width=16, depth=1, heads=2, num_classes=3, buffer_tokens=2)
    return MaskedGenerator(**{**args, **kwargs}, rngs=nnx.Rngs(0))


def test_cosine_schedule_reveals_mars_counts():
    # N = 16, 4 iterations: floor(16 cos(pi/8 k)) = 14, 11, 6 stay masked after k = 1, 2, 3.
    assert reveal_counts(16, 4).tolist() == [2, 3, 5, 6]
    # N = 4, 3 iterations: floor(4 cos(pi/6)) = 3, floor(4 cos(pi/3)) = 2.
    assert reveal_counts(4, 3).tolist() == [1, 1, 2]
    # The clamps: without "reveal at least one", floor(8 cos(pi/8)) = 7 would reveal none at
    # step 1; one iteration per token reveals one each.
    assert reveal_counts(8, 8).tolist() == [1] * 8
    assert reveal_counts(256, 256).tolist() == [1] * 256
    counts = reveal_counts(256, 64)
    assert counts.sum() == 256 and counts.min() >= 1 and counts[0] == 1 and counts.max() == 7
    assert reveal_counts(5, 1).tolist() == [5]
    for bad in (0, 17):
        with pytest.raises(ValueError, match="num_iter must be in 1..16"):
            reveal_counts(16, bad)


def test_training_mask_follows_the_truncated_normal():
    model = _model()
    counts = np.array(
        [int(model.training_mask(4, jax.random.key(i)).sum(-1)[0]) for i in range(200)]
    )
    # ceil(16 r) with r in [0.7, 1]: 12..16 masked, all rows of a batch alike.
    assert counts.min() >= int(np.ceil(16 * MASK_RATIO_MIN)) and counts.max() <= 16
    assert len(set(counts.tolist())) >= 3  # the ratio varies
    partial = int(np.argmax(counts < 16))  # a key whose ratio leaves tokens visible
    mask = np.asarray(model.training_mask(64, jax.random.key(partial)))
    assert len(set(mask.sum(-1).tolist())) == 1  # one ratio per batch (MAR)
    assert len({tuple(row) for row in mask}) > 1  # a random order per example
    with pytest.raises(ValueError, match="generator.head.name must be 'diffusion'"):
        _model(head={"name": "categorical"})
    with pytest.raises(ValueError, match="diffusion head draws continuous latents"):
        _model(spec=TokenSpec(kind="discrete", layout=(4, 4), vocab_size=8, channels=4))


def test_backbone_is_bidirectional_and_a_masked_position_hides_its_token():
    model = _model()
    x = jax.random.normal(jax.random.key(1), (2, 16, 3))
    labels = jnp.array([0, 2])
    mask = jnp.zeros((2, 16), bool).at[:, 5].set(True)
    hidden = model.hidden_states(x, labels, mask)
    assert hidden.shape == (2, 16, 16)
    # A visible token late in the raster order changes the first position's state.
    changed = x.at[:, 15].add(1.0)
    assert not np.allclose(model.hidden_states(changed, labels, mask)[:, 0], hidden[:, 0])
    # The masked token's value reaches nothing.
    hidden_out = model.hidden_states(x.at[:, 5].add(10.0), labels, mask)
    np.testing.assert_array_equal(np.asarray(hidden_out), np.asarray(hidden))
    # The class condition reaches every position; the null class differs from the label.
    dropped = model.hidden_states(x, labels, mask, drop=jnp.array([True, False]))
    assert not np.allclose(dropped[0], hidden[0]) and np.allclose(dropped[1], hidden[1])


def test_loss_counts_the_masked_tokens_only():
    model = _model()
    x = jax.random.normal(jax.random.key(2), (3, 16, 3))
    labels = jnp.array([0, 1, 2])
    mse, bound, mask = model.loss_terms(x, labels, train=True, rng=jax.random.key(5))
    assert mse.shape == bound.shape == mask.shape == (3, 16)
    assert 12 <= int(mask[0].sum()) <= 16
    loss = model.loss(x, labels, train=True, rng=jax.random.key(5))
    expected = np.sum((mse + bound) * mask) / np.sum(mask)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
    # Evaluation is deterministic and zero at the visible tokens.
    losses = model.token_losses(x, labels)
    np.testing.assert_array_equal(np.asarray(losses), np.asarray(model.token_losses(x, labels)))
    visible = np.asarray(model.loss_terms(x, labels)[2]) == 0
    assert np.all(np.asarray(losses)[visible] == 0)
    assert np.all(np.asarray(losses)[~visible] > 0)


def test_sampler_reveals_every_token_once_and_counts_its_work():
    model = _model()
    labels = jnp.array([0, 1, 2, 1])
    options = SampleOptions(
        cfg_scale=2.0,
        cfg_schedule="linear",
        head=DiffusionOptions(disa="linear:6:2", clip=950),
    )
    tokens, stats = sample_mar(model, labels, jax.random.key(0), options, num_iter=5)
    assert tokens.shape == (4, 16, 3) and bool(jnp.all(jnp.isfinite(tokens)))
    assert bool(jnp.all(jnp.any(tokens != 0, axis=-1)))  # drawn, not the zero start
    counts = reveal_counts(16, 5)
    steps = np.array([effective_steps(int(s), 950) for s in [6, 5, 4, 3, 2]])
    assert options.head.step_counts(5).tolist() == [6, 5, 4, 3, 2]
    assert stats["forward_passes"] == 5 and stats["tokens_generated"] == 64
    assert stats["head_evaluations"] == int(np.sum(counts * steps))
    assert stats["denoiser_calls"] == int(np.sum(steps))
    again, _ = sample_mar(model, labels, jax.random.key(0), options, num_iter=5)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(tokens))
    other, _ = sample_mar(model, labels, jax.random.key(1), options, num_iter=5)
    assert not np.allclose(other, tokens)
    # Any number of iterations, unguided, plain steps: one iteration per token.
    plain = SampleOptions(head=DiffusionOptions(diffusion_steps=3))
    tokens, stats = sample_mar(model, labels[:2], jax.random.key(0), plain, num_iter=16)
    assert tokens.shape == (2, 16, 3) and stats["head_evaluations"] == 16 * 3
    with pytest.raises(ValueError, match="num_iter must be in 1..16"):
        sample_mar(model, labels, jax.random.key(0), plain, num_iter=17)


@pytest.mark.slow
def test_masked_generator_trains_and_samples_through_the_task_and_cli(shapes_dir, tmp_path):
    from launch import sample as sample_cli
    from visgen.tasks.run import train_config

    tokenizer = tiny_config("configs/vq2d.py:tiny,latent=vae", shapes_dir)
    tok_dir = str(tmp_path / "tokenizer")
    assert train_config(tokenizer, tok_dir).step == 2
    generator = tiny_config("configs/mar.py:tiny", shapes_dir, tokenizer_workdir=tok_dir)
    with generator.unlocked():
        generator.sample.diffusion_steps = 3  # the preview's sampler
        generator.preview_per_class = 1
    gen_dir = str(tmp_path / "generator")
    result = train_config(generator, gen_dir)
    metrics = result.eval_metrics
    assert result.step == 2 and np.isfinite(metrics["diffusion_loss"])
    assert "cross_entropy" not in metrics
    # The epsilon MSE beside the mean-latent baseline; an untrained head is near 1.
    assert 0 < metrics["mean_latent_baseline_mse"] < 1 and metrics["latent_std"] > 0
    assert metrics["diffusion_mse"] > 0 and metrics["diffusion_loss"] >= metrics["diffusion_mse"]
    with open(os.path.join(gen_dir, "metrics.jsonl")) as f:
        assert any("train/diffusion_loss" in json.loads(line) for line in f)
    assert os.path.isfile(os.path.join(gen_dir, "images", "preview_0000002.png"))

    out = str(tmp_path / "samples")
    base = ["--workdir", gen_dir, "--out", out, "--num", "3", "--batch-size", "3"]
    stats = sample_cli.run([*base, "--num-iter", "4", "--disa", "linear:6:2"])
    assert stats["method"] == "mar" and stats["num_iter"] == 4  # the generator's default
    # The tiny VAE's 8 x 8 grid: 64 tokens in 4 passes.
    assert stats["forward_passes"] == 4 and stats["step_compression"] == 64 / 4
    counts = reveal_counts(64, 4)
    steps = np.array([effective_steps(int(s), 950) for s in [6, 4, 3, 2]])
    assert stats["head_evaluations"] == int(np.sum(counts * steps))
    assert stats["denoiser_calls"] == int(np.sum(steps))
    with np.load(os.path.join(out, "samples.npz")) as f:
        assert f["images"].shape == (3, 32, 32, 3) and f["images"].dtype == np.uint8
    for method in ("ar", "sjd"):
        with pytest.raises(sample_cli.UsageError, match=f"--method {method} decodes causally"):
            sample_cli.run([*base, "--method", method])
    with pytest.raises(sample_cli.UsageError, match="--num-iter: num_iter must be in 1..64"):
        sample_cli.run([*base, "--num-iter", "65"])
    with pytest.raises(sample_cli.UsageError, match="--num-iter applies only with --method mar"):
        sample_cli.run([*base, "--method", "ar", "--num-iter", "4"])


def test_config_variants():
    from visgen.config import load_config_file

    tiny = load_config_file("configs/mar.py:tiny")
    assert tiny.generator.name == "mar" and tiny.generator.buffer_tokens == 4
    assert tiny.generator.head.name == "diffusion" and tiny.generator.head.scale == 1.955
    assert tiny.sample.clip == 950 and tiny.sample.cfg_schedule == "linear"
    full = load_config_file("configs/mar.py:size=L")
    assert (full.generator.width, full.generator.depth, full.generator.buffer_tokens) == (
        1024,
        16,
        64,
    )
    assert (full.generator.head.depth, full.generator.head.mlp_width) == (8, 1280)
    assert full.generator.head.scale == 0.2325 and full.optim.grad_clip == 3.0
    with pytest.raises(ValueError, match="size must be one of B, L, H"):
        load_config_file("configs/mar.py:size=XL")
