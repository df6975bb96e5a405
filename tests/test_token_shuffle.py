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
from test_ar_generator import TINY, _build, _cond, _tokens, shuffle_head, spec, train_losses

from launch import sample as sample_cli
from visgen.config import load_config_file
from visgen.generators import (
    ARGenerator,
    CategoricalHead,
    CategoricalOptions,
    WindowHead,
    WindowOptions,
    fused_layout,
    guide,
    shuffle,
    unshuffle,
)
from visgen.sampling import (
    SampleOptions,
    guidance_scale,
    sample,
    sample_no_cache,
    sample_sjd,
)
from visgen.tasks.generator import config_sample_options

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
    with pytest.raises(
        ValueError, match=r"the Token-Shuffle window 3 does not divide the token grid 4 x 6"
    ):
        fused_layout((4, 6), 3)
    with pytest.raises(ValueError, match=r"layout \(2, 4, 6\)"):
        fused_layout((2, 4, 6), 4)
    with pytest.raises(ValueError, match=r"layout \(16,\) is 1D"):
        fused_layout((16,), 2)
    assert fused_layout((16,), 1) == (16,)
    kwargs = dict(num_classes=10, **TINY)
    # At construction.
    with pytest.raises(
        ValueError, match=r"Token-Shuffle window 4 does not divide .* layout \(4, 6\)"
    ):
        ARGenerator(spec=spec((4, 6)), head=shuffle_head(4), rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match="is 1D, so a Token-Shuffle window of 2 does not apply"):
        ARGenerator(spec=spec((16,)), head=shuffle_head(2), rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match=r"width 32 is not divisible by window\^2 = 9"):
        nnx.eval_shape(
            lambda: ARGenerator(spec=spec((6, 6)), head=shuffle_head(3), rngs=nnx.Rngs(0), **kwargs)
        )
    # One token per window is the categorical head's job.
    with pytest.raises(ValueError, match="the token_shuffle head needs a window >= 2, got 1"):
        nnx.eval_shape(
            lambda: ARGenerator(spec=spec((4, 4)), head=shuffle_head(1), rngs=nnx.Rngs(0), **kwargs)
        )
    model = nnx.eval_shape(
        lambda: ARGenerator(spec=spec((4, 4)), head=shuffle_head(2), rngs=nnx.Rngs(0), **kwargs)
    )
    with pytest.raises(ValueError, match="teacher forcing takes all 16 tokens of layout"):
        model.logits(jnp.zeros((1, 8), jnp.int32), jnp.zeros((1,), jnp.int32))


# --- the fused generator -----------------------------------------------------------------


def _paths(model) -> dict[str, tuple[int, ...]]:
    state = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves_with_path(state)
    return {jax.tree_util.keystr(p).removesuffix(".value"): x.shape for p, x in leaves}


def test_the_plain_model_and_what_a_window_adds():
    # The categorical head: one token per step, steps are the raster tokens, no fusion.
    plain = _build()
    assert isinstance(plain.head, CategoricalHead) and not hasattr(plain.trunk_input, "fuse")
    assert plain.num_steps == plain.num_tokens == 16 and plain.tokens_per_step == 1
    assert plain.step_layout == plain.spec.layout == (4, 4)
    tokens = _tokens(plain, 2)
    steps = plain.trunk_input.to_steps(tokens)
    assert steps.shape == (2, 16, 1)
    np.testing.assert_array_equal(steps.reshape(2, -1), tokens)
    np.testing.assert_array_equal(plain.trunk_input.from_steps(steps), tokens)
    # A window adds only the fusion MLPs and the window head; the trunk, the condition
    # and the token embedding keep their names and shapes, the classifier its shape.
    shuffled = _paths(nnx.eval_shape(lambda: _build(head=shuffle_head())))
    plain_paths = _paths(plain)
    extra = {k for k in shuffled if k not in plain_paths}
    assert extra and all(k.startswith(("['trunk_input']['fuse']", "['head']")) for k in extra)
    kept = {k: v for k, v in plain_paths.items() if not k.startswith("['head']")}
    assert kept and all(shuffled.get(k) == v for k, v in kept.items())
    assert plain_paths["['head']['classifier']['output']['kernel']"] == (32, 64)
    assert shuffled["['head']['categorical']['output']['kernel']"] == (32, 64)
    assert shuffled["['trunk_input']['fuse']['compress']['fc2']['kernel']"] == (32, 8)  # D -> D/s^2


