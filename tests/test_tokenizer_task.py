"""The tokenizer task's loss terms and evaluation, on a tiny TiTok."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.tasks.tokenizer import TokenizerLossConfig, TokenizerTask
from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from visgen.train.state import init_state, make_train_step, split_model

TINY = dict(
    name="titok", image_size=16, patch_size=4, width=32, depth=1, heads=2,
    num_tokens=4, codebook_size=16, token_dim=4,
)  # fmt: skip


def _images(n: int, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, 16, 16, 3)), jnp.float32)


def test_gan_step_updates_generator_discriminator_and_lecam():
    loss = TokenizerLossConfig(gan_weight=0.1, gan_start=0, disc_channels=8, disc_layers=1)
    task = TokenizerTask(TINY, loss, "float32")
    optim = OptimConfig(lr=1e-3, warmup_steps=0)
    tx = make_optimizer(optim, 10)
    state, frozen = init_state(task, tx, seed=0)
    graphdef = split_model(task.build(nnx.Rngs(0)))[0]
    step = jax.jit(make_train_step(graphdef, task, tx, learning_rate_schedule(optim, 10), 0.9))
    new, metrics = step(state, frozen, {"image": _images(4)})
    assert int(new.nonfinite_step) == -1
    assert {"gan_g_loss", "gan_d_loss", "recon_loss", "commitment"} <= set(metrics)
    for part in ("tokenizer", "discriminator"):
        before, after = state.params[part], new.params[part]
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after)
        assert any(jax.tree.leaves(changed)), f"{part} parameters did not move"
    lecam_before = jax.tree.leaves(state.rest["lecam"])
    lecam_after = jax.tree.leaves(new.rest["lecam"])
    assert any(bool(jnp.any(a != b)) for a, b in zip(lecam_before, lecam_after, strict=True))


def test_eval_counts_only_masked_examples_and_reports_codebook_stats():
    task = TokenizerTask(TINY, TokenizerLossConfig(), "float32")
    model = task.build(nnx.Rngs(0))
    x = _images(4, seed=1)
    full = task.eval_batch(model, {"image": x, "mask": jnp.array([True, True, True, True])})
    half = task.eval_batch(model, {"image": x, "mask": jnp.array([True, True, False, False])})
    first = task.eval_batch(model, {"image": x[:2], "mask": jnp.array([True, True])})
    assert float(full["frames"]) == 4 and float(half["frames"]) == 2
    for key in ("squared_error", "psnr_sum", "ssim_sum", "code_histogram"):
        np.testing.assert_allclose(half[key], first[key], rtol=1e-5, err_msg=key)
    summary = task.eval_summary(jax.device_get(full))
    assert float(full["code_histogram"].sum()) == 4 * TINY["num_tokens"]
    assert 0 < summary["codebook_usage"] <= 1 and summary["perplexity"] >= 1
    assert summary["psnr"] == pytest.approx(
        10 * np.log10(255**2 / (float(full["squared_error"]) / float(full["pixels"]))), rel=1e-5
    )
