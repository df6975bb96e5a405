"""Tests for the VQ2D grid tokenizer and TiTok's two-stage (proxy-code) mode.

Tiny shapes only; shapes of the conv backbone at the LlamaGen VQ-16 layout
are checked by abstract evaluation, so nothing large is compiled.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.nn.frozen import Frozen, freeze
from visgen.tokenizers import TiTok, Tokenizer, make_tokenizer
from visgen.tokenizers.vq2d import VQ16

VQ32 = dict(name="vq", codebook_size=32)
VIT = dict(backbone="vit", patch_size=4, width=32, depth=1, heads=2, token_dim=4, quantizer=VQ32)
CONV = dict(
    backbone="conv", channels=8, channel_mult=(1, 2), num_res_blocks=1, z_channels=8,
    norm_groups=4, token_dim=4, quantizer=VQ32,
)  # fmt: skip


def _abstract(**kwargs):
    return nnx.eval_shape(lambda: make_tokenizer("vq2d", rngs=nnx.Rngs(0), **kwargs))


@pytest.mark.parametrize(
    "kwargs, frames, layout",
    [
        (dict(image_size=32, **VIT), 0, (8, 8)),
        (dict(image_size=32, **VIT), 3, (3, 8, 8)),
        (dict(image_size=16, **CONV), 0, (8, 8)),
        (dict(image_size=256, **VQ16, quantizer=dict(name="vq", codebook_size=16384)), 0, (16, 16)),
    ],
    ids=["vit", "vit-video", "conv", "conv-vq16-256"],
)
def test_vq2d_shapes(kwargs, frames, layout):
    model = _abstract(num_frames=frames, **kwargs)
    assert isinstance(model, Tokenizer)
    assert model.spec.layout == layout and model.spec.kind == "discrete"
    size = kwargs["image_size"]
    shape = (2, frames, size, size, 3) if frames else (2, size, size, 3)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    encoded = nnx.eval_shape(lambda m, x: m.encode(x), model, x)
    assert encoded.tokens.shape == (2, *layout) and encoded.tokens.dtype == jnp.int32
    assert encoded.latents.shape == (2, *layout, model.spec.channels)
    pixels = nnx.eval_shape(lambda m, t: m.decode(t), model, encoded.tokens)
    assert pixels.shape == shape and pixels.dtype == jnp.float32


def test_vq2d_with_a_gaussian_quantizer_makes_a_continuous_grid():
    model = _abstract(image_size=32, **dict(VIT, quantizer=dict(name="gaussian")))
    assert model.spec.kind == "continuous" and model.spec.layout == (8, 8)
    assert model.spec.channels == 4 and model.spec.vocab_size == 0 and not model.revivable
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    features = nnx.eval_shape(lambda m, x: m.features(x), model, x)
    assert features.shape == (2, 8, 8, 8)  # mean and log-variance
    encoded = nnx.eval_shape(lambda m, x: m.encode(x), model, x)
    assert encoded.tokens is None and encoded.latents.shape == (2, 8, 8, 4)
    pixels = nnx.eval_shape(lambda m, z: m.decode(z), model, encoded.latents)
    assert pixels.shape == x.shape and pixels.dtype == jnp.float32
    with pytest.raises(ValueError, match="integer token ids need a discrete quantizer"):
        nnx.eval_shape(lambda m: m.decode(jnp.zeros((1, 8, 8), jnp.int32)), model)


def test_vq2d_bad_inputs():
    with pytest.raises(ValueError, match="not divisible"):
        _abstract(image_size=30, **VIT)
    with pytest.raises(ValueError, match="backbone"):
        _abstract(image_size=32, **dict(VIT, backbone="mlp"))
    model = _abstract(image_size=32, **VIT)
    with pytest.raises(ValueError, match=r"expects input \[B, 32, 32, 3\]"):
        nnx.eval_shape(lambda m: m.encode(jnp.zeros((1, 16, 16, 3))), model)
    with pytest.raises(ValueError, match=r"token ids must be \[B, 8, 8\]"):
        nnx.eval_shape(lambda m: m.decode(jnp.zeros((1, 64), jnp.int32)), model)


def test_vit_without_positions_codes_a_patch_the_same_everywhere():
    """`positions=False`, no blocks: a patch's code depends on its pixels alone."""
    kwargs = dict(VIT, depth=0, positions=False)
    model = make_tokenizer("vq2d", image_size=16, rngs=nnx.Rngs(0), **kwargs)
    assert model.encoder.pos is None and model.decoder.pos is None
    patch = jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 3), minval=-1, maxval=1)
    x = jnp.tile(patch, (4, 4, 1))[None]  # the same 4 x 4 patch in all 16 cells
    tokens = np.asarray(model.encode(x).tokens)
    assert (tokens == tokens[0, 0, 0]).all()
    pixels = np.asarray(model.decode(model.encode(x).tokens))
    np.testing.assert_allclose(pixels, np.tile(pixels[:, :4, :4], (1, 4, 4, 1)), atol=1e-6)
    # With position embeddings (the default) the same patch takes other codes.
    kwargs["positions"] = True
    with_pos = make_tokenizer("vq2d", image_size=16, rngs=nnx.Rngs(0), **kwargs)
    assert len(np.unique(np.asarray(with_pos.encode(x).tokens))) > 1


