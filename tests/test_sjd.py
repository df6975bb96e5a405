"""Tests for speculative Jacobi decoding: exactness against plain AR, losslessness, the cache.

Losslessness is shown statistically with the chi-square harness of
`tests/sjd_harness.py` on a model small enough to enumerate: 3 codes on a
2 x 3 grid (729 sequences; the grid makes `repeat_vertical` differ from
`repeat_horizontal`). Draws of `SAMPLES` rows in one batched call are
compared with the exact distribution; plain AR and SJD (every draft
initialisation, each coupling, CFG with a per-token schedule, top-k with
temperature) must pass, and SJD with an accept-every-draft rule must fail. A
Token-Shuffle model (2 codes on a 2 x 6 grid in 2 x 2 windows: 4,096 sequences
in 3 steps of 4 tokens) is checked the same way, with more samples. Coupled
drafts on a 1D model and SJD with a causal window head are in
`tests/test_sjd_coupled.py`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sjd_harness import ALPHA, TRUNK, exact_probs, key, labels, p_value, random_model

from visgen.generators import ARGenerator, CategoricalOptions, WindowOptions
from visgen.sampling import SampleOptions, UnsupportedHead, sample, sjd, sjd_drafts
from visgen.sampling.sjd import sample_sjd

VOCAB, LAYOUT, N = 3, (2, 3), 6
SAMPLES = 20_000


@pytest.fixture(scope="module")
def model() -> ARGenerator:
    """Large random weights: conditionals far from uniform and from each other."""
    return random_model(0.5, vocab_size=VOCAB, layout=LAYOUT, num_classes=2, **TRUNK)


LABELS = labels(SAMPLES)
PLAIN = SampleOptions()
CFG = SampleOptions(cfg_scale=3.0, cfg_schedule="linear")
TOP_K = SampleOptions(temperature=0.8, head=CategoricalOptions(top_k=2))


def test_test_model_is_far_from_uniform(model):
    probs = exact_probs(model, PLAIN)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    # A uniform model gives 1/81 each; this one is skewed, and guidance changes it.
    assert probs.max() > 5 / probs.size and probs.min() < 0.2 / probs.size
    assert np.abs(exact_probs(model, CFG) - probs).sum() > 0.2


def test_plain_ar_matches_the_exact_distribution(model):
    tokens, _ = sample(model, LABELS, key(0), CFG)
    assert p_value(tokens, exact_probs(model, CFG)) > ALPHA


# (options, init, window, coupling): every init and coupling, guidance with a per-token
# schedule, top-k with temperature. The `CFG` case's compiled loop is shared with the
# cache test.
LOSSLESS_CASES = {
    "repeat_horizontal": (PLAIN, "repeat_horizontal", 4, "none"),
    "repeat_vertical_maximal": (PLAIN, "repeat_vertical", 4, "maximal"),
    "random_cfg_linear_gumbel": (CFG, "random", 3, "gumbel"),
    "top_k_temperature_maximal": (TOP_K, "repeat_vertical", 3, "maximal"),
}


@pytest.mark.parametrize("case", LOSSLESS_CASES)
def test_sjd_is_lossless(model, case):
    options, init, window, coupling = LOSSLESS_CASES[case]
    tokens, stats = sample_sjd(
        model, LABELS, key(1), options, window=window, init=init, coupling=coupling
    )
    assert stats["accepted_drafts"] > SAMPLES  # drafts are accepted, so verification runs
    assert p_value(tokens, exact_probs(model, options)) > ALPHA


# The negative controls: the same harness, with SJD broken to accept every draft, under
# each kind of options the lossless cases use (guidance, top-k with temperature) and on
# Token-Shuffle windows, so each of those tests is shown able to fail.
BROKEN_CASES = {
    "plain": ("model", PLAIN, "repeat_horizontal", 4),
    "cfg_linear": ("model", CFG, "random", 3),
    "top_k_temperature": ("model", TOP_K, "repeat_vertical", 3),
    "token_shuffle": ("shuffled", PLAIN, "repeat_horizontal", 3),
}


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_accepting_every_draft_fails_the_same_test(case, request, monkeypatch):
    fixture, options, init, window = BROKEN_CASES[case]
    generator = request.getfixturevalue(fixture)

    def accept_all(p, q, drafts, u):
        return jnp.full(drafts.shape[:1], drafts.shape[1], jnp.int32)

    monkeypatch.setattr(sjd, "accept_drafts", accept_all)

    # A fresh function object: the patched trace must not reach the shared jit cache.
    def broken_loop(graphdef, state, cond, rng, options, window, init, coupling, max_passes):
        return sjd._sjd_loop(
            graphdef, state, cond, rng, options, window, init, coupling, max_passes
        )

    loop = jax.jit(broken_loop, static_argnums=(0, 4, 5, 6, 7))
    steps = generator.num_steps
    count = SAMPLES if fixture == "model" else SHUFFLE_SAMPLES
    st = loop(
        *nnx.split(generator), labels(count), key(1), options, window, init, "none",
        jnp.int32(steps),
    )  # fmt: skip
    tokens = generator.trunk_input.from_steps(st.tokens[:, :steps])
    assert tokens.shape == (count, generator.num_tokens)
    probs = exact_probs(generator, options)
    if (probs == 0).any():  # top-k: drafts outside the top k are accepted too
        with pytest.raises(AssertionError, match="sampled a sequence of probability 0"):
            p_value(tokens, probs)
    else:
        assert p_value(tokens, probs) < ALPHA


SHUFFLE_SAMPLES = 60_000


@pytest.fixture(scope="module")
def shuffled() -> ARGenerator:
    """2 codes, a 2 x 6 grid fused in 2 x 2 windows: 3 steps of 4 tokens each."""
    head = {"name": "token_shuffle", "window": 2}
    return random_model(0.5, vocab_size=2, layout=(2, 6), num_classes=2, head=head, **TRUNK)


@pytest.mark.parametrize(
    "options, init, window, coupling",
    [
        (PLAIN, "repeat_horizontal", 3, "none"),
        (CFG, "random", 2, "maximal"),
        (CFG, "repeat_horizontal", 3, "gumbel"),
    ],
    ids=["repeat_horizontal", "random_cfg_linear_maximal", "cfg_linear_gumbel"],
)
def test_sjd_on_token_shuffle_windows_is_lossless(shuffled, options, init, window, coupling):
    """A window step is accepted when all its tokens pass; the first failing step keeps
    the tokens that passed and redraws the rest: still exact, with coupled drafts too."""
    cond = labels(SHUFFLE_SAMPLES)
    tokens, stats = sample_sjd(
        shuffled, cond, key(2), options, window=window, init=init, coupling=coupling
    )
    assert tokens.shape == (SHUFFLE_SAMPLES, 12)
    assert stats["accepted_drafts"] > SHUFFLE_SAMPLES // 10
    assert stats["forward_passes"] <= 3  # the prefill, then at most one pass per step
    assert p_value(tokens, exact_probs(shuffled, options)) > ALPHA


def test_sjd_window_one_on_token_shuffle_is_plain_ar(shuffled):
    cond = jnp.array([0, 1, 1, 0], jnp.int32)
    ar, _ = sample(shuffled, cond, key(3), CFG)
    tokens, stats = sample_sjd(shuffled, cond, key(3), CFG, window=1)
    np.testing.assert_array_equal(tokens, ar)
    assert stats["forward_passes"] == 3 and stats["tokens_generated"] == 4 * 12
    # Plain AR's coupled windows are no product of per-token distributions to test.
    coupled = dataclasses.replace(CFG, head=WindowOptions(coupled=True))
    with pytest.raises(
        UnsupportedHead,
        match=r"SJD needs exact per-token probabilities .*"
        r"a 2 x 2 window head with coupled draws \(option coupled=True\)",
    ):
        sample_sjd(shuffled, cond, key(3), coupled, window=2)


# --- exactness and the cache -----------------------------------------------------------


def test_window_one_is_plain_ar_token_for_token(model):
    ar, _ = sample(model, LABELS, key(0), CFG)  # the compiled loop of the AR test above
    tokens, stats = sample_sjd(model, LABELS, key(0), CFG, window=1)
    np.testing.assert_array_equal(tokens, ar)
    assert stats["forward_passes"] == N and stats["step_compression"] == 1.0
    assert stats["accepted_drafts"] == 0


@nnx.jit
def _fresh_cache(model: ARGenerator, labels: jax.Array, tokens: jax.Array):
    """The cache after a prefill and steps `tokens` `[B, N - 1, 1]`: `[B, 2, ...]`
    (conditional, null)."""
    b = labels.shape[0]
    cond, drop = jnp.concatenate([labels, labels]), jnp.arange(2 * b) >= b
    _, cache = model.prefill(cond, model.init_cache(2 * b), drop=drop)
    _, cache = model.decode_step(jnp.concatenate([tokens, tokens]), 0, cache)
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(2, b, *x.shape[1:]), 0, 1), cache)


def test_cache_after_a_rejection_equals_a_fresh_prefill(model):
    options, init, window, coupling = LOSSLESS_CASES["random_cfg_linear_gumbel"]
    st = sjd.run_sjd(model, LABELS, key(5), options, window, init, 1, coupling)
    pos = np.asarray(st.pos)
    assert (pos < 1 + window).mean() > 0.5, "most rows should reject a draft in pass 1"
    # Cache position `c + i` holds token `i`'s keys and values, and causal attention makes
    # them depend on tokens `<= i` only: positions before `c + pos - 1` (the prefix and the
    # committed tokens fed so far; the last committed token is fed by the next pass) must
    # match a fresh run, whatever stale drafts follow them.
    fresh = _fresh_cache(model, LABELS, st.tokens[:, : N - 1])
    verified = np.arange(model.max_len)[None, :] < model.prefix + pos[:, None] - 1
    for got, want in zip(st.cache, fresh, strict=True):
        for name in ("k", "v"):
            # Caches are `[B, G, H, S, Dh]` (heads-first): compare the first `max_len` positions.
            diff = np.abs(np.asarray(got[name][:, :, :, : model.max_len]) - np.asarray(want[name]))
            assert np.where(verified[:, None, None, :, None], diff, 0.0).max() < 1e-5


def test_text_conditions_and_a_1d_layout_greedy():
    """Greedy SJD (every draft is checked against the argmax) gives greedy AR's tokens."""
    text_model = random_model(0.3, vocab_size=8, layout=(6,), text_dim=4, cls_token_num=2, **TRUNK)
    text = jax.random.normal(jax.random.key(0), (3, 2, 4))
    options = SampleOptions(temperature=0.0, cfg_scale=2.0)
    ar, _ = sample(text_model, text, key(6), options)
    tokens, stats = sample_sjd(text_model, text, key(7), options, window=4, init="repeat_prev")
    np.testing.assert_array_equal(tokens, ar)
    assert stats["forward_passes"] <= 6


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="window must be >= 1"):
        sample_sjd(model, LABELS[:2], key(0), window=0)
    with pytest.raises(ValueError, match="valid: random, repeat_horizontal, repeat_vertical"):
        sample_sjd(model, LABELS[:2], key(0), init="repeat_prev")
    with pytest.raises(ValueError, match="valid: random, repeat_prev"):
        sjd.check_sjd_args((16,), 4, "repeat_vertical")
    with pytest.raises(ValueError, match="unknown SJD coupling 'exact'; valid: none, maximal"):
        sample_sjd(model, LABELS[:2], key(0), coupling="exact")


