"""The AR loop stopped early for a prefix (`sample(..., num_steps=s)`), as FlexTok's k-token
samples use it.

A causal model's first `s` steps do not read the later ones, so the loop cut to `s` steps
must draw exactly the full loop's first `s` steps' tokens (same seed; with guidance too,
whose schedule keeps its full length), leave the rest 0, and count `s` forward passes.
One tiny random 1D model (16 tokens, 64 codes) shared by the file.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_ar_model

from visgen.generators import ARGenerator
from visgen.sampling import SampleOptions, sample, sample_no_cache

N = 16
LABELS = jnp.array([1, 7, 3], jnp.int32)


@pytest.fixture(scope="module")
def model() -> ARGenerator:
    return random_ar_model(vocab_size=64, layout=(N,), width=32, depth=1, heads=2)


def _key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="unsafe_rbg")


@pytest.mark.parametrize(
    "options", [SampleOptions(), SampleOptions(cfg_scale=3.0, cfg_schedule="linear")]
)
def test_a_prefix_draws_the_full_draws_first_tokens_in_fewer_steps(model, options):
    full, full_stats = sample(model, LABELS, _key(4), options)
    assert full_stats == {"forward_passes": N, "tokens_generated": len(LABELS) * N}
    # The full draw uses more than one code past each prefix, so zeros there are a real check.
    assert len(np.unique(np.asarray(full)[:, 5:])) > 1
    for s in (1, 5, N - 1):
        prefix, stats = sample(model, LABELS, _key(4), options, num_steps=s)
        assert prefix.shape == full.shape
        np.testing.assert_array_equal(prefix[:, :s], full[:, :s])
        assert not np.any(prefix[:, s:])
        assert stats == {"forward_passes": s, "tokens_generated": len(LABELS) * s}


def test_the_no_cache_loop_stops_at_the_same_prefix(model):
    full, _ = sample(model, LABELS, _key(2))
    prefix, stats = sample_no_cache(model, LABELS, _key(2), num_steps=6)
    np.testing.assert_array_equal(prefix[:, :6], full[:, :6])
    assert not np.any(prefix[:, 6:]) and stats["forward_passes"] == 6


@pytest.mark.parametrize("bad", [0, N + 1, 2.0, True])
def test_a_bad_prefix_length_is_one_clear_error(model, bad):
    with pytest.raises(ValueError, match=rf"num_steps must be an int in 1..{N}"):
        sample(model, LABELS, _key(0), num_steps=bad)
