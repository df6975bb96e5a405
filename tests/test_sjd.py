"""Tests for speculative Jacobi decoding: exactness against plain AR, losslessness, the cache.

Losslessness is shown statistically on a model small enough to enumerate: 3 codes on a
2 x 3 grid (729 sequences; the grid makes `repeat_vertical` differ from
`repeat_horizontal`), whose exact sequence probabilities come from its
teacher-forced conditionals under the same guidance and filtering. Draws of
`SAMPLES` rows in one batched call are compared with them by a chi-square
goodness-of-fit test at significance level `ALPHA`; plain AR and SJD (every
draft initialisation, CFG with a per-token schedule, top-k with temperature)
must pass, and SJD with an accept-every-draft rule must fail. A Token-Shuffle model (2 codes
on a 2 x 6 grid in 2 x 2 windows: 4,096 sequences in 3 steps of 4 tokens) is checked the
same way, with more samples.
"""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from visgen.generators import ARGenerator, CategoricalOptions, WindowOptions, guide
from visgen.generators.categorical import filter_logits
from visgen.sampling import SampleOptions, UnsupportedHead, guidance_scale, sample, sjd
from visgen.sampling.sjd import sample_sjd
from visgen.token_spec import TokenSpec

VOCAB, LAYOUT, N = 3, (2, 3), 6
SAMPLES = 20_000
ALPHA = 1e-3  # per test: a correct sampler fails one with probability 0.1%
LABEL = 1
TRUNK = dict(width=16, depth=1, heads=2, mlp_multiple_of=16)


def _random_model(std: float, *, vocab_size: int, layout, **kwargs) -> ARGenerator:
    """`vocab_size` ids on `layout`, numpy random weights (`std`; norm scales near 1) on
    abstractly evaluated shapes."""
    spec = TokenSpec(kind="discrete", layout=tuple(layout), vocab_size=vocab_size, channels=8)
    abstract = nnx.eval_shape(lambda: ARGenerator(spec=spec, rngs=nnx.Rngs(0), **kwargs))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)

    def fill(path, x):
        mean = 1.0 if "weight" in jax.tree_util.keystr(path) else 0.0
        scale = 0.1 if mean else std
        return jnp.asarray(mean + scale * rng.normal(size=x.shape), jnp.float32)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


@pytest.fixture(scope="module")
def model() -> ARGenerator:
    """Large random weights: conditionals far from uniform and from each other."""
    return _random_model(0.5, vocab_size=VOCAB, layout=LAYOUT, num_classes=2, **TRUNK)


def _key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="unsafe_rbg")