@pytest.mark.parametrize("init, width", [("repeat_horizontal", 1), ("repeat_vertical", 3)])
def test_repeat_inits_copy_the_previous_or_upper_token(init, width):
    """The vectorised copy equals filling slot by slot (`t - width`; `t - 1` in row 0)."""
    layout, length = (4, 3), 6
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, (5, 12 + length)).astype(np.int32)
    pos = np.array([1, 1, 3, 5, 9])[:, None]
    slots = pos + np.arange(length - 1)
    fill = slots >= pos + np.array([0, 3, 1, 4, 2])[:, None]  # a suffix of each window
    want = tokens.copy()
    for row, t in zip(*np.nonzero(fill), strict=True):
        t = slots[row, t]
        want[row, t] = want[row, t - width if t >= width else t - 1]
    # Two tokens per step (a Token-Shuffle window's): a copy moves whole steps.
    steps = np.stack([tokens, tokens + 50], axis=-1)
    got = sjd_drafts.init_drafts(
        jnp.asarray(steps), jnp.asarray(slots), jnp.asarray(fill), None, init, layout, 100
    )
    np.testing.assert_array_equal(got, np.stack([want, want + 50], axis=-1))


def test_inverse_cdf_draw_never_picks_a_zero_weight_token():
    weights = jnp.array([0.0, 0.2, 0.0, 0.5, 0.3, 0.0])
    u = jnp.array([0.0, 0.1999, 0.2, 0.7, 0.9999, 1.0])
    np.testing.assert_array_equal(sjd.inverse_cdf_draw(weights, u), [1, 1, 3, 4, 4, 4])
    # An evenly spaced grid of uniforms lands on each token in proportion to its weight.
    grid = (jnp.arange(1000) + 0.5) / 1000
    draws = sjd.inverse_cdf_draw(jnp.broadcast_to(weights, (1000, 6)), grid)
    np.testing.assert_array_equal(np.bincount(draws, minlength=6), [0, 200, 0, 500, 300, 0])