def test_vq2d_conv_backbone_runs_and_reconstructs_through_codes():
    model = make_tokenizer("vq2d", image_size=16, rngs=nnx.Rngs(0), **CONV)
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
    recon, encoded = nnx.jit(lambda m, x: m(x))(model, x)
    assert recon.shape == x.shape and bool(jnp.all(jnp.isfinite(recon)))
    # Decoding the ids reproduces the straight-through reconstruction.
    np.testing.assert_allclose(
        nnx.jit(lambda m, t: m.decode(t))(model, encoded.tokens), recon, atol=1e-5
    )


def test_freeze_turns_every_variable_frozen():
    model = make_tokenizer("vq2d", image_size=32, rngs=nnx.Rngs(0), **VIT)
    count = len(jax.tree.leaves(nnx.state(model)))
    freeze(model)
    assert not jax.tree.leaves(nnx.state(model, nnx.Param))
    assert len(jax.tree.leaves(nnx.state(model, Frozen))) == count


def _two_stage(proxy_kwargs, **titok_kwargs):
    proxy = freeze(make_tokenizer("vq2d", image_size=32, rngs=nnx.Rngs(1), **proxy_kwargs))
    return TiTok(
        image_size=32, patch_size=4, width=32, depth=1, heads=2, num_tokens=8,
        token_dim=4, quantizer=dict(name="vq", codebook_size=64), proxy=proxy,
        rngs=nnx.Rngs(0), **titok_kwargs,
    )  # fmt: skip


def test_two_stage_titok_learns_proxy_codes_and_decodes_through_the_proxy():
    model = _two_stage(VIT)
    x = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1, maxval=1)

    @nnx.jit
    def run(m, x):
        out = m.training_step(x)
        grads = nnx.grad(lambda m: m.training_step(x).losses["proxy_ce"])(m)
        return out, grads, m.decode(out.encoded.tokens), m(x)[0]

    out, grads, decoded, eval_recon = run(model, x)
    recon = out.recon
    assert recon.shape == x.shape
    # The tokenizer owns this objective: the task must not regress its pixels.
    assert not out.regress_pixels
    assert set(out.losses) == {"commitment", "codebook", "proxy_ce"}
    # Untrained logits are near uniform over the proxy's 32 codes.
    assert abs(float(out.losses["proxy_ce"]) - np.log(32)) < 0.5
    assert 0.0 <= float(out.stats["proxy_accuracy"]) <= 1.0
    np.testing.assert_allclose(decoded, recon, atol=1e-5)
    # The eval reconstruction (__call__) also decodes through the proxy.
    np.testing.assert_allclose(eval_recon, recon, atol=1e-5)
    # Only TiTok's own parameters train: the proxy's are Frozen, not Params.
    assert not jax.tree.leaves(nnx.state(model.proxy, nnx.Param))
    head = grads["decoder"]["head"]["kernel"]
    assert head.shape == (32, 32) and float(jnp.abs(head).sum()) > 0


def test_two_stage_titok_rejects_a_proxy_on_another_grid():
    with pytest.raises(ValueError, match="patch grid"):
        _two_stage(dict(VIT, patch_size=8))
