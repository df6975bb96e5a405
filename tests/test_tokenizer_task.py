"""The tokenizer task's loss terms, revival, text path and evaluation, on a tiny TiTok."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.nn.frozen import FrozenSnapshot
from visgen.tasks.tokenizer import TokenizerLossConfig, TokenizerModel, TokenizerTask
from visgen.tokenizers import make_tokenizer
from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from visgen.train.state import init_state, make_train_step, split_model

TINY = dict(
    name="titok", image_size=16, patch_size=4, width=32, depth=1, heads=2,
    num_tokens=4, token_dim=4, quantizer=dict(name="vq", codebook_size=16),
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


def _two_stage_task(loss: TokenizerLossConfig) -> TokenizerTask:
    """A two-stage TiTok task whose proxy (a vq2d on TiTok's 4 x 4 patch grid) is built
    here instead of read from a workdir."""
    proxy = make_tokenizer(
        "vq2d", image_size=16, backbone="vit", patch_size=4, width=16, depth=0, heads=2,
        token_dim=4, quantizer=dict(name="vq", codebook_size=8), rngs=nnx.Rngs(1),
    )  # fmt: skip
    task = TokenizerTask(TINY, loss, "float32")
    task.proxy = FrozenSnapshot(TokenizerModel(proxy))
    return task


def test_a_tokenizer_that_owns_its_objective_is_not_pixel_regressed():
    task = _two_stage_task(TokenizerLossConfig(recon_weight=1.0))
    model = task.build(nnx.Rngs(0))
    loss, metrics, _ = nnx.jit(task.loss)(model, {"image": _images(2)}, jax.random.key(0), 0)
    # The loss is the proxy cross-entropy plus the quantizer terms, whatever recon_weight;
    # the reconstruction through the proxy decoder is logged only.
    own = metrics["proxy_ce"] + metrics["commitment"] + metrics["codebook"]
    np.testing.assert_allclose(loss, own, rtol=1e-6)
    assert float(metrics["recon_loss"]) > 0 and "psnr" in metrics
    with pytest.raises(ValueError, match="its own objective"):
        gan = _two_stage_task(TokenizerLossConfig(gan_weight=0.1, disc_channels=8, disc_layers=1))
        gan.loss(gan.build(nnx.Rngs(0)), {"image": _images(2)}, jax.random.key(0), 0)


@pytest.mark.parametrize("quantizer", ["vq", "gaussian"])
def test_after_update_revives_codes_through_the_tokenizer_every_n_steps(quantizer):
    section = dict(name="vq", codebook_size=16) if quantizer == "vq" else dict(name="gaussian")
    task = TokenizerTask(
        dict(TINY, quantizer=section), TokenizerLossConfig(revive_every=3), "float32"
    )
    model = task.build(nnx.Rngs(0))
    before = jax.tree.map(jnp.copy, nnx.state(model))
    aux = {"x": _images(2), "text": None}
    update = nnx.jit(task.after_update)
    for step in (0, 1):  # revival runs on steps 2, 5, 8, ...
        update(model, {**aux, "step": jnp.asarray(step)}, jax.random.key(0))
    unchanged = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), before, nnx.state(model))
    assert all(jax.tree.leaves(unchanged))
    update(model, {**aux, "step": jnp.asarray(2)}, jax.random.key(0))
    if quantizer == "vq":
        # Every code is unused at first, so revival pulls each toward a batch feature.
        codebook = model.tokenizer.quantizer.codebook[...]
        assert bool(jnp.all(jnp.any(codebook != before["tokenizer"]["quantizer"]["codebook"], -1)))
    else:
        # A Gaussian has nothing to revive (`revivable` is False): nothing runs.
        assert not model.tokenizer.revivable
        unchanged = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), before, nnx.state(model))
        assert all(jax.tree.leaves(unchanged))


def test_a_text_conditioned_tokenizer_gets_the_batch_text_or_a_clear_error():
    task = TokenizerTask(TINY, TokenizerLossConfig(), "float32")
    model = task.build(nnx.Rngs(0))
    x, mask = _images(2), jnp.array([True, True])
    plain = task.eval_batch(model, {"image": x, "mask": mask})
    # Declare the tokenizer text-conditioned (TiTok itself ignores the text it is given).
    model.tokenizer.spec = dataclasses.replace(model.tokenizer.spec, needs_text=True)
    with pytest.raises(ValueError, match="text-conditioned .* no 'text'"):
        task.eval_batch(model, {"image": x, "mask": mask})
    with pytest.raises(ValueError, match="text-conditioned .* no 'text'"):
        task.loss(model, {"image": x}, jax.random.key(0), 0)
    text = jnp.zeros((2, 3, 8), jnp.float32)  # encoded captions [B, L, D]
    with_text = task.eval_batch(model, {"image": x, "mask": mask, "text": text})
    np.testing.assert_allclose(with_text["squared_error"], plain["squared_error"], rtol=1e-6)