def _fused_full_and_cached(model, tokens, cond):
    """Teacher-forced logits `[B, N, V]`; the same from prefill + one-window decode steps;
    a two-window chunk decoded at step 0 (predicting windows 1 and 2)."""
    full = model.logits(tokens, cond)
    b, w = tokens.shape[0], model.tokens_per_step
    windows = model.trunk_input.to_steps(tokens)  # [B, M, s^2]
    hidden0, prefilled = model.prefill(cond, model.init_cache(b))
    logits0 = model.head.logits(hidden0[:, None])[:, 0]  # [B, s^2, V]
    out = jnp.zeros((b, model.num_steps, w, model.spec.vocab_size)).at[:, 0].set(logits0)

    def step(i, carry):
        out, cache = carry
        window = jax.lax.dynamic_slice_in_dim(windows, i, 1, axis=1)
        hidden, cache = model.decode_step(window, i, cache)
        logits = model.head.logits(hidden)  # [B, 1, s^2, V]
        return jax.lax.dynamic_update_slice_in_dim(out, logits, i + 1, axis=1), cache

    cached, _ = jax.lax.fori_loop(0, model.num_steps - 1, step, (out, prefilled))
    chunk = model.head.logits(model.decode_step(windows[:, :2], 0, prefilled)[0])
    return full, unshuffle(cached, model.spec.layout, model.trunk_input.window), chunk, cached


@pytest.mark.parametrize(
    "cond, layout, fused",
    [("class", (2, 4, 4), (2, 2, 2)), ("text", (4, 8), (2, 4))],
    ids=["class-video", "text-2d"],
)
def test_shuffled_kv_cache_matches_full_forward(cond, layout, fused):
    # A 2 x 2 spatial window: on a video grid (t, h, w) the window stays in a frame.
    model = _build(cond, layout, head=shuffle_head(2))
    assert model.step_layout == fused and model.max_len == model.prefix + 8 - 1
    assert model.tokens_per_step == 4 and model.trunk_input.window == 2
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
            lambda: ARGenerator(
                spec=spec((4, 4)),
                num_classes=10,
                head=shuffle_head(2, causal=causal),
                rngs=nnx.Rngs(0),
                **TINY,
            )  # fmt: skip
        )()
    assert isinstance(model.head, WindowHead) and model.head.causal == causal
    tokens, labels = _tokens(model, 4), _cond(model, 4)
    # The fusion MLPs on both sides learn, not only the trunk (from step 2: the zero
    # head, then the zero last layers of the residual blocks, pass no gradient before).
    losses, norms = train_losses(model, tokens, labels, norms_at=2)
    assert any("['trunk_input']['fuse']" in k for k in norms), norms
    assert any("['head']['unshuffle']" in k for k in norms), norms
    assert all(g > 0 for g in norms.values()), norms
    assert causal == any("context" in k for k in norms) == any("mix" in k for k in norms)
    np.testing.assert_allclose(losses[0], np.log(64), rtol=1e-5)  # zero head: uniform
    assert losses[-1] < 0.7 * losses[0], losses
    # The loss is the mean cross-entropy of every original token, from raster-order logits;
    # evaluation's per-token losses are those cross-entropies in raster order.
    logits, loss, per_token = nnx.jit(
        lambda m: (m.logits(tokens, labels), m.loss(tokens, labels), m.token_losses(tokens, labels))
    )(model)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(loss, ce.mean(), 1e-5)
    np.testing.assert_allclose(per_token, ce, rtol=1e-5, atol=1e-6)


# --- sampling ------------------------------------------------------------------------------


class CountingAR(ARGenerator):
    """Counts executed `prefill` and `decode_step` calls inside the jitted loop."""

    calls: list[int] = []

    def prefill(self, cond, cache, *, drop=None):
        jax.debug.callback(lambda: CountingAR.calls.append(1))
        return super().prefill(cond, cache, drop=drop)

    def decode_step(self, steps, pos, cache):
        jax.debug.callback(lambda: CountingAR.calls.append(1))
        return super().decode_step(steps, pos, cache)


