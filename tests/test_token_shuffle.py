"""Tests for Token-Shuffle: window order, the fused generator, its decoding and its config.

Tiny models (width 32, 2 heads, 64 codes, 16-32 tokens) with numpy random
weights from `test_ar_generator._build`, so XLA compile time dominates; the
launcher test at the end is marked slow.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_launcher
from flax import nnx
from test_ar_generator import TINY, _build, _cond, _tokens, train_losses

from launch import sample as sample_cli
from visgen.config import load_config_file
from visgen.generators import ARTransformer, TokenShuffleHead, fused_layout, shuffle, unshuffle
from visgen.sampling import (
    SampleOptions,
    guidance_scale,
    guide,
    sample,
    sample_no_cache,
    sample_sjd,
)
from visgen.tasks.generator import sample_settings

# --- window order ------------------------------------------------------------------------


def _dividing_windows(layout: tuple[int, ...]) -> list[int]:
    h, w = layout[-2:]
    return [s for s in range(1, min(h, w) + 1) if h % s == 0 and w % s == 0]


@pytest.mark.parametrize("layout", [(4, 4), (6, 12), (16, 16), (3, 4, 8)])
def test_shuffle_then_unshuffle_is_the_identity(layout):
    n = math.prod(layout)
    ids = jnp.arange(2 * n, dtype=jnp.int32).reshape(2, n)
    features = jnp.asarray(np.random.default_rng(0).normal(size=(2, n, 3)), jnp.float32)
    windows = _dividing_windows(layout)
    assert len(windows) >= 2  # every layout here has a window > 1
    for s in windows:
        fused = fused_layout(layout, s)
        assert math.prod(fused) * s * s == n and fused[:-2] == layout[:-2]
        grouped = shuffle(ids, layout, s)
        assert grouped.shape == (2, n // s**2, s * s)
        np.testing.assert_array_equal(unshuffle(grouped, layout, s), ids)
        np.testing.assert_array_equal(unshuffle(shuffle(features, layout, s), layout, s), features)


def test_windows_are_spatial_in_raster_order():
    # (4, 4) with s = 2: window 0 is the top-left 2 x 2 block, window 1 the next one right.
    grouped = shuffle(jnp.arange(16)[None], (4, 4), 2)[0]
    np.testing.assert_array_equal(grouped[:2], [[0, 1, 4, 5], [2, 3, 6, 7]])
    np.testing.assert_array_equal(grouped[3], [10, 11, 14, 15])
    # Video (t, h, w) = (2, 4, 4): windows stay inside a frame; frame 1 starts at window 4.
    video = shuffle(jnp.arange(32)[None], (2, 4, 4), 2)[0]
    assert fused_layout((2, 4, 4), 2) == (2, 2, 2)
    np.testing.assert_array_equal(video[4], [16, 17, 20, 21])


def test_bad_windows_fail_clearly():
    with pytest.raises(ValueError, match=r"shuffle_window=3 does not divide the token grid 4 x 6"):
        fused_layout((4, 6), 3)
    with pytest.raises(ValueError, match=r"layout \(2, 4, 6\)"):
        fused_layout((2, 4, 6), 4)
    with pytest.raises(ValueError, match=r"layout \(16,\) is 1D"):
        fused_layout((16,), 2)
    assert fused_layout((16,), 1) == (16,)
    kwargs = dict(num_classes=10, **TINY)
    # At construction, before any parameter exists.
    with pytest.raises(ValueError, match=r"shuffle_window=4 does not divide .* layout \(4, 6\)"):
        ARTransformer(layout=(4, 6), shuffle_window=4, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match="is 1D"):
        ARTransformer(layout=(16,), shuffle_window=2, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match="width 32 is not divisible by shuffle_window"):
        nnx.eval_shape(
            lambda: ARTransformer(layout=(6, 6), shuffle_window=3, rngs=nnx.Rngs(0), **kwargs)
        )
    model = nnx.eval_shape(
        lambda: ARTransformer(layout=(4, 4), shuffle_window=2, rngs=nnx.Rngs(0), **kwargs)
    )
    with pytest.raises(ValueError, match="reads whole windows"):
        model(jnp.zeros((1, 8), jnp.int32), jnp.zeros((1,), jnp.int32))


# --- the fused generator -----------------------------------------------------------------


def _paths(model) -> dict[str, tuple[int, ...]]:
    state = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves_with_path(state)
    return {jax.tree_util.keystr(p).removesuffix(".value"): x.shape for p, x in leaves}


def test_window_one_is_the_plain_model():
    plain, one = _build(), _build(shuffle_window=1)
    assert one.shuffle_in is None and one.num_steps == one.num_tokens == 16
    # The same graph and the same parameters (the same names, shapes and values).
    assert nnx.graphdef(plain) == nnx.graphdef(one)
    assert _paths(plain) == _paths(one)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(plain), nnx.state(one))
    tokens = _tokens(one, 2)
    np.testing.assert_array_equal(one.to_fused(tokens), tokens)
    # A window adds only the fusion MLPs; the trunk, embedding and classifier keep their shapes.
    shuffled = _paths(nnx.eval_shape(lambda: _build(shuffle_window=2)))
    extra = {k for k in shuffled if k not in _paths(plain)}
    assert extra and all(k.startswith(("['shuffle_in']", "['head']")) for k in extra)
    assert shuffled["['head']['categorical']['output']['kernel']"] == (32, 64)
    assert shuffled["['shuffle_in']['compress']['fc2']['kernel']"] == (32, 8)  # D -> D / s^2


def _fused_full_and_cached(model, tokens, cond):
    """Teacher-forced logits `[B, N, V]`; the same from prefill + one-window decode steps;
    a two-window chunk decoded at step 0 (predicting windows 1 and 2)."""
    full = model(tokens, cond)
    b, w = tokens.shape[0], model.window_tokens
    fused = model.to_fused(tokens)
    logits0, prefilled = model.prefill(cond, model.init_cache(b))
    out = jnp.zeros((b, model.num_steps, w, model.vocab_size)).at[:, 0].set(logits0)

    def step(i, carry):
        out, cache = carry
        window = jax.lax.dynamic_slice_in_dim(fused, i * w, w, axis=1)
        logits, cache = model.decode_step(window, i, cache)
        return jax.lax.dynamic_update_slice_in_dim(out, logits, i + 1, axis=1), cache

    cached, _ = jax.lax.fori_loop(0, model.num_steps - 1, step, (out, prefilled))
    chunk = model.decode_step(fused[:, : 2 * w], 0, prefilled)[0]
    return full, unshuffle(cached, model.layout, model.shuffle_window), chunk, cached


@pytest.mark.parametrize(
    "cond, layout, fused",
    [("class", (2, 4, 4), (2, 2, 2)), ("text", (4, 8), (2, 4))],
    ids=["class-video", "text-2d"],
)
def test_shuffled_kv_cache_matches_full_forward(cond, layout, fused):
    # A 2 x 2 spatial window: on a video grid (t, h, w) the window stays in a frame.
    model = _build(cond, layout, shuffle_window=2)
    assert model.fused_layout == fused and model.max_len == model.prefix + 8 - 1
    tokens, c = _tokens(model, 2), _cond(model, 2)
    full, cached, chunk, fused_cached = nnx.jit(_fused_full_and_cached)(model, tokens, c)
    assert full.shape == (2, 32, 64) and full.dtype == jnp.float32
    assert float(jnp.std(full)) > 0.1  # the logits vary
    np.testing.assert_allclose(cached, full, atol=1e-5)
    np.testing.assert_allclose(chunk, fused_cached[:, 1:3], atol=1e-5)
    # The four tokens of a window get different predictions from one hidden state.
    assert not np.allclose(fused_cached[:, :, 0], fused_cached[:, :, 1])


@pytest.mark.parametrize("causal", [False, True], ids=["independent", "causal-window"])
def test_shuffled_training_reduces_loss_on_every_token(causal):
    with jax.default_prng_impl("unsafe_rbg"):
        model = nnx.jit(
            lambda: ARTransformer(
                layout=(4, 4),
                num_classes=10,
                shuffle_window=2,
                causal_window=causal,
                rngs=nnx.Rngs(0),
                **TINY,
            )  # fmt: skip
        )()
    assert isinstance(model.head, TokenShuffleHead) and model.head.causal == causal
    tokens, labels = _tokens(model, 4), _cond(model, 4)
    # The fusion MLPs on both sides learn, not only the trunk (from step 2: the zero
    # head, then the zero last layers of the residual blocks, pass no gradient before).
    losses, norms = train_losses(model, tokens, labels, norms_at=2)
    assert any("shuffle_in" in k for k in norms) and all(g > 0 for g in norms.values()), norms
    assert causal == any("context" in k for k in norms) == any("mix" in k for k in norms)
    np.testing.assert_allclose(losses[0], np.log(64), rtol=1e-5)  # zero head: uniform
    assert losses[-1] < 0.7 * losses[0], losses
    # The loss is the mean cross-entropy of every original token, from raster-order logits.
    logits = nnx.jit(lambda m: m(tokens, labels))(model)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)
    np.testing.assert_allclose(nnx.jit(lambda m: m.loss(tokens, labels))(model), ce.mean(), 1e-5)


# --- sampling ------------------------------------------------------------------------------


class CountingAR(ARTransformer):
    """Counts executed `prefill` and `decode_step` calls inside the jitted loop."""

    calls: list[int] = []

    def prefill(self, cond, cache, *, drop=None):
        jax.debug.callback(lambda: CountingAR.calls.append(1))
        return super().prefill(cond, cache, drop=drop)

    def decode_step(self, tokens, pos, cache):
        jax.debug.callback(lambda: CountingAR.calls.append(1))
        return super().decode_step(tokens, pos, cache)


def _reference_greedy(model, labels, options: SampleOptions) -> np.ndarray:
    """Greedy guided decoding from raster-order teacher forcing, window by window and,
    within a window, token by token (a causal window head reads the earlier ones)."""
    b, s = labels.shape[0], model.shuffle_window
    order = np.asarray(shuffle(jnp.arange(model.num_tokens)[None], model.layout, s))[0]
    tokens = jnp.zeros((b, model.num_tokens), jnp.int32)
    forward = nnx.jit(lambda m, t, drop: m(t, labels, drop=drop))
    for step, window in enumerate(order):  # [M, s^2]: each window's raster indices
        scale = guidance_scale(options.cfg_schedule, options.cfg_scale, step, model.num_steps)
        for where in window:
            cond_logits = forward(model, tokens, jnp.zeros((b,), bool))[:, where]
            null_logits = forward(model, tokens, jnp.ones((b,), bool))[:, where]
            guided = guide(cond_logits, null_logits, scale)
            tokens = tokens.at[:, where].set(jnp.argmax(guided, -1))
    return np.asarray(tokens)


def test_shuffled_sampling_does_one_pass_per_window():
    model = _build(cls=CountingAR, layout=(4, 8), depth=1, shuffle_window=2)
    labels = jnp.array([1, 7, 3], jnp.int32)
    # Guided, greedy, Token-Shuffle's half-linear schedule over the 8 fused steps.
    options = SampleOptions(top_k=1, cfg_scale=3.0, cfg_schedule="half-linear")
    CountingAR.calls = []
    tokens, stats = sample(model, labels, jax.random.key(0, impl="unsafe_rbg"), options)
    jax.effects_barrier()
    assert len(CountingAR.calls) == 32 // 2**2 == 8
    assert stats == {"forward_passes": 8, "tokens_generated": 3 * 32}
    assert tokens.shape == (3, 32) and tokens.dtype == jnp.int32
    np.testing.assert_array_equal(tokens, _reference_greedy(model, labels, options))
    # Full recomputation draws the same tokens; so does a stochastic draw with the same key.
    no_cache, no_cache_stats = sample_no_cache(
        model, labels, jax.random.key(0, impl="unsafe_rbg"), options
    )
    np.testing.assert_array_equal(no_cache, tokens)
    assert no_cache_stats == stats


def test_causal_window_head_reads_only_earlier_tokens_of_the_window():
    model = _build(layout=(4, 4), shuffle_window=2, causal_window=True)
    tokens, labels = _tokens(model, 2), _cond(model, 2)
    logits = np.asarray(nnx.jit(lambda m, t: m(t, labels))(model, tokens))
    windows = np.asarray(shuffle(tokens, model.layout, 2))  # [B, 4, 4]
    order = np.asarray(shuffle(jnp.arange(16)[None], model.layout, 2))[0]  # fused -> raster
    for j in range(4):
        # Changing the last window's tokens j.. (no later window reads them through the
        # trunk) leaves its slot j's logits alone and moves its later ones.
        changed = windows.copy()
        changed[:, -1, j:] = (changed[:, -1, j:] + 1) % model.vocab_size
        raster = unshuffle(jnp.asarray(changed), model.layout, 2)
        other = np.asarray(nnx.jit(lambda m, t: m(t, labels))(model, raster))
        last = order.reshape(4, 4)[-1]  # the last window's slots -> raster indices
        np.testing.assert_allclose(other[:, last[: j + 1]], logits[:, last[: j + 1]], atol=1e-6)
        if j < 3:
            assert not np.allclose(other[:, last[3]], logits[:, last[3]], atol=1e-4)
    with pytest.raises(ValueError, match="needs shuffle_window > 1"):
        nnx.eval_shape(lambda: _build(causal_window=True))
    with pytest.raises(ValueError, match="need the window's tokens"):
        model.head.logits(jnp.zeros((1, 4, 32)))


def test_causal_window_sampling_draws_each_token_after_the_earlier_ones():
    model = _build(layout=(4, 8), depth=1, shuffle_window=2, causal_window=True)
    labels = jnp.array([1, 7, 3], jnp.int32)
    options = SampleOptions(top_k=1, cfg_scale=3.0, cfg_schedule="half-linear")
    tokens, stats = sample(model, labels, jax.random.key(0, impl="unsafe_rbg"), options)
    assert stats == {"forward_passes": 8, "tokens_generated": 3 * 32}
    # Greedy guided decoding token by token from teacher forcing draws the same tokens.
    np.testing.assert_array_equal(tokens, _reference_greedy(model, labels, options))
    # Stochastic draws: the cached loop and full recomputation agree.
    options = SampleOptions(cfg_scale=2.0, top_k=8)
    key = jax.random.key(1, impl="unsafe_rbg")
    cached, _ = sample(model, labels, key, options)
    np.testing.assert_array_equal(sample_no_cache(model, labels, key, options)[0], cached)
    with pytest.raises(ValueError, match="causal window head"):
        sample_sjd(model, labels, key, options, window=2)


# --- config, launcher and CLI -------------------------------------------------------------


def test_config_shuffle_variant_and_auto_schedule():
    plain = load_config_file("configs/ar.py:tokenizer=vq2d,tiny")
    shuffled = load_config_file("configs/ar.py:tokenizer=vq2d,tiny,shuffle=2")
    assert plain.generator.shuffle_window == 1 and shuffled.generator.shuffle_window == 2
    assert plain.sample.cfg_schedule == shuffled.sample.cfg_schedule == "auto"
    assert sample_settings(plain)["cfg_schedule"] == "constant"
    assert sample_settings(shuffled)["cfg_schedule"] == "half-linear"
    # A window set on the command line moves the default too; a named schedule stays.
    with plain.unlocked():
        plain.generator.shuffle_window = 4
    assert sample_settings(plain)["cfg_schedule"] == "half-linear"
    with shuffled.unlocked():
        shuffled.sample.cfg_schedule = "linear"
    assert sample_settings(shuffled)["cfg_schedule"] == "linear"
    SampleOptions(**sample_settings(shuffled))
    # The tiny shuffled model samples with coupled windows and top-k 3; with the `causal`
    # window head (the demo's) with top-k 5, its windows drawn token by token.
    assert shuffled.sample.coupled_windows and shuffled.sample.top_k == 3
    causal = load_config_file("configs/ar.py:tokenizer=vq2d,tiny,shuffle=2,causal")
    assert causal.generator.causal_window and not shuffled.generator.causal_window
    assert not causal.sample.coupled_windows and causal.sample.top_k == 5
    with pytest.raises(ValueError, match="needs shuffle=S > 1"):
        load_config_file("configs/ar.py:tokenizer=vq2d,tiny,causal")


@pytest.mark.slow
def test_shuffled_generator_trains_and_samples_through_the_cli(tmp_path, shapes_dir, launcher_env):
    """vq2d tokens (8 x 8) -> `--config.generator.shuffle_window=2` -> `launch.sample`."""
    tokenizer, generator = str(tmp_path / "vq2d"), str(tmp_path / "ar")
    common = [f"--config.data.data_dir={shapes_dir}", "--config.data.batch_size=8"]
    done = run_launcher(
        ["--config=configs/vq2d.py:tiny", f"--workdir={tokenizer}", *common,
         "--config.train.steps=2", "--config.train.eval_every=0",
         "--config.tokenizer.width=32", "--config.tokenizer.depth=1",
         "--config.tokenizer.heads=2", "--config.tokenizer.patch_size=4"],
        launcher_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_launcher(
        ["--config=configs/ar.py:tokenizer=vq2d,tiny", f"--workdir={generator}", *common,
         f"--config.tokenizer_workdir={tokenizer}", "--config.generator.shuffle_window=2",
         "--config.train.steps=2", "--config.train.eval_every=2",
         "--config.train.eval_examples=16", "--config.generator.width=32",
         "--config.generator.depth=1", "--config.generator.heads=2",
         "--config.preview_per_class=1"],
        launcher_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "frequency_baseline_cross_entropy" in done.stdout
    out = tmp_path / "samples"
    argv = ["--workdir", generator, "--num", "6", "--batch-size", "3", "--out", str(out)]
    assert sample_cli.main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    # Two batches of 64 tokens, 16 windows of 2 x 2 each: 16 forward passes per batch.
    assert stats["forward_passes"] == 2 * 16 and stats["tokens_generated"] == 6 * 64
    assert stats["options"]["cfg_schedule"] == "half-linear"  # the default with shuffling
    assert np.load(out / "samples.npz")["images"].shape == (6, 32, 32, 3)
    # SJD verifies whole windows: a fused model samples in at most one pass per window.
    speculative = tmp_path / "sjd"
    assert sample_cli.main([*argv[:-1], str(speculative), "--method", "sjd"]) == 0
    stats = json.loads((speculative / "stats.json").read_text())
    assert stats["forward_passes"] <= 2 * 16 and stats["tokens_generated"] == 6 * 64
    # Step compression counts windows, plain AR's steps: 2 batches of 16.
    assert stats["step_compression"] == pytest.approx(2 * 16 / stats["forward_passes"])
    assert np.load(speculative / "samples.npz")["images"].shape == (6, 32, 32, 3)