@nnx.jit(static_argnames="options")
def _exact_probs_jit(model: ARGenerator, options: SampleOptions) -> jax.Array:
    vocab, n = model.spec.vocab_size, model.num_tokens
    seqs = jnp.asarray(list(itertools.product(range(vocab), repeat=n)), jnp.int32)
    cond = jnp.full((seqs.shape[0],), LABEL, jnp.int32)
    logits = model.logits(seqs, cond)
    if options.guided:
        uncond = model.logits(seqs, cond, drop=jnp.ones_like(cond, bool))
        # The schedule runs over steps: token i's step is its window's (itself unshuffled).
        g = model.tokens_per_step
        step_of = (jnp.arange(n) // g).reshape(1, model.num_steps, g)
        steps = model.trunk_input.from_steps(step_of)[0]
        scale = guidance_scale(
            options.cfg_schedule, options.cfg_scale, steps, model.num_steps, options.cfg_interval
        )
        logits = guide(logits, uncond, scale[:, None])
    head = options.head_options(model.head)  # top-k and top-p are the head's options
    filtered = filter_logits(logits / options.temperature, head.top_k, head.top_p)
    logp = jax.nn.log_softmax(filtered, axis=-1)
    return jnp.take_along_axis(logp, seqs[..., None], axis=-1)[..., 0]


def _exact_probs(model: ARGenerator, options: SampleOptions) -> np.ndarray:
    """Probability of each of the `V ** N` sequences (itertools.product order), from
    the teacher-forced conditionals after guidance, temperature and filtering."""
    picked = np.asarray(_exact_probs_jit(model, options), np.float64)
    return np.exp(picked.sum(axis=1))


def _p_value(tokens: jax.Array, probs: np.ndarray) -> float:
    """Chi-square goodness of fit of sampled sequences `[M, N]` to `probs`.

    Sequences expected fewer than 5 times are pooled into one bin (merged into
    the smallest other bin if the pool itself is under 5); a sample of a
    probability-0 sequence fails outright.
    """
    n = tokens.shape[1]
    vocab = round(probs.size ** (1 / n))
    index = np.asarray(tokens) @ (vocab ** np.arange(n - 1, -1, -1))
    observed = np.bincount(index, minlength=probs.size)
    assert observed[probs == 0].sum() == 0, "sampled a sequence of probability 0"
    expected = probs * observed.sum()
    small = expected < 5
    obs, exp = list(observed[~small]), list(expected[~small])
    if small.any():
        pool_obs, pool_exp = observed[small].sum(), expected[small].sum()
        if pool_exp < 5:
            i = int(np.argmin(exp))
            obs[i], exp[i] = obs[i] + pool_obs, exp[i] + pool_exp
        else:
            obs.append(pool_obs)
            exp.append(pool_exp)
    exp = np.asarray(exp) * sum(obs) / sum(exp)
    return float(scipy.stats.chisquare(obs, exp).pvalue)


LABELS = jnp.full((SAMPLES,), LABEL, jnp.int32)
PLAIN = SampleOptions()
CFG = SampleOptions(cfg_scale=3.0, cfg_schedule="linear")
TOP_K = SampleOptions(temperature=0.8, head=CategoricalOptions(top_k=2))


def test_test_model_is_far_from_uniform(model):
    probs = _exact_probs(model, PLAIN)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    # A uniform model gives 1/81 each; this one is skewed, and guidance changes it.
    assert probs.max() > 5 / probs.size and probs.min() < 0.2 / probs.size
    assert np.abs(_exact_probs(model, CFG) - probs).sum() > 0.2


def test_plain_ar_matches_the_exact_distribution(model):
    tokens, _ = sample(model, LABELS, _key(0), CFG)
    assert _p_value(tokens, _exact_probs(model, CFG)) > ALPHA


# (options, init, window): every init, guidance with a per-token schedule, top-k with
# temperature. The `CFG` case's compiled loop is shared with the cache test.
LOSSLESS_CASES = {
    "repeat_horizontal": (PLAIN, "repeat_horizontal", 4),
    "repeat_vertical": (PLAIN, "repeat_vertical", 4),
    "random_cfg_linear": (CFG, "random", 3),
    "top_k_temperature": (TOP_K, "repeat_vertical", 3),
}


@pytest.mark.parametrize("case", LOSSLESS_CASES)
def test_sjd_is_lossless(model, case):
    options, init, window = LOSSLESS_CASES[case]
    tokens, stats = sample_sjd(model, LABELS, _key(1), options, window=window, init=init)
    assert stats["accepted_drafts"] > SAMPLES  # drafts are accepted, so verification runs
    assert _p_value(tokens, _exact_probs(model, options)) > ALPHA


def test_accepting_every_draft_fails_the_same_test(model, monkeypatch):
    def accept_all(p, q, drafts, u):
        return jnp.full(drafts.shape[:1], drafts.shape[1], jnp.int32)

    monkeypatch.setattr(sjd, "accept_drafts", accept_all)

    # A fresh function object: the patched trace must not reach the shared jit cache.
    def broken_loop(graphdef, state, cond, rng, options, window, init, max_passes):
        return sjd._sjd_loop(graphdef, state, cond, rng, options, window, init, max_passes)

    loop = jax.jit(broken_loop, static_argnums=(0, 4, 5, 6))
    limit = jnp.int32(N)
    st = loop(*nnx.split(model), LABELS, _key(1), PLAIN, 4, "repeat_horizontal", limit)
    assert _p_value(st.tokens[:, :N, 0], _exact_probs(model, PLAIN)) < ALPHA


SHUFFLE_SAMPLES = 60_000


@pytest.fixture(scope="module")
def shuffled() -> ARGenerator:
    """2 codes, a 2 x 6 grid fused in 2 x 2 windows: 3 steps of 4 tokens each."""
    head = {"name": "token_shuffle", "window": 2}
    return _random_model(0.5, vocab_size=2, layout=(2, 6), num_classes=2, head=head, **TRUNK)


@pytest.mark.parametrize(
    "options, init, window",
    [(PLAIN, "repeat_horizontal", 3), (CFG, "random", 2)],
    ids=["repeat_horizontal", "random_cfg_linear"],
)
def test_sjd_on_token_shuffle_windows_is_lossless(shuffled, options, init, window):
    """A window step is accepted when all its tokens pass; the first failing step keeps
    the tokens that passed and redraws the rest: still exact."""
    labels = jnp.full((SHUFFLE_SAMPLES,), LABEL, jnp.int32)
    tokens, stats = sample_sjd(shuffled, labels, _key(2), options, window=window, init=init)
    assert tokens.shape == (SHUFFLE_SAMPLES, 12)
    assert stats["accepted_drafts"] > SHUFFLE_SAMPLES // 10
    assert stats["forward_passes"] <= 3  # the prefill, then at most one pass per step
    assert _p_value(tokens, _exact_probs(shuffled, options)) > ALPHA


def test_sjd_window_one_on_token_shuffle_is_plain_ar(shuffled):
    labels = jnp.array([0, 1, 1, 0], jnp.int32)
    ar, _ = sample(shuffled, labels, _key(3), CFG)
    tokens, stats = sample_sjd(shuffled, labels, _key(3), CFG, window=1)
    np.testing.assert_array_equal(tokens, ar)
    assert stats["forward_passes"] == 3 and stats["tokens_generated"] == 4 * 12
    # Plain AR's coupled windows are no product of per-token distributions to test.
    coupled = dataclasses.replace(CFG, head=WindowOptions(coupled=True))
    with pytest.raises(
        UnsupportedHead,
        match=r"SJD needs exact per-token probabilities .*"
        r"a 2 x 2 window head with coupled draws \(option coupled=True\)",
    ):
        sample_sjd(shuffled, labels, _key(3), coupled, window=2)


# --- exactness and the cache -----------------------------------------------------------


def test_window_one_is_plain_ar_token_for_token(model):
    ar, _ = sample(model, LABELS, _key(0), CFG)  # the compiled loop of the AR test above
    tokens, stats = sample_sjd(model, LABELS, _key(0), CFG, window=1)
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
    options, init, window = LOSSLESS_CASES["random_cfg_linear"]
    st = sjd.run_sjd(model, LABELS, _key(5), options, window, init, max_passes=1)
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
    text_model = _random_model(0.3, vocab_size=8, layout=(6,), text_dim=4, cls_token_num=2, **TRUNK)
    text = jax.random.normal(jax.random.key(0), (3, 2, 4))
    options = SampleOptions(temperature=0.0, cfg_scale=2.0)
    ar, _ = sample(text_model, text, _key(6), options)
    tokens, stats = sample_sjd(text_model, text, _key(7), options, window=4, init="repeat_prev")
    np.testing.assert_array_equal(tokens, ar)
    assert stats["forward_passes"] <= 6


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="window must be >= 1"):
        sample_sjd(model, LABELS[:2], _key(0), window=0)
    with pytest.raises(ValueError, match="valid: random, repeat_horizontal, repeat_vertical"):
        sample_sjd(model, LABELS[:2], _key(0), init="repeat_prev")
    with pytest.raises(ValueError, match="valid: random, repeat_prev"):
        sjd.check_sjd_args((16,), 4, "repeat_vertical")


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
    got = sjd._init_drafts(
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
