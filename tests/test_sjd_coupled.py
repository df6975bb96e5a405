"""Tests for coupled drafts (MC-SJD) and for SJD with a causal window head.

Losslessness is shown with the chi-square harness of `tests/sjd_harness.py`
against exactly enumerated distributions:

- a 1D toy (3 codes, 6 tokens: 729 sequences, categorical head) with both
  couplings, under CFG with a per-token schedule and under top-k with
  temperature; a broken coupling (the previous draft always kept: the
  coupling's own keep test skipped) fails the same test;
- a causal Token-Shuffle head (2 codes on a 2 x 6 grid in 2 x 2 windows: 4,096
  sequences in 3 steps of 4 tokens) with each coupling, CFG and top-p, and one
  with 3 codes on a 2 x 4 grid (6,561 sequences) under top-k.

(Coupled drafts on independent Token-Shuffle windows are in
`tests/test_sjd.py`.) Also: window 1 is plain AR with a causal head, greedy
SJD is greedy AR, the couplings' pieces are exact draws, the acceptance
counts add up, and the sampling CLI runs SJD on a causal generator.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import HEAD_VARIANTS, TOKENIZER_CONFIGS
from flax import nnx
from sjd_harness import ALPHA, TRUNK, exact_probs, key, labels, p_value, random_model

from visgen.generators import ARGenerator, CategoricalOptions, WindowOptions
from visgen.sampling import (
    METHODS,
    SampleOptions,
    UnsupportedHead,
    acceptance_rates,
    require,
    sample,
    sjd,
    sjd_drafts,
)
from visgen.sampling.sjd import sample_sjd

SAMPLES, GRID_SAMPLES = 20_000, 60_000
THREEFRY = "threefry2x32"  # a causal head's draws need it (`sjd_harness.key`)
PLAIN = SampleOptions()
CFG = SampleOptions(cfg_scale=3.0, cfg_schedule="linear")


@pytest.fixture(scope="module")
def toy() -> ARGenerator:
    """3 codes, 6 tokens in a row, large random weights."""
    return random_model(0.5, vocab_size=3, layout=(6,), num_classes=2, **TRUNK)


def _causal(vocab: int, layout: tuple[int, int]) -> ARGenerator:
    head = {"name": "token_shuffle", "window": 2, "causal": True}
    return random_model(0.5, vocab_size=vocab, layout=layout, num_classes=2, head=head, **TRUNK)


@pytest.fixture(scope="module")
def causal() -> ARGenerator:
    """2 codes, a 2 x 6 grid in causal 2 x 2 windows: 3 steps of 4 tokens."""
    return _causal(2, (2, 6))


TOP_K = SampleOptions(temperature=0.8, head=CategoricalOptions(top_k=2))
# (options, init, window, coupling)
TOY_CASES = {
    "maximal_cfg_linear": (CFG, "repeat_prev", 4, "maximal"),
    "gumbel_cfg_linear": (CFG, "random", 4, "gumbel"),
    "maximal_top_k": (TOP_K, "random", 3, "maximal"),
    "gumbel_top_k": (TOP_K, "repeat_prev", 3, "gumbel"),
}


@pytest.mark.parametrize("case", TOY_CASES)
def test_coupled_drafts_are_lossless(toy, case):
    options, init, window, coupling = TOY_CASES[case]
    tokens, stats = sample_sjd(
        toy, labels(SAMPLES), key(1), options, window=window, init=init, coupling=coupling
    )
    # Redrawn drafts (iteration >= 1) are tested and accepted, so the coupling matters.
    counts = stats["acceptance"]
    assert sum(counts["iteration_accepted"][1:]) > SAMPLES // 10
    assert p_value(tokens, exact_probs(toy, options)) > ALPHA


def test_a_coupling_that_skips_its_keep_test_fails(toy, monkeypatch):
    """Keeping every previous draft (no `min(1, q'(x) / q(x))` test) while storing the new
    `q` breaks exactness: the harness must see it."""
    monkeypatch.setattr(sjd, "maximal_coupling", lambda p, q, drafts, u_keep, u_draw: drafts)

    # A fresh function object: the patched trace must not reach the shared jit cache.
    def broken_loop(graphdef, state, cond, rng, options, window, init, coupling, max_passes):
        return sjd._sjd_loop(
            graphdef, state, cond, rng, options, window, init, coupling, max_passes
        )

    loop = jax.jit(broken_loop, static_argnums=(0, 4, 5, 6, 7))
    limit = jnp.int32(6)
    st = loop(*nnx.split(toy), labels(SAMPLES), key(1), CFG, 4, "repeat_prev", "maximal", limit)
    assert p_value(st.tokens[:, :6, 0], exact_probs(toy, CFG)) < ALPHA


CAUSAL_CASES = {
    "none_cfg_linear": (CFG, "random", 2, "none"),
    "maximal": (PLAIN, "repeat_horizontal", 3, "maximal"),
    "gumbel_cfg_top_p": (
        SampleOptions(cfg_scale=2.0, temperature=0.8, head=WindowOptions(top_p=0.9)),
        "repeat_vertical",
        3,
        "gumbel",
    ),
}


@pytest.mark.parametrize("case", CAUSAL_CASES)
def test_sjd_with_a_causal_window_head_is_lossless(causal, case):
    """A window's tokens are tested in order against the head's conditionals given the
    drafted prefix; at the first rejection the rest is drawn given the new prefix."""
    options, init, window, coupling = CAUSAL_CASES[case]
    tokens, stats = sample_sjd(
        causal,
        labels(GRID_SAMPLES),
        key(2, THREEFRY),
        options,
        window=window,
        init=init,
        coupling=coupling,
    )
    assert tokens.shape == (GRID_SAMPLES, 12)
    assert stats["accepted_drafts"] > GRID_SAMPLES // 10
    assert stats["forward_passes"] <= 3  # the prefill, then at most one pass per window
    counts = stats["acceptance"]
    # Tokens after a window's first rejection are not tested.
    assert counts["token_tested"][0] > counts["token_tested"][-1]
    assert p_value(tokens, exact_probs(causal, options)) > ALPHA


def test_sjd_with_a_causal_window_head_and_top_k_is_lossless():
    """3 codes under top-k 2: residuals and fresh tails stay inside the filtered support."""
    model = _causal(3, (2, 4))
    options = SampleOptions(cfg_scale=2.0, head=WindowOptions(top_k=2))
    tokens, stats = sample_sjd(
        model,
        labels(GRID_SAMPLES),
        key(3, THREEFRY),
        options,
        window=2,
        init="random",
        coupling="maximal",
    )
    # Whole windows are rarely accepted here, but their first tokens often are.
    assert stats["acceptance"]["token_accepted"][0] > GRID_SAMPLES // 10
    assert p_value(tokens, exact_probs(model, options)) > ALPHA


def test_causal_window_one_is_plain_ar_and_greedy_sjd_is_greedy_ar(causal):
    cond = jnp.array([0, 1, 1, 0, 1, 0, 0, 1], jnp.int32)
    options = SampleOptions(cfg_scale=2.0, cfg_schedule="half-linear")
    ar, _ = sample(causal, cond, key(4), options)
    tokens, stats = sample_sjd(causal, cond, key(4), options, window=1)
    np.testing.assert_array_equal(tokens, ar)
    assert stats["forward_passes"] == 3 and stats["accepted_drafts"] == 0
    greedy = SampleOptions(temperature=0.0, cfg_scale=2.0)
    ar, _ = sample(causal, cond, key(5), greedy)
    for coupling in ("maximal", "gumbel"):
        tokens, _ = sample_sjd(causal, cond, key(6), greedy, window=3, coupling=coupling)
        np.testing.assert_array_equal(tokens, ar)


def test_sjd_accepts_a_causal_head_and_refuses_coupled_independent_windows(causal):
    needs = METHODS["sjd"][1]
    assert needs == sjd.NEEDS
    require(causal.head, PLAIN, needs, "SJD")  # causal: conditionals in order
    independent = random_model(
        0.5, vocab_size=2, layout=(2, 4), num_classes=2, head={"name": "token_shuffle"}, **TRUNK
    )
    coupled = SampleOptions(head=WindowOptions(coupled=True))
    with pytest.raises(
        UnsupportedHead,
        match=r"SJD needs exact per-token probabilities .* or per-token probabilities "
        r"conditional on the step's earlier tokens .*; this generator's head is a 2 x 2 "
        r"window head with coupled draws",
    ):
        sample_sjd(independent, labels(2), key(0), coupled, window=2)


# --- the couplings' pieces, and the counts ---------------------------------------------


def test_maximal_coupling_draws_p_and_keeps_the_draft_as_often_as_possible():
    rng = np.random.default_rng(0)
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.4, 0.3, 0.2, 0.1])
    count = 200_000
    drafts = rng.choice(4, size=count, p=q).astype(np.int32)
    u = rng.uniform(size=(2, count)).astype(np.float32)
    out = sjd_drafts.maximal_coupling(
        jnp.broadcast_to(p, (count, 4)), jnp.broadcast_to(q, (count, 4)), drafts, u[0], u[1]
    )
    out = np.asarray(out)
    observed = np.bincount(out, minlength=4)
    assert scipy.stats.chisquare(observed, p * count).pvalue > ALPHA
    # The draft survives with probability 1 - TV(p, q) = 0.6, the most any coupling allows.
    assert abs((out == drafts).mean() - 0.6) < 0.005


def test_gumbel_noise_is_keyed_by_position_not_iteration():
    base = key(0)
    first = sjd_drafts.position_gumbel(base, jnp.array([[3, 4], [3, 4]]), (2, 5))
    later = sjd_drafts.position_gumbel(base, jnp.array([[4, 5], [9, 3]]), (2, 5))
    np.testing.assert_array_equal(first[0, 1], later[0, 0])  # row 0, step 4
    np.testing.assert_array_equal(first[1, 0], later[1, 1])  # row 1, step 3
    assert not np.allclose(first[0], first[1])  # rows differ
    filtered = jnp.log(jnp.array([0.5, 0.5, 0.0]))
    assert int(sjd_drafts.gumbel_draw(filtered, jnp.array([0.0, 1.0, 9.0]), 1.0)) == 1


def test_acceptance_counts_add_up(toy, causal):
    for model, g in ((toy, 1), (causal, 4)):
        _, stats = sample_sjd(model, labels(32), key(7), CFG, window=4, coupling="maximal")
        counts = stats["acceptance"]
        assert len(counts["slot_tested"]) == 3 and len(counts["iteration_tested"]) == 4
        assert len(counts["token_tested"]) == g
        assert sum(counts["slot_accepted"]) == stats["accepted_drafts"]
        for kind in ("tested", "accepted"):
            assert sum(counts[f"iteration_{kind}"]) == sum(counts[f"slot_{kind}"])
        # Every accepted draft step accepted all its tokens; each test is one token's.
        assert sum(counts["token_accepted"]) >= g * stats["accepted_drafts"]
        assert sum(counts["token_tested"]) >= sum(counts["slot_tested"])
        assert 0 < counts["changed"] <= counts["redrawn"]
        rates = acceptance_rates(counts)
        assert 0.0 < rates.pop("changed") <= 1.0
        assert all(r is None or 0.0 <= r <= 1.0 for rates_ in rates.values() for r in rates_)


def test_coupled_drafts_flicker_less_and_are_accepted_more():
    """On high-entropy conditionals (an untrained model), independent redraws change almost
    every draft; coupled redraws keep most of them, so more drafts are accepted."""
    model = random_model(0.2, vocab_size=32, layout=(48,), num_classes=2, **TRUNK)
    stats = {
        c: sample_sjd(model, labels(32), key(8), window=8, coupling=c)[1]
        for c in ("none", "maximal", "gumbel")
    }
    changed = {c: acceptance_rates(s["acceptance"])["changed"] for c, s in stats.items()}
    assert changed["none"] > 0.85 and changed["maximal"] < 0.75 and changed["gumbel"] < 0.75
    for c in ("maximal", "gumbel"):
        assert stats[c]["accepted_drafts"] > stats["none"]["accepted_drafts"]


def test_sample_cli_runs_sjd_on_a_causal_generator(trained_workdir, tmp_path):
    from launch import sample as sample_cli

    tokenizer = trained_workdir(TOKENIZER_CONFIGS["vq2d"])
    workdir = trained_workdir(HEAD_VARIANTS["token_shuffle-causal"], tokenizer_workdir=tokenizer)
    argv = ["--workdir", workdir, "--num", "4", "--batch-size", "2", "--method", "sjd"]
    out = str(tmp_path / "sjd")
    argv += ["--sjd-window", "4", "--sjd-coupling", "gumbel", "--out", out]
    assert sample_cli.main(argv) == 0
    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    assert stats["sjd"] == {"window": 4, "init": "repeat_horizontal", "coupling": "gumbel"}
    assert stats["forward_passes"] <= 2 * 64 and stats["step_compression"] >= 1.0
    acceptance = stats["acceptance"]
    assert len(acceptance["slot"]) == 3 and len(acceptance["token"]) == 4
    assert len(acceptance["iteration"]) == 4
    assert sum(acceptance["counts"]["slot_accepted"]) == stats["accepted_drafts"]
    assert acceptance["changed"] is None or 0.0 <= acceptance["changed"] <= 1.0
    with pytest.raises(sample_cli.UsageError, match="apply only with --method sjd"):
        sample_cli.run(["--workdir", workdir, "--out", out, "--sjd-coupling", "none"])
