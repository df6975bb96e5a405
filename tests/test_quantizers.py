"""The quantizer protocol and registry: every registered quantizer built by name, its
documented shapes and dtypes under `jax.jit`, and the chain (gaussian -> vq).

One feature shape throughout (`[2, 5, 4]`, latent dim C = 4, 8 codes) so each
program compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.quantizers import (
    QUANTIZERS,
    Chain,
    DiagonalGaussian,
    Quantizer,
    VectorQuantizer,
    make_quantizer,
    quantizer_input_dim,
)

C, K = 4, 8
CHAIN = [dict(name="gaussian", kl_weight=1e-3), dict(name="vq", codebook_size=K)]
# Each registered quantizer's arguments, and what it is documented to produce:
# (kind, input channels, loss keys, stat keys).
CASES = {
    "vq": (
        dict(codebook_size=K),
        ("discrete", C, {"commitment", "codebook"}, {"perplexity", "code_usage"}),
    ),
    "gaussian": (
        dict(kl_weight=1e-3),
        ("continuous", 2 * C, {"kl"}, {"kl", "posterior_std"}),
    ),
    "chain": (
        dict(stages=CHAIN),
        (
            "discrete",
            2 * C,
            {"gaussian/kl", "vq/commitment", "vq/codebook"},
            {"gaussian/kl", "gaussian/posterior_std", "vq/perplexity", "vq/code_usage"},
        ),
    ),
    # 2 * 2 * 2 * 1 = K codes over C = 4 channels (a level of 1 is a constant channel).
    "fsq": (dict(levels=(2, 2, 2, 1)), ("discrete", C, set(), {"perplexity", "code_usage"})),
}
# Discrete quantizers with no codebook to revive.
NOT_REVIVABLE = {"fsq"}


def _features(channels: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(2, 5, channels)), jnp.float32)


def test_registry_names_and_a_useful_miss():
    assert QUANTIZERS.names() == sorted(CASES)
    assert QUANTIZERS.get("vq") is VectorQuantizer and QUANTIZERS.get("chain") is Chain
    assert QUANTIZERS.get("gaussian") is DiagonalGaussian
    with pytest.raises(
        KeyError, match="unknown quantizer 'lfq'; valid names: chain, fsq, gaussian, vq"
    ):
        make_quantizer("lfq", dim=C, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_make_quantizer_outputs_as_documented_under_jit(name):
    kwargs, (kind, input_dim, loss_keys, stat_keys) = CASES[name]
    q = make_quantizer(name, dim=C, rngs=nnx.Rngs(0), **kwargs)
    assert isinstance(q, Quantizer)
    assert (q.kind, q.dim, q.input_dim) == (kind, C, input_dim)
    assert q.codebook_size == (K if kind == "discrete" else 0)
    assert q.revivable == (kind == "discrete" and name not in NOT_REVIVABLE)
    # The encoder is sized from quantizer_input_dim before the quantizer exists.
    assert quantizer_input_dim(name, dim=C, **kwargs) == input_dim
    z = _features(input_dim)

    @nnx.jit
    def run(q, z, rng):
        return q(z, train=True, rng=rng), q(z)

    sampled, mode = run(q, z, jax.random.key(1))
    # A pure function of the split state under jax.jit, as the train and eval steps run it.
    graphdef, state = nnx.split(q)
    pure = jax.jit(lambda state, z: nnx.merge(graphdef, state)(z))(state, z)
    np.testing.assert_array_equal(pure.latents, mode.latents)
    for out in (sampled, mode):
        assert out.latents.shape == (2, 5, C) and out.latents.dtype == jnp.float32
        assert set(out.losses) == loss_keys and set(out.stats) == stat_keys
        assert all(v.shape == () for v in (*out.losses.values(), *out.stats.values()))
        if kind == "discrete":
            assert out.indices.shape == (2, 5) and out.indices.dtype == jnp.int32
        else:
            assert out.indices is None
    if kind == "discrete":
        codes = nnx.jit(lambda q: q.codes())(q)
        assert codes.shape == (K, C) and codes.dtype == jnp.float32
        embedded = nnx.jit(lambda q, i: q.embed(i))(q, mode.indices)
        # Ids alone give the latents the decoder reads (straight-through: up to rounding).
        np.testing.assert_allclose(embedded, mode.latents, atol=1e-6)
    else:
        with pytest.raises(ValueError, match="continuous"):
            q.embed(jnp.zeros((2, 5), jnp.int32))
        with pytest.raises(ValueError, match="continuous"):
            q.codes()


def test_chain_feeds_each_stage_the_previous_latents():
    chain = make_quantizer("chain", dim=C, rngs=nnx.Rngs(0), stages=CHAIN)
    moments = _features(2 * C, seed=1)

    @nnx.jit
    def run(chain, moments, rng):
        gaussian, vq = chain.stages
        out = chain(moments, train=True, rng=rng)
        # The same stages by hand: stage i draws with fold_in(rng, i).
        g = gaussian(moments, rng=jax.random.fold_in(rng, 0))
        return out, g, vq(g.latents)

    out, g, v = run(chain, moments, jax.random.key(3))
    np.testing.assert_array_equal(out.indices, v.indices)
    np.testing.assert_allclose(out.latents, v.latents, atol=1e-6)
    np.testing.assert_allclose(out.losses["gaussian/kl"], g.losses["kl"], rtol=1e-6)
    np.testing.assert_allclose(out.losses["vq/commitment"], v.losses["commitment"], rtol=1e-6)
    # The training call updated the vq stage's usage statistics (the hand call did not).
    assert float(jnp.sum(chain.stages[1].usage[...])) == pytest.approx(0.01, rel=1e-5)


def test_chain_revives_the_discrete_stage_on_the_gaussian_mode():
    chain = make_quantizer("chain", dim=C, rngs=nnx.Rngs(0), stages=CHAIN)
    gaussian, vq = chain.stages
    moments = _features(2 * C, seed=2).reshape(-1, 2 * C)
    reference = make_quantizer("vq", dim=C, rngs=nnx.Rngs(0), codebook_size=K)
    reference.codebook[...] = vq.codebook[...]
    nnx.jit(lambda q, f: q.revive(f, jax.random.key(0)))(chain, moments)
    # As if the vq alone had been revived on the Gaussian's mean (every code is unused).
    mean = gaussian.split(moments)[0]
    nnx.jit(lambda q, f: q.revive(f))(reference, mean)
    np.testing.assert_allclose(vq.codebook[...], reference.codebook[...], rtol=1e-6)


def test_chain_refuses_stages_that_do_not_fit():
    with pytest.raises(ValueError, match=r"stage 1 \(gaussian\) reads 8 channels"):
        make_quantizer("chain", dim=C, rngs=nnx.Rngs(0), stages=[CHAIN[1], CHAIN[0]])
    with pytest.raises(ValueError, match="at least one stage"):
        make_quantizer("chain", dim=C, rngs=nnx.Rngs(0), stages=[])
    with pytest.raises(ValueError, match="set by the chain's dim"):
        make_quantizer("chain", dim=C, rngs=nnx.Rngs(0), stages=[dict(CHAIN[1], dim=2)])


def test_a_repeated_stage_name_gets_its_index():
    stages = [*CHAIN, dict(name="vq", codebook_size=2 * K)]
    chain = make_quantizer("chain", dim=C, rngs=nnx.Rngs(0), stages=stages)
    assert chain.prefixes == ("gaussian", "vq1", "vq2")
    assert chain.codebook_size == 2 * K  # the last stage's
    out = nnx.jit(lambda q, z: q(z))(chain, _features(2 * C))
    assert {"vq1/commitment", "vq2/commitment"} <= set(out.losses)
    assert int(jnp.max(out.indices)) < 2 * K