def _reference_greedy(model, labels, options: SampleOptions) -> np.ndarray:
    """Greedy guided decoding from raster-order teacher forcing, window by window and,
    within a window, token by token (a causal window head reads the earlier ones)."""
    b, s = labels.shape[0], model.trunk_input.window
    order = np.asarray(shuffle(jnp.arange(model.num_tokens)[None], model.spec.layout, s))[0]
    tokens = jnp.zeros((b, model.num_tokens), jnp.int32)
    forward = nnx.jit(lambda m, t, drop: m.logits(t, labels, drop=drop))
    for step, window in enumerate(order):  # [M, s^2]: each window's raster indices
        scale = guidance_scale(options.cfg_schedule, options.cfg_scale, step, model.num_steps)
        for where in window:
            cond_logits = forward(model, tokens, jnp.zeros((b,), bool))[:, where]
            null_logits = forward(model, tokens, jnp.ones((b,), bool))[:, where]
            guided = guide(cond_logits, null_logits, scale)
            tokens = tokens.at[:, where].set(jnp.argmax(guided, -1))
    return np.asarray(tokens)


def test_shuffled_sampling_does_one_pass_per_window():
    model = _build(cls=CountingAR, layout=(4, 8), depth=1, head=shuffle_head(2))
    labels = jnp.array([1, 7, 3], jnp.int32)
    # Guided, greedy, Token-Shuffle's half-linear schedule over the 8 fused steps.
    options = SampleOptions(cfg_scale=3.0, cfg_schedule="half-linear", head=WindowOptions(top_k=1))
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
    model = _build(layout=(4, 4), head=shuffle_head(2, causal=True))
    tokens, labels = _tokens(model, 2), _cond(model, 2)
    forward = nnx.jit(lambda m, t: m.logits(t, labels))
    logits = np.asarray(forward(model, tokens))
    windows = np.asarray(shuffle(tokens, model.spec.layout, 2))  # [B, 4, 4]
    order = np.asarray(shuffle(jnp.arange(16)[None], model.spec.layout, 2))[0]  # fused -> raster
    for j in range(4):
        # Changing the last window's tokens j.. (no later window reads them through the
        # trunk) leaves its slot j's logits alone and moves its later ones.
        changed = windows.copy()
        changed[:, -1, j:] = (changed[:, -1, j:] + 1) % model.spec.vocab_size
        raster = unshuffle(jnp.asarray(changed), model.spec.layout, 2)
        other = np.asarray(forward(model, raster))
        last = order.reshape(4, 4)[-1]  # the last window's slots -> raster indices
        np.testing.assert_allclose(other[:, last[: j + 1]], logits[:, last[: j + 1]], atol=1e-6)
        if j < 3:
            assert not np.allclose(other[:, last[3]], logits[:, last[3]], atol=1e-4)
    # A causal window needs a window of several tokens (configs/ar.py refuses the variant
    # `causal` without `shuffle=S`: test_config_shuffle_variant_and_schedule).
    with pytest.raises(ValueError, match="needs a window >= 2"):
        nnx.eval_shape(lambda: _build(head=shuffle_head(1, causal=True)))
    with pytest.raises(ValueError, match="its logits need the windows' tokens"):
        model.head.logits(jnp.zeros((1, 4, 32)))


def test_causal_window_sampling_draws_each_token_after_the_earlier_ones():
    model = _build(layout=(4, 8), depth=1, head=shuffle_head(2, causal=True))
    labels = jnp.array([1, 7, 3], jnp.int32)
    options = SampleOptions(cfg_scale=3.0, cfg_schedule="half-linear", head=WindowOptions(top_k=1))
    tokens, stats = sample(model, labels, jax.random.key(0, impl="unsafe_rbg"), options)
    assert stats == {"forward_passes": 8, "tokens_generated": 3 * 32}
    # Greedy guided decoding token by token from teacher forcing draws the same tokens.
    np.testing.assert_array_equal(tokens, _reference_greedy(model, labels, options))
    # Stochastic draws: the cached loop and full recomputation agree.
    options = SampleOptions(cfg_scale=2.0, head=WindowOptions(top_k=8))
    key = jax.random.key(1, impl="unsafe_rbg")
    cached, _ = sample(model, labels, key, options)
    np.testing.assert_array_equal(sample_no_cache(model, labels, key, options)[0], cached)
    # SJD with one token per pass (no drafts) draws a causal window as plain AR does
    # (its losslessness with drafts is tested in test_sjd_coupled.py).
    np.testing.assert_array_equal(sample_sjd(model, labels, key, options, window=1)[0], cached)


# --- config, launcher and CLI -------------------------------------------------------------


