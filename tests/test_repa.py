"""REPA (`visgen.tokenizers.repa`) and FlexTok's use of it.

The target is the frozen net's conv block at the decoder's patch grid; the
loss is `1 - mean cos`; the frozen net is never a trainable parameter; the
REPA loss trains FlexTok's encoder through the registers; reading the hidden
states does not change the velocity; bad settings are refused.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_flextok import _randomised  # every parameter perturbed: adaLN-zero gates open

from visgen.metrics.classifier import FeatureNet, save_feature_net
from visgen.nn.frozen import Frozen
from visgen.tokenizers import make_tokenizer
from visgen.tokenizers.repa import RepaAlignment

FLEXTOK = dict(
    image_size=16, patch_size=4, width=16, depth=1, decoder_depth=2, heads=2, num_registers=4,
    token_dim=3, quantizer=dict(name="fsq", levels=(5, 4, 3)), decode_steps=2, init_std=0.2,
    head_init_std=0.2,
)  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """A random 16 px FeatureNet: blocks give 8 x 8 x 4 and 4 x 4 x 6 maps."""
    net = FeatureNet(num_classes=3, resolution=16, channels=(4, 6), feature_dim=8, rngs=nnx.Rngs(1))
    path = str(tmp_path_factory.mktemp("repa") / "net.npz")
    save_feature_net(path, net, {"dataset": "test"})
    return path


def _images(b: int = 2, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (b, 16, 16, 3), minval=-1.0, maxval=1.0)


def test_the_target_is_the_block_at_the_patch_grid_and_the_loss_is_one_minus_cos(weights):
    repa = RepaAlignment(weights, width=16, grid=(4, 4), hidden=32, rngs=nnx.Rngs(0))
    x = _images()
    target = repa.target(x)
    assert repa.block == 1 and target.shape == (2, 16, 6)
    maps = repa.net.feature_maps((x + 1.0) * 127.5)
    np.testing.assert_allclose(target, maps[1].reshape(2, 16, 6), rtol=1e-6)

    hidden = jax.random.normal(jax.random.key(3), (2, 16, 16))
    h = hidden
    for i, layer in enumerate(repa.proj):
        h = layer(h) if i == 0 else layer(jax.nn.silu(h))
    h, t = np.asarray(h, np.float64), np.asarray(target, np.float64)
    cos = np.sum(h * t, -1) / (np.linalg.norm(h, axis=-1) * np.linalg.norm(t, axis=-1) + 1e-12)
    np.testing.assert_allclose(float(repa(hidden, x)), 1.0 - cos.mean(), rtol=1e-5, atol=1e-6)

    # The frozen net is never a parameter: only the projector trains.
    assert jax.tree.leaves(nnx.state(repa.net, Frozen))
    assert not jax.tree.leaves(nnx.state(repa.net, nnx.Param))
    assert len(jax.tree.leaves(nnx.state(repa, nnx.Param))) == 6


def test_repa_trains_the_encoder_through_the_registers(weights):
    model = make_tokenizer("flextok", **FLEXTOK, repa_features=weights, rngs=nnx.Rngs(0))
    model = _randomised(model)

    def repa_loss(m):
        return m.training_step(_images(4), rng=jax.random.key(0)).losses["repa"]

    value, grads = nnx.jit(nnx.value_and_grad(repa_loss))(model)
    assert 0.0 < float(value) < 2.0 * model.repa_weight
    enc = jax.tree.leaves(nnx.state(grads.encoder))
    assert max(float(jnp.max(jnp.abs(g))) for g in enc) > 0  # via the registers and FSQ's STE
    assert not jax.tree.leaves(nnx.state(grads, Frozen))


def test_reading_the_hidden_states_leaves_the_velocity_unchanged(weights):
    model = _randomised(
        make_tokenizer("flextok", **FLEXTOK, repa_features=weights, rngs=nnx.Rngs(0))
    )
    x_t = jax.random.normal(jax.random.key(1), (2, 16, 48))
    t = jnp.asarray([0.3, 0.9])
    latents = model.encode(_images()).latents
    keep, null = jnp.asarray([1, 4]), jnp.zeros((2,), bool)
    v = model.decoder(x_t, t, latents, keep, null)
    v2, hidden = model.decoder(x_t, t, latents, keep, null, hidden_after=1)
    np.testing.assert_array_equal(v, v2)
    assert hidden.shape == (2, 16, 16)


def test_bad_repa_settings_are_refused(weights):
    with pytest.raises(ValueError, match="repa_layer must be in 1..2"):
        make_tokenizer("flextok", **FLEXTOK, repa_features=weights, repa_layer=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no conv block matches the 2 x 2 patch grid"):
        make_tokenizer(
            "flextok", **{**FLEXTOK, "patch_size": 8}, repa_features=weights, rngs=nnx.Rngs(0)
        )
    with pytest.raises(FileNotFoundError, match="feature net weights not found"):
        make_tokenizer("flextok", **FLEXTOK, repa_features="/nonexistent.npz", rngs=nnx.Rngs(0))
