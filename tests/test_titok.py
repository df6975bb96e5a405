"""Tests for TiTok and its parts: patchify, the ViT, the VQ and Gaussian bottlenecks.

Tiny configs only (32 px, patch 4, width 32, depth 1, K = 8, 64 codes) so the
file runs in well under a minute on two CPU cores. At this size XLA compile
time, not compute, dominates: shapes of every variant are checked by abstract
evaluation, and the numerics on three built models whose forwards each run as
one `nnx.jit` program.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.nn.patchify import patchify, unpatchify
from visgen.nn.vit import Attention, attention
from visgen.quantizers import DiagonalGaussian, VectorQuantizer
from visgen.tokenizers import TOKENIZERS, Tokenizer, make_tokenizer

TINY = dict(
    image_size=32,
    patch_size=4,
    width=32,
    depth=1,
    heads=2,
    num_tokens=8,
    token_dim=4,
)
VIDEO = dict(num_frames=4, tubelet=2)
# The `quantizer` section of each bottleneck the tests build.
QUANTIZER = {
    "vq": dict(name="vq", codebook_size=64),
    "gaussian": dict(name="gaussian"),
    "chain": dict(name="chain", stages=[dict(name="gaussian"), dict(name="vq", codebook_size=64)]),
}


def _np_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# --- patchify -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, patch",
    [((2, 8, 12, 3), (4, 4)), ((2, 4, 8, 8, 3), (2, 4, 4))],
    ids=["image", "video"],
)
def test_patchify_roundtrip(shape, patch):
    # numpy input: patchify is pure reshape/transpose, so no XLA compile is needed.
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    tokens = patchify(x, patch)
    grid = tuple(s // p for s, p in zip(shape[1:-1], patch, strict=True))
    assert tokens.shape == (shape[0], math.prod(grid), math.prod(patch) * 3)
    # The first token is the top-left (earliest) patch, flattened as (*patch, C).
    first = x[(0, *(slice(0, p) for p in patch))]
    np.testing.assert_array_equal(tokens[0, 0], first.reshape(-1))
    np.testing.assert_array_equal(unpatchify(tokens, grid, patch, 3), x)


def test_patchify_rejects_indivisible_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(np.zeros((1, 10, 8, 3)), (4, 4))
    with pytest.raises(ValueError, match="not divisible"):
        patchify(np.zeros((1, 3, 8, 8, 3)), (2, 4, 4))
    with pytest.raises(ValueError, match="spatial axes"):
        patchify(np.zeros((1, 8, 8, 3)), (2, 4, 4))


# --- attention ------------------------------------------------------------------------


def test_cpu_attention_matches_reference():
    # The CPU path (a scan over heads) must equal the fused reference used elsewhere.
    q, k, v = np.random.default_rng(0).normal(size=(3, 2, 7, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(
        jax.jit(attention)(q, k, v), jax.nn.dot_product_attention(q, k, v), atol=1e-6
    )


def test_qk_norm_makes_attention_invariant_to_query_key_scale():
    # With QK-norm the logits depend on the directions of q and k only, so scaling
    # the query and key projections (the escape from the tiny TiTok's colour plateau)
    # leaves the output unchanged; without it the output changes.
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 16)), jnp.float32)
    outputs = {}
    for qk_norm in (False, True):
        init = nnx.initializers.normal(0.5)  # logits well away from uniform attention
        attn = Attention(16, 2, dtype=jnp.float32, init=init, qk_norm=qk_norm, rngs=nnx.Rngs(0))
        before = attn(x)
        scale = jnp.concatenate([jnp.full((32,), 7.0), jnp.ones((16,))])  # q, k columns
        attn.qkv.kernel[...] = attn.qkv.kernel[...] * scale
        attn.qkv.bias[...] = attn.qkv.bias[...] * scale
        outputs[qk_norm] = float(jnp.max(jnp.abs(attn(x) - before)))
    # (Not exactly 0: the LayerNorms' epsilon sees the larger variance.)
    assert outputs[True] < 1e-4
    assert outputs[False] > 100 * outputs[True]


# --- vector quantizer -----------------------------------------------------------------

# One codebook shape (8 codes x 4 dims) throughout, so its initialiser compiles once.
K, D = 8, 4


def _quantizer(codebook: np.ndarray, *, l2_norm: bool = True) -> VectorQuantizer:
    q = VectorQuantizer(K, D, l2_norm=l2_norm, rngs=nnx.Rngs(0))
    q.codebook[...] = jnp.asarray(codebook)
    return q


@nnx.jit
def _vq_eval(q, z):
    return q(z)


@nnx.jit
def _vq_train(q, z):
    return q(z, train=True)


def _one_hot_codebook() -> np.ndarray:
    """Codes +-e_i, so the features e_i, e_i, e_j, ... select known codes."""
    return np.concatenate([np.eye(D), -np.eye(D)]).astype(np.float32)


@pytest.mark.parametrize("l2_norm", [True, False])
def test_vq_indices_are_nearest_codes(l2_norm):
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(K, D)).astype(np.float32)
    z = rng.normal(size=(3, 50, D)).astype(np.float32)
    q = _quantizer(codebook, l2_norm=l2_norm)
    out = _vq_eval(q, jnp.asarray(z))
    zz, cc = (_np_normalize(z), _np_normalize(codebook)) if l2_norm else (z, codebook)
    brute = np.argmin(((zz[..., None, :] - cc) ** 2).sum(-1), axis=-1)
    assert out.indices.dtype == jnp.int32
    np.testing.assert_array_equal(out.indices, brute)
    np.testing.assert_allclose(out.latents, cc[brute], atol=1e-6)
    np.testing.assert_allclose(q.embed(out.indices), cc[brute], atol=1e-6)


def test_vq_straight_through_and_codebook_gradients():
    rng = np.random.default_rng(1)
    codebook = rng.normal(size=(K, D)).astype(np.float32)
    z = jnp.asarray(rng.normal(size=(6, D)).astype(np.float32))
    weights = jnp.asarray(rng.normal(size=(6, D)).astype(np.float32))
    graphdef, params, rest = nnx.split(_quantizer(codebook, l2_norm=False), nnx.Param, ...)

    def terms(params, z):
        out = nnx.merge(graphdef, params, rest)(z)
        return jnp.stack([jnp.sum(weights * out.latents), *out.losses.values()])

    jac_params, jac_z = jax.jit(jax.jacrev(terms, argnums=(0, 1)))(params, z)
    d_codebook = jac_params["codebook"][...]
    # Straight-through: d(loss on zq)/dz equals d(loss)/dzq = weights.
    np.testing.assert_allclose(jac_z[0], weights, atol=1e-6)
    # The codebook learns only from the codebook loss, never through zq or the commitment.
    np.testing.assert_array_equal(d_codebook[0], 0.0)
    np.testing.assert_array_equal(d_codebook[1], 0.0)
    idx = np.argmin(((np.asarray(z)[:, None] - codebook) ** 2).sum(-1), axis=-1)
    expected = np.zeros_like(codebook)
    np.add.at(expected, idx, 2.0 * (codebook[idx] - np.asarray(z)) / z.size)
    np.testing.assert_allclose(d_codebook[2], expected, atol=1e-6)


def test_vq_usage_ema_updates_only_in_training():
    q = _quantizer(_one_hot_codebook())
    z = jnp.asarray(np.eye(D, dtype=np.float32)[[0, 0, 1, 2]])  # codes 0, 0, 1, 2
    _vq_eval(q, z)
    np.testing.assert_array_equal(q.usage[...], 0.0)
    _vq_train(q, z)
    first = 0.01 * np.array([0.5, 0.25, 0.25, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(q.usage[...], first, rtol=1e-6)
    _vq_train(q, z[::-1])  # codes 2, 1, 0, 0: the same distribution
    np.testing.assert_allclose(q.usage[...], 0.99 * first + first, rtol=1e-6)
    # The usage statistics are not parameters, so an optimizer never sees them.
    assert "usage" not in nnx.state(q, nnx.Param)


def test_vq_perplexity_is_exp_entropy():
    q = _quantizer(_one_hot_codebook())
    out = _vq_eval(q, jnp.asarray(np.eye(D, dtype=np.float32)[[0, 0, 1, 2]]))
    p = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(out.stats["perplexity"], np.exp(-(p * np.log(p)).sum()), rtol=1e-6)
    np.testing.assert_allclose(out.stats["code_usage"], 3 / K)


def test_vq_revive_moves_only_dead_codes():
    rng = np.random.default_rng(2)
    codebook = rng.normal(size=(K, D)).astype(np.float32)
    features = rng.normal(size=(10, D)).astype(np.float32)
    q = _quantizer(codebook)
    uniform = 1 / K
    usage = np.array([uniform, 0.5 * uniform, 0.1 * uniform, 0.01 * uniform, 0, 0, 0, 0])
    q.usage[...] = jnp.asarray(usage, jnp.float32)
    nnx.jit(lambda q, f, r: q.revive(f, r))(q, jnp.asarray(features), jax.random.key(0))
    new = np.asarray(q.codebook[...])
    nearest = np.argmax(_np_normalize(features) @ _np_normalize(codebook).T, axis=0)

    def pulled(k, w):
        return (1 - w) * codebook[k] + w * features[nearest[k]]

    # Codes used at >= 10% of the uniform rate are untouched, bit for bit.
    np.testing.assert_array_equal(new[:3], codebook[:3])
    # One used at 1% of it moves slightly (weight exp(-10)); dead codes move to
    # their nearest feature by cosine distance (weight exp(-1e-3)).
    np.testing.assert_allclose(new[3], pulled(3, np.exp(-10.0 - 1e-3)), rtol=1e-5)
    for k in range(4, K):
        np.testing.assert_allclose(new[k], pulled(k, np.exp(-1e-3)), rtol=1e-5)


# --- Gaussian posterior ---------------------------------------------------------------


def test_gaussian_kl_clamp_and_sampling():
    rng = np.random.default_rng(3)
    mean = rng.normal(size=(2, 3, 4)).astype(np.float32)
    logvar = rng.normal(size=(2, 3, 4)).astype(np.float32)
    logvar[0, 0, 0] = 50.0  # clamped to 20
    g = DiagonalGaussian(4, kl_weight=1e-3)
    moments = jnp.asarray(np.concatenate([mean, logvar], -1))
    mode, sample = jax.jit(lambda m, r: (g(m), g(m, rng=r).latents))(moments, jax.random.key(0))
    lv = np.clip(logvar, -30, 20)
    kl = 0.5 * np.sum(mean**2 + np.exp(lv) - 1 - lv) / 2
    np.testing.assert_allclose(mode.stats["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(mode.losses["kl"], 1e-3 * kl, rtol=1e-5)
    np.testing.assert_array_equal(mode.latents, mean)
    assert mode.indices is None
    eps = (np.asarray(sample) - mean) / np.exp(0.5 * lv)
    assert sample.shape == mean.shape and np.all(np.isfinite(eps)) and np.std(eps) > 0.3
    with pytest.raises(ValueError, match="mean"):
        g(moments[..., :6])


# --- TiTok ----------------------------------------------------------------------------


def _roundtrip(model, x, rng):
    """Every forward the TiTok tests need, as one program."""
    out = model.training_step(x, rng=rng)
    # A pixel tokenizer: the task regresses its reconstruction; its losses are the encoder's.
    assert out.regress_pixels and out.losses.keys() == out.encoded.losses.keys()
    recon, enc = out.recon, out.encoded
    eval_recon, eval_enc = model(x, train=False)
    ids_or_latents = eval_enc.latents if eval_enc.tokens is None else eval_enc.tokens
    return recon, enc, eval_recon, eval_enc, model.decode(ids_or_latents), model.features(x)


_roundtrip_jit = nnx.jit(_roundtrip)


def _build(latent: str, **kwargs):
    # RBG keys compile several times faster on CPU than threefry; init values don't matter here.
    with jax.default_prng_impl("unsafe_rbg"):
        return make_tokenizer(
            "titok", rngs=nnx.Rngs(0), quantizer=QUANTIZER[latent], **TINY, **kwargs
        )


@pytest.fixture(scope="module")
def models():
    """Built once: image VQ (f32 and bf16, sharing shapes) and video VAE."""
    return {
        "image-vq": _build("vq"),
        "image-vq-bf16": _build("vq", dtype=jnp.bfloat16),
        "video-vae": _build("gaussian", **VIDEO),
    }


def _input(video: bool, seed: int = 1) -> jax.Array:
    shape = (2, 4, 32, 32, 3) if video else (2, 32, 32, 3)
    return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32))


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
@pytest.mark.parametrize("latent", ["vq", "gaussian", "chain"])
def test_titok_shapes_and_dtypes(latent, video):
    # Abstract evaluation: checks every variant's shapes without compiling any.
    model = nnx.eval_shape(lambda: _build(latent, **(VIDEO if video else {})))
    x = _input(video)
    recon, enc, _, _, decoded, features = nnx.eval_shape(_roundtrip, model, x, jax.random.key(0))
    discrete = latent != "gaussian"  # the chain ends on its codebook
    assert isinstance(model, Tokenizer)
    assert model.spec.layout == (8,) and model.spec.channels == 4
    assert model.spec.kind == ("discrete" if discrete else "continuous")
    assert model.spec.vocab_size == (64 if discrete else 0)
    assert model.revivable == discrete
    for pixels in (recon, decoded):
        assert pixels.shape == x.shape and pixels.dtype == jnp.float32
    assert enc.latents.shape == (2, 8, 4) and enc.latents.dtype == jnp.float32
    # The encoder emits what the quantizer reads: 2C moments for a Gaussian first.
    assert features.shape == (2, 8, 4 if latent == "vq" else 8)
    if latent == "vq":
        assert enc.tokens.shape == (2, 8) and enc.tokens.dtype == jnp.int32
        assert set(enc.losses) == {"commitment", "codebook"}
        assert set(enc.stats) == {"perplexity", "code_usage"}
    elif latent == "chain":
        assert enc.tokens.shape == (2, 8) and enc.tokens.dtype == jnp.int32
        assert set(enc.losses) == {"gaussian/kl", "vq/commitment", "vq/codebook"}
        assert set(enc.stats) == {
            "gaussian/kl", "gaussian/posterior_std", "vq/perplexity", "vq/code_usage"
        }  # fmt: skip
    else:
        assert enc.tokens is None and set(enc.losses) == {"kl"}
    assert all(v.shape == () for v in (*enc.losses.values(), *enc.stats.values()))
    # A prefix of the tokens decodes too (num_tokens).
    codes = enc.tokens if discrete else enc.latents
    prefix = nnx.eval_shape(lambda m, c: m.decode(c, num_tokens=3), model, codes)
    assert prefix.shape == x.shape and prefix.dtype == jnp.float32


@pytest.mark.parametrize("variant", ["image-vq", "video-vae"])
def test_titok_decode_of_encode_matches_call(models, variant):
    model, video = models[variant], variant.startswith("video")
    x = _input(video)
    recon, enc, eval_recon, eval_enc, decoded, _ = _roundtrip_jit(model, x, jax.random.key(2))
    assert np.all(np.isfinite(recon)) and recon.shape == x.shape
    # decode(encode(x).tokens) reproduces the eval-mode reconstruction of __call__.
    np.testing.assert_allclose(decoded, eval_recon, atol=1e-5)
    if variant.endswith("vae"):
        # The VAE samples with an rng in training and takes the mode without.
        assert not np.allclose(enc.latents, eval_enc.latents)


def test_titok_usage_tracking_and_features(models):
    model = models["image-vq"]
    usage_before = np.asarray(model.quantizer.usage[...])
    # One training forward then one eval forward: the EMA moves exactly once.
    _, enc, _, eval_enc, _, features = _roundtrip_jit(model, _input(False, 3), jax.random.key(0))
    tokens = np.asarray(eval_enc.tokens)
    np.testing.assert_array_equal(enc.tokens, tokens)
    counts = np.bincount(tokens.ravel(), minlength=64) / tokens.size
    np.testing.assert_allclose(model.quantizer.usage[...], 0.99 * usage_before + 0.01 * counts)
    # `features` are the pre-quantization features: their nearest codes are the tokens.
    codebook = _np_normalize(np.asarray(model.quantizer.codebook[...]))
    np.testing.assert_array_equal(np.argmax(np.asarray(features) @ codebook.T, -1), tokens)


def test_titok_gradients_reach_every_parameter(models):
    model = models["image-vq"]
    x = _input(False, 5)

    def loss_fn(model):
        recon, enc = model(x)
        return jnp.mean(jnp.square(recon - x)) + sum(enc.losses.values())

    grads = nnx.jit(nnx.grad(loss_fn))(model)
    norms = {
        jax.tree_util.keystr(p): float(jnp.linalg.norm(g))
        for p, g in jax.tree.leaves_with_path(grads)
    }
    assert len(norms) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    # Every parameter, the encoder's (straight-through) and the codebook's included, learns.
    assert all(np.isfinite(n) and n > 0 for n in norms.values()), norms


def test_titok_bf16_runs_and_returns_float32(models):
    model = models["image-vq-bf16"]
    x = _input(False, 4)
    recon, enc, _, _, decoded, _ = _roundtrip_jit(model, x, jax.random.key(0))
    assert model.encoder.transformer.blocks[0].fc1.kernel.dtype == jnp.float32
    assert recon.dtype == decoded.dtype == enc.latents.dtype == jnp.float32
    assert np.all(np.isfinite(recon))
    # The same weights computing in float32 give nearly the same pixels: bf16 only rounds.
    f32 = nnx.merge(nnx.graphdef(models["image-vq"]), nnx.state(model))
    np.testing.assert_allclose(_roundtrip_jit(f32, x, jax.random.key(0))[0], recon, atol=0.05)


def test_titok_rejects_bad_inputs(models):
    model = models["image-vq"]
    with pytest.raises(ValueError, match=r"expects input \[B, 32, 32, 3\]"):
        model.encode(jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="latents must be"):
        model.decode(jnp.zeros((1, 9, 4)))
    with pytest.raises(ValueError, match="latents must be"):
        model.decode_latents(jnp.zeros((1, 8)))
    with pytest.raises(
        KeyError, match="unknown quantizer 'lfq'; valid names: chain, fsq, gaussian"
    ):
        make_tokenizer("titok", rngs=nnx.Rngs(0), quantizer=dict(name="lfq"), **TINY)
    with pytest.raises(ValueError, match="set by the TiTok token_dim"):
        make_tokenizer("titok", rngs=nnx.Rngs(0), quantizer=dict(name="vq", dim=4), **TINY)
    with pytest.raises(ValueError, match="needs a name"):
        make_tokenizer("titok", rngs=nnx.Rngs(0), quantizer=dict(codebook_size=8), **TINY)
    with pytest.raises(ValueError, match="not divisible"):
        make_tokenizer("titok", rngs=nnx.Rngs(0), **{**TINY, "image_size": 30})
    with pytest.raises(KeyError, match="valid names: flextok, titok, vq2d"):
        TOKENIZERS.get("titk")
