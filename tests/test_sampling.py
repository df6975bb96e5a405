"""Tests for the AR sampling loop: determinism, greedy decoding, CFG and its schedules.

One tiny class-conditional model (one layer, 4 x 4 tokens, 64 codes) shared by the file;
each distinct `SampleOptions` compiles its own loop, so the tests use few.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import random_ar_model
from flax import nnx
from sjd_harness import ALPHA

from visgen.generators import ARGenerator, CategoricalOptions, guide
from visgen.generators.categorical import draw_step, filter_logits
from visgen.sampling import SampleOptions, ar, guidance_scale, sample, sample_no_cache

N = 16


@pytest.fixture(scope="module")
def model() -> ARGenerator:
    return random_ar_model(
        vocab_size=64, layout=(4, 4), width=32, depth=1, heads=2, mlp_multiple_of=32
    )


def _key(seed: int) -> jax.Array:
    # RBG keys compile faster on CPU than threefry; the loop takes any key.
    return jax.random.key(seed, impl="unsafe_rbg")


LABELS = jnp.array([1, 7, 3], jnp.int32)

# --- guidance schedules -----------------------------------------------------------------


def test_guidance_schedules():
    def curve(schedule, **kw):
        return [float(guidance_scale(schedule, 4.0, t, 16, **kw)) for t in (0, 4, 8, 15)]

    np.testing.assert_allclose(curve("constant"), [4.0, 4.0, 4.0, 4.0])
    # MAR's linear ramp 1 + (s - 1) t / N.
    np.testing.assert_allclose(curve("linear"), [1.0, 1.75, 2.5, 1 + 3 * 15 / 16])
    # Token-Shuffle's half-linear: 1 -> s over the first half, then s.
    np.testing.assert_allclose(curve("half-linear"), [1.0, 2.5, 4.0, 4.0])
    # Guidance only inside [start, end) of the steps; scale 1 outside.
    np.testing.assert_allclose(curve("constant", interval=(0.25, 0.75)), [1.0, 4.0, 4.0, 1.0])
    # Traced steps work (the scale is computed inside the jitted loop).
    traced = jax.jit(lambda t: guidance_scale("linear", 4.0, t, 16))(jnp.int32(8))
    np.testing.assert_allclose(traced, 2.5)
    c, u = jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0])
    np.testing.assert_allclose(guide(c, u, 3.0), [4.0, -2.0])
    np.testing.assert_allclose(guide(c, u, 1.0), c)
    with pytest.raises(ValueError, match="valid: constant, linear, half-linear"):
        guidance_scale("cosine", 4.0, 0, 16)
    with pytest.raises(ValueError, match="cfg_schedule"):
        SampleOptions(cfg_schedule="cosine")


def test_filter_logits_top_k_and_top_p():
    logits = jnp.log(jnp.array([[0.1, 0.4, 0.2, 0.3]]))
    top2 = filter_logits(logits, top_k=2)
    np.testing.assert_array_equal(np.isfinite(top2), [[False, True, False, True]])
    # Cumulative 0.4, 0.7, 0.9, 1.0: top_p 0.6 keeps up to the first token past 0.6.
    np.testing.assert_array_equal(
        np.isfinite(filter_logits(logits, top_p=0.6)), [[False, True, False, True]]
    )
    np.testing.assert_array_equal(
        np.isfinite(filter_logits(logits, top_p=0.75)), [[False, True, True, True]]
    )
    np.testing.assert_array_equal(
        np.isfinite(filter_logits(logits, top_k=3, top_p=0.3)), [[0, 1, 0, 0]]
    )
    kept = filter_logits(logits, top_k=2)
    np.testing.assert_allclose(kept[0, 1], logits[0, 1])


# --- the decode loop ------------------------------------------------------------------


def test_sampling_is_deterministic_and_matches_no_cache(model):
    tokens, stats = sample(model, LABELS, _key(0))
    assert tokens.shape == (3, N) and tokens.dtype == jnp.int32
    assert stats == {"forward_passes": N, "tokens_generated": 3 * N}
    np.testing.assert_array_equal(sample(model, LABELS, _key(0))[0], tokens)
    assert not np.array_equal(sample(model, LABELS, _key(1))[0], tokens)
    # Full recomputation draws the same tokens with the same per-step keys.
    no_cache, no_cache_stats = sample_no_cache(nnx.split(model), LABELS, _key(0))
    np.testing.assert_array_equal(no_cache, tokens)
    assert no_cache_stats == stats


def test_cache_segments_cover_each_step_once():
    for steps in (1, 2, 3, 16, 256):
        for count in (1, 3, 4, 8):
            segments = ar.cache_segments(steps, count)
            assert [i for lo, hi in segments for i in range(lo, hi)] == list(range(1, steps))
            assert len(segments) <= count
    assert ar.cache_segments(256, 4) == [(1, 65), (65, 129), (129, 192), (192, 256)]


def test_segmented_cache_draws_the_same_tokens(model, monkeypatch):
    options = SampleOptions(cfg_scale=3.0)

    def loops() -> int:
        graphdef, state = nnx.split(model)
        lowered = ar._decode_loop_jit.lower(
            graphdef, state, LABELS, _key(6), options=options, use_cache=True
        )
        return lowered.as_text().count("stablehlo.while")

    whole, whole_loops = sample(model, LABELS, _key(6), options)[0], loops()
    monkeypatch.setattr(ar, "SEGMENT_MIN_BYTES", 0)  # this model's cache is a few KB
    jax.clear_caches()  # the loop reads the setting at trace time
    segmented, segmented_loops = sample(model, LABELS, _key(6), options)[0], loops()
    assert segmented_loops == whole_loops + ar.CACHE_SEGMENTS - 1
    np.testing.assert_array_equal(segmented, whole)


def test_no_cache_loop_cut_to_its_first_steps(model):
    """`nocache_steps` (for benchmarks) runs the same loop's first steps only."""
    full, _ = sample_no_cache(model, LABELS, _key(2))
    graphdef, state = nnx.split(model)
    first = ar._decode_loop_jit(
        graphdef, state, LABELS, _key(2), options=SampleOptions(), use_cache=False,
        nocache_steps=5,
    )  # fmt: skip
    np.testing.assert_array_equal(first[:, :5], full[:, :5])
    assert not np.any(first[:, 5:])