def test_config_shuffle_variant_and_schedule():
    plain = load_config_file("configs/ar.py:tokenizer=vq2d,tiny")
    shuffled = load_config_file("configs/ar.py:tokenizer=vq2d,tiny,shuffle=2")
    assert plain.generator.head.to_dict() == {"name": "categorical"}
    assert shuffled.generator.head.to_dict() == {
        "name": "token_shuffle", "window": 2, "blocks": 2, "causal": False,
    }  # fmt: skip
    # The variant sets the schedule: Token-Shuffle's half-linear, else LlamaGen's constant.
    assert plain.sample.cfg_schedule == "constant"
    assert shuffled.sample.cfg_schedule == "half-linear"
    assert config_sample_options(plain).cfg_schedule == "constant"
    assert config_sample_options(shuffled).cfg_schedule == "half-linear"
    # A named schedule stays; an override wins, a None override leaves the config's value.
    with shuffled.unlocked():
        shuffled.sample.cfg_schedule = "linear"
    assert config_sample_options(shuffled).cfg_schedule == "linear"
    assert config_sample_options(shuffled, cfg_schedule=None).cfg_schedule == "linear"
    assert config_sample_options(shuffled, cfg_schedule="constant").cfg_schedule == "constant"
    # The tiny shuffled model samples with coupled windows and top-k 3; with the `causal`
    # window head (the demo's) with top-k 5, its windows drawn token by token.
    assert shuffled.sample.coupled and shuffled.sample.top_k == 3
    assert config_sample_options(shuffled).head == WindowOptions(top_k=3, coupled=True)
    causal = load_config_file("configs/ar.py:tokenizer=vq2d,tiny,shuffle=2,causal")
    assert causal.generator.head.causal and not shuffled.generator.head.causal
    assert not causal.sample.coupled and causal.sample.top_k == 5
    assert config_sample_options(causal).head == WindowOptions(top_k=5, coupled=False)
    # The categorical head has no `coupled` option.
    assert "coupled" not in plain.sample
    assert config_sample_options(plain).head == CategoricalOptions()
    with pytest.raises(ValueError, match="unknown sampling option 'coupled'"):
        config_sample_options(plain, coupled=True)
    with pytest.raises(ValueError, match="needs shuffle=S > 1"):
        load_config_file("configs/ar.py:tokenizer=vq2d,tiny,causal")


@pytest.mark.slow
def test_shuffled_generator_trains_and_samples_through_the_cli(
    tmp_path, shapes_dir, launcher_env, capsys
):
    """vq2d tokens (8 x 8) -> `configs/ar.py:...,shuffle=2` -> `launch.sample`."""
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
        ["--config=configs/ar.py:tokenizer=vq2d,tiny,shuffle=2", f"--workdir={generator}",
         *common, f"--config.tokenizer_workdir={tokenizer}",
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
    assert stats["steps_per_sample"] == 16
    assert stats["options"]["cfg_schedule"] == "half-linear"  # the default with shuffling
    assert stats["options"]["coupled"] is True and stats["options"]["top_k"] == 3
    assert np.load(out / "samples.npz")["images"].shape == (6, 32, 32, 3)
    # SJD verifies whole windows: a fused model samples in at most one pass per window.
    speculative = tmp_path / "sjd"
    assert sample_cli.main([*argv[:-1], str(speculative), "--method", "sjd"]) == 0
    stats = json.loads((speculative / "stats.json").read_text())
    assert stats["forward_passes"] <= 2 * 16 and stats["tokens_generated"] == 6 * 64
    # The config's coupled-window default falls back to independent draws under SJD.
    assert stats["options"]["coupled"] is False and stats["options"]["top_k"] == 3
    # Step compression counts windows, plain AR's steps: 2 batches of 16.
    assert stats["step_compression"] == pytest.approx(2 * 16 / stats["forward_passes"])
    assert np.load(speculative / "samples.npz")["images"].shape == (6, 32, 32, 3)
    # Coupled windows asked for on the command line are refused under SJD, naming why.
    refused = tmp_path / "refused"
    argv = [*argv[:-1], str(refused), "--method", "sjd", "--coupled-windows"]
    capsys.readouterr()
    assert sample_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error: --method sjd needs exact per-token probabilities" in err
    assert "coupled draws (option coupled=True)" in err and err.rstrip().endswith("--method ar")
    assert not refused.exists()
