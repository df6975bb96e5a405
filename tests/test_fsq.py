"""FSQ (`visgen.quantizers.fsq`): ids round-trip over exactly prod(levels) codes, the
bound reaches every level, and the straight-through gradient is the identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.quantizers import make_quantizer
from visgen.quantizers.fsq import PAPER_LEVELS, round_ste


def _fsq(levels):
    return make_quantizer("fsq", dim=len(levels), rngs=nnx.Rngs(0), levels=levels)


@pytest.mark.parametrize("levels", [PAPER_LEVELS, (3, 4, 1, 2)])
def test_ids_round_trip_over_exactly_prod_levels_codes(levels):
    q = _fsq(levels)
    n = int(np.prod(levels))
    assert q.codebook_size == n
    codes = np.asarray(q.codes())
    assert codes.shape == (n, len(levels))
    # Every code is distinct, on the grid digit / floor(L / 2) in [-1, 1], and maps back to its id.
    assert len({tuple(c) for c in codes}) == n
    assert codes.min() >= -1.0 and codes.max() <= 1.0
    np.testing.assert_array_equal(np.asarray(q.indices(jnp.asarray(codes))), np.arange(n))
    # Each channel takes exactly its L values.
    for channel, level in enumerate(levels):
        assert len(np.unique(codes[:, channel])) == level


def test_quantizing_covers_every_level_and_ids_match_latents():
    q = _fsq(PAPER_LEVELS)
    z = jnp.asarray(np.random.default_rng(0).normal(scale=4.0, size=(4096, 6)), jnp.float32)
    out = q(z)
    bounded = np.round(np.asarray(q.bound(z)))
    for channel, level in enumerate(PAPER_LEVELS):
        # Even levels: -L/2 .. L/2 - 1 (the half-step offset); odd: -(L-1)/2 .. (L-1)/2.
        low = -(level // 2)
        high = level // 2 - 1 if level % 2 == 0 else level // 2
        np.testing.assert_array_equal(np.unique(bounded[:, channel]), np.arange(low, high + 1))
    np.testing.assert_allclose(q.embed(out.indices), out.latents, atol=1e-6)
    assert int(out.indices.max()) < q.codebook_size and int(out.indices.min()) >= 0
    assert 0.0 < float(out.stats["code_usage"]) <= 1.0
    assert float(out.stats["perplexity"]) > 1.0


def test_straight_through_gradient_is_the_identity_inside_the_bounds():
    x = jnp.linspace(-3.4, 3.4, 57)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(round_ste(x)))(x), np.ones(57))
    # Through the quantizer: d latents / d z = bound'(z) / floor(L / 2); rounding adds nothing.
    q = _fsq((8, 5))
    z = jnp.asarray(np.random.default_rng(1).normal(size=(32, 2)), jnp.float32)
    grad = jax.grad(lambda z: jnp.sum(q(z).latents))(z)
    bound_grad = jax.grad(lambda z: jnp.sum(q.bound(z)))(z)
    np.testing.assert_allclose(grad, bound_grad / jnp.asarray([4.0, 2.0]), rtol=1e-6)
    assert float(jnp.min(jnp.abs(grad))) > 0.0


def test_bad_levels_and_dims_are_refused():
    with pytest.raises(ValueError, match="must equal the number of levels"):
        make_quantizer("fsq", dim=4, rngs=nnx.Rngs(0), levels=(8, 5))
    with pytest.raises(ValueError, match="ints >= 1"):
        make_quantizer("fsq", dim=2, rngs=nnx.Rngs(0), levels=(8, 0))


def test_drop_quant_skips_the_rounding_for_whole_examples_in_training_only():
    q = make_quantizer("fsq", dim=2, rngs=nnx.Rngs(0), levels=(8, 5), drop_quant_p=0.5)
    z = jnp.asarray(np.random.default_rng(2).normal(size=(64, 3, 2)), jnp.float32)
    rounded = q(z).latents
    out = q(z, train=True, rng=jax.random.key(0))
    unrounded = np.asarray(q.bound(z) / jnp.asarray([4.0, 2.0]))
    skipped = np.all(np.isclose(out.latents, unrounded, atol=1e-6), axis=(1, 2))
    kept = np.all(np.isclose(out.latents, rounded, atol=1e-6), axis=(1, 2))
    # Every example is either wholly unrounded or wholly rounded, and both occur.
    assert np.all(skipped ^ kept) and 10 < skipped.sum() < 54
    np.testing.assert_array_equal(out.indices, q(z).indices)  # ids are always the codes
    with pytest.raises(ValueError, match="needs an rng"):
        q(z, train=True)
    with pytest.raises(ValueError, match=r"drop_quant_p must be in \[0, 1\)"):
        make_quantizer("fsq", dim=2, rngs=nnx.Rngs(0), levels=(8, 5), drop_quant_p=1.0)