def _reference_greedy(model, labels, options: SampleOptions) -> np.ndarray:
    """Greedy decoding by full teacher-forced forwards, one host step per token."""
    forward = nnx.jit(lambda m, t, c, d: m.logits(t, c, drop=d))
    b = labels.shape[0]
    tokens = np.zeros((b, N), np.int32)
    keep, null = jnp.zeros((b,), bool), jnp.ones((b,), bool)
    for i in range(N):
        logits = forward(model, jnp.asarray(tokens), labels, keep)[:, i]
        if options.guided:
            uncond = forward(model, jnp.asarray(tokens), labels, null)[:, i]
            scale = guidance_scale(
                options.cfg_schedule, options.cfg_scale, i, N, options.cfg_interval
            )
            logits = guide(logits, uncond, scale)
        tokens[:, i] = np.argmax(logits, axis=-1)
    return tokens


def test_top_k_1_is_greedy_with_and_without_cfg(model):
    options = SampleOptions(head=CategoricalOptions(top_k=1))
    greedy, _ = sample(model, LABELS, _key(3), options)
    np.testing.assert_array_equal(greedy, _reference_greedy(model, LABELS, options))
    # Guidance with a linear ramp on the first half of the steps, none after.
    options = SampleOptions(
        cfg_scale=3.0,
        cfg_schedule="linear",
        cfg_interval=(0, 0.5),
        head=CategoricalOptions(top_k=1),
    )
    guided, _ = sample(model, LABELS, _key(3), options)
    np.testing.assert_array_equal(guided, _reference_greedy(model, LABELS, options))
    assert not np.array_equal(guided, greedy)  # guidance changes this model's choices


