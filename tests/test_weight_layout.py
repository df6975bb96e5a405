"""Decode loops reading large kernels transposed (`visgen.sampling.weight_layout`).

The transposed copies are a speed-only change: the same tokens must come out
with and without them, for plain AR and for speculative Jacobi decoding.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_ar_model
from flax import nnx

from visgen.generators import ARGenerator, CategoricalOptions
from visgen.sampling import SampleOptions, ar, sample, sample_sjd, weight_layout


@pytest.fixture(scope="module")
def model() -> ARGenerator:
    """Width 64, 4 x 4 tokens, 1,024 codes: with `MIN_SIZE` lowered to 2^12, every
    kernel (attention, MLP, head) is streamed transposed."""
    return random_ar_model(
        vocab_size=1024, layout=(4, 4), width=64, depth=1, heads=2, mlp_multiple_of=64
    )


@pytest.fixture
def small_min_size(monkeypatch):
    monkeypatch.setattr(weight_layout, "MIN_SIZE", 2**12)


def test_only_large_kernels_are_transposed_and_the_inverse_restores_them(model, small_min_size):
    state = nnx.state(model)
    rows = weight_layout.to_rows_layout(state)
    transposed = 0
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(rows), strict=True
    ):
        if "kernel" in jax.tree_util.keystr(path) and x.size >= 2**12:
            transposed += 1
            np.testing.assert_array_equal(y, x.T)
        else:
            np.testing.assert_array_equal(y, x)
    assert transposed >= 5  # qkv, out, w1, w2, w3, head: else the test is vacuous
    back = weight_layout.from_rows_layout(rows, state)
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("method", ["ar", "sjd"])
def test_transposed_decode_weights_give_the_same_tokens(model, small_min_size, monkeypatch, method):
    labels = jnp.array([1, 7], jnp.int32)
    options = SampleOptions(cfg_scale=3.0, head=CategoricalOptions(top_k=50))
    key = jax.random.key(0, impl="unsafe_rbg")
    draw = {"ar": sample, "sjd": lambda *a: sample_sjd(*a, window=4)}[method]
    tokens = {}
    for enabled in (True, False):
        monkeypatch.setattr(weight_layout, "transposed_decode_weights", lambda e=enabled: e)
        jax.clear_caches()  # the loops read the setting at trace time
        tokens[enabled] = np.asarray(draw(model, labels, key, options)[0])
    np.testing.assert_array_equal(tokens[True], tokens[False])
    assert len(np.unique(tokens[True])) > 4  # not a degenerate constant draw


def _weight_dots(hlo: str, contracting: int) -> int:
    """Unbatched dots of the compiled program contracting the weight's dim `contracting`."""
    dots = re.findall(r" dot\(.*", hlo)
    return sum(f"rhs_contracting_dims={{{contracting}}}" in d and "batch" not in d for d in dots)


def _weights_first_dots(hlo: str, rows: int) -> int:
    """Unbatched dots whose result is `[N, rows]`: the weights are the left operand."""
    return len(re.findall(rf"= f32\[\d+,{rows}\]\{{[\d,]+\}} dot\(", hlo))


def test_only_the_decode_loop_reads_the_transposed_copies(model, small_min_size, monkeypatch):
    graphdef, state = nnx.split(model)
    counts = {}
    for enabled in (True, False):
        monkeypatch.setattr(weight_layout, "transposed_decode_weights", lambda e=enabled: e)
        jax.clear_caches()
        hlo = (
            ar._decode_loop_jit.lower(
                graphdef, state, jnp.array([1, 7]), jax.random.key(0, impl="unsafe_rbg"),
                options=SampleOptions(), use_cache=True,
            )
            .compile()
            .as_text()
        )  # fmt: skip
        counts[enabled] = (_weight_dots(hlo, 1), _weight_dots(hlo, 0), _weights_first_dots(hlo, 2))
    # Six kernels (qkv, out, w1, w2, w3, head): the prefill reads `[K, N]` either way; the
    # loop body reads the `[N, K]` copies only when enabled (XLA did not fold them away), as
    # the dots' left operand (`[N, 2]` results for the 2 rows; XLA did not swap them back).
    assert counts[False] == (0, 12, 0)
    assert counts[True] == (6, 6, 6)