def test_cfg_scale_one_equals_no_guidance(model):
    plain, _ = sample(model, LABELS, _key(5))
    assert not SampleOptions(cfg_scale=1.0, cfg_schedule="linear").guided
    # The doubled (conditional + null) batch with scale 1 on every step draws the same tokens.
    options = SampleOptions(cfg_scale=4.0, cfg_interval=(0.0, 0.0))
    assert options.guided
    np.testing.assert_array_equal(sample(model, LABELS, _key(5), options)[0], plain)


def test_coupled_windows_keep_each_tokens_distribution_and_couple_equal_ones():
    """Shared Gumbels: every token's marginal is its own softmax, equal rows agree."""
    rows = jnp.array(
        [[2.0, 1.0, 0.0, -1.0], [2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0], [-1.0, 0.5, 0.2, 0.0]]
    )  # [w=4, V=4]; tokens 0 and 1 share a distribution
    logits = jnp.broadcast_to(rows, (20_000, 4, 4))  # 20,000 windows, one row each
    plain = CategoricalOptions()
    coupled = np.asarray(draw_step(logits, _key(0), 1.0, plain, coupled=True))
    independent = np.asarray(draw_step(logits, _key(0), 1.0, plain))
    expected = np.asarray(jax.nn.softmax(rows, axis=-1), np.float64)

    def p_values(draws):  # each token's chi-square goodness of fit to its softmax
        counts = [np.bincount(draws[:, j], minlength=4) for j in range(4)]
        return [
            scipy.stats.chisquare(c, e / e.sum() * c.sum()).pvalue
            for c, e in zip(counts, expected, strict=True)
        ]

    for draws in (coupled, independent):
        assert min(p_values(draws)) > ALPHA / 4, p_values(draws)  # Bonferroni over 4 tokens
    # The control: the least likely token of each row made 1.47x as likely (3% -> 5% in the
    # first row), which an absolute tolerance of 0.015 let through, fails the same test.
    bump = jnp.where(rows == rows.min(axis=-1, keepdims=True), jnp.log(1.47), 0.0)
    broken = np.asarray(draw_step(logits + bump, _key(0), 1.0, plain, coupled=True))
    assert min(p_values(broken)) < ALPHA / 4
    assert (coupled[:, 0] == coupled[:, 1]).all()
    agree = expected[0] @ expected[1]  # how often independent draws agree (0.47)
    same = int((independent[:, 0] == independent[:, 1]).sum())
    assert scipy.stats.binomtest(same, len(independent), agree).pvalue > ALPHA
    # Top-k applies per token before the shared noise; temperature 0 is the argmax.
    top1 = draw_step(logits[:8], _key(1), 1.0, CategoricalOptions(top_k=1), coupled=True)
    np.testing.assert_array_equal(top1, np.broadcast_to([0, 0, 2, 1], (8, 4)))
    greedy = draw_step(logits[:8], _key(1), 0.0, plain, coupled=True)
    np.testing.assert_array_equal(greedy, np.broadcast_to([0, 0, 2, 1], (8, 4)))
    # One token per step (no window): the option changes nothing.
    single = logits[:64, :1]
    np.testing.assert_array_equal(
        draw_step(single, _key(2), 1.0, plain, coupled=True),
        draw_step(single, _key(2), 1.0, plain),
    )


def test_options_validation():
    # Top-k and top-p are the categorical head's options, checked there.
    with pytest.raises(ValueError, match="top_p"):
        CategoricalOptions(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SampleOptions(temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        CategoricalOptions(top_k=-1)
    assert SampleOptions(cfg_interval=[0, 1]).cfg_interval == (0.0, 1.0)
    # Static arguments of the jitted loop, the head's options included.
    hash(SampleOptions(cfg_interval=(0.1, 0.5), head=CategoricalOptions(top_k=3, top_p=0.5)))
