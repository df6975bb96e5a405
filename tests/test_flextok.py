"""FlexTok (`visgen.tokenizers.flextok`) and the rectified flow it decodes with.

The encoder's attention mask is exactly "patches see patches, registers see
patches and earlier registers"; nested dropout replaces exactly the registers
past k; the Euler sampler integrates straight paths exactly and its one step
is the closed form `eps - v(eps, 1)`; CFG is `v_u + w (v_c - v_u)`; a prefix
decode never reads a token past k. A small model whose parameters are all
randomised (its zero-initialised layers would make every velocity 0) keeps
each check non-trivial.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from visgen.diffusion import rectified_flow as rf
from visgen.evaluation.task_eval import PrefixReconstruction
from visgen.nn.patchify import patchify, unpatchify
from visgen.tokenizers import FlexTok, make_tokenizer
from visgen.tokenizers.flextok import encoder_mask, nested_dropout, sample_keep

N_PATCHES, K = 16, 8  # 16 px images, 4 px patches; 8 registers


def _randomised(module: nnx.Module, seed: int = 0, scale: float = 0.3) -> nnx.Module:
    graphdef, state = nnx.split(module)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        leaf + scale * jax.random.normal(key, leaf.shape, leaf.dtype)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
        else leaf
        for leaf, key in zip(leaves, keys, strict=True)
    ]
    return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))


@pytest.fixture(scope="module")
def tok() -> FlexTok:
    model = make_tokenizer(
        "flextok", image_size=16, patch_size=4, width=16, depth=1, decoder_depth=1, heads=2,
        num_registers=K, token_dim=3, quantizer=dict(name="fsq", levels=(5, 4, 3)),
        decode_steps=3, rngs=nnx.Rngs(0),
    )  # fmt: skip
    return _randomised(model)


@functools.partial(nnx.jit, static_argnames=("num_tokens", "steps", "guidance"))
def _decode(model, tokens, rng, num_tokens=None, steps=None, guidance=None):
    return model.decode(tokens, num_tokens=num_tokens, rng=rng, steps=steps, guidance=guidance)


@nnx.jit
def _tokens(model, x):
    return model.encode(x).tokens


def _images(seed: int = 0, b: int = 2) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (b, 16, 16, 3), minval=-1, maxval=1)


def test_encoder_mask_is_exactly_as_specified():
    mask = np.asarray(encoder_mask(3, 4))
    expected = np.zeros((7, 7), bool)
    expected[:, :3] = True  # every token reads every patch
    for r in range(4):
        expected[3 + r, 3 : 4 + r] = True  # register r reads registers 0..r
    np.testing.assert_array_equal(mask, expected)


def test_a_later_register_is_seen_by_no_earlier_token_and_a_patch_by_all(tok):
    enc = tok.encoder
    seq = enc.sequence(patchify(_images(), tok.patch))
    base = np.asarray(enc.mix(seq))
    # A random direction: a constant shift would vanish in the blocks' LayerNorm.
    delta = jax.random.normal(jax.random.key(9), (seq.shape[-1],))
    j = N_PATCHES + 5  # register 5
    moved = np.asarray(enc.mix(seq.at[:, j].add(delta)))
    changed = np.any(np.abs(moved - base) > 1e-6, axis=(0, 2))
    np.testing.assert_array_equal(changed, np.arange(N_PATCHES + K) >= j)
    moved = np.asarray(enc.mix(seq.at[:, 3].add(delta)))  # patch 3
    assert np.all(np.any(np.abs(moved - base) > 1e-6, axis=(0, 2)))


def test_nested_dropout_replaces_exactly_the_registers_past_k():
    regs = jnp.asarray(np.random.default_rng(0).normal(size=(3, K, 5)), jnp.float32)
    mask_token = jnp.full((5,), 7.0)
    keep = jnp.asarray([1, 4, K])
    out = np.asarray(nested_dropout(regs, keep, mask_token))
    for b, k in enumerate([1, 4, K]):
        np.testing.assert_array_equal(out[b, :k], regs[b, :k])
        np.testing.assert_array_equal(out[b, k:], 7.0)
    pow2 = np.asarray(sample_keep(jax.random.key(0), 512, 32, "pow2"))
    assert set(pow2.tolist()) == {1, 2, 4, 8, 16, 32}
    uniform = np.asarray(sample_keep(jax.random.key(0), 2048, 32, "uniform"))
    assert set(uniform.tolist()) == set(range(1, 33))


def test_euler_integrates_a_straight_path_exactly_and_one_step_is_the_closed_form():
    x0 = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5)), jnp.float32)
    eps = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5)), jnp.float32)
    # The true velocity of the straight path through x0: (x_t - x0) / t.
    straight = rf.euler_sample(lambda x, t: (x - x0) / t[:, None], eps, 7)
    np.testing.assert_allclose(straight, x0, atol=1e-5)
    xt = rf.interpolate(x0, eps, jnp.asarray([0.25, 1.0]))
    np.testing.assert_allclose(xt[1], eps[1])
    np.testing.assert_allclose(xt[0], 0.25 * eps[0] + 0.75 * x0[0], rtol=1e-6)
    np.testing.assert_allclose(rf.velocity_target(x0, eps), eps - x0)


def test_one_euler_step_of_the_decoder_equals_the_closed_form_and_cfg_mixes(tok):
    tokens = _tokens(tok, _images())
    rng = jax.random.key(3)
    latents = tok.quantizer.embed(tokens)
    noise = jax.random.normal(rng, (2, N_PATCHES, tok.patch_dim), jnp.float32)
    ones, keep = jnp.ones((2,)), jnp.full((2,), K)
    v_c = tok.decoder(noise, ones, latents, keep, jnp.zeros((2,), bool))
    v_u = tok.decoder(noise, ones, latents, keep, jnp.ones((2,), bool))
    assert float(jnp.max(jnp.abs(v_c - v_u))) > 1e-3
    for w in (1.0, 3.0):
        out = _decode(tok, tokens, rng, steps=1, guidance=w)
        closed = unpatchify(noise - (v_u + w * (v_c - v_u)), tok.grid, tok.patch, 3)
        np.testing.assert_allclose(out, closed, rtol=1e-5, atol=1e-4)


def test_a_prefix_decode_never_reads_tokens_past_k(tok):
    tokens = _tokens(tok, _images(1))
    rng = jax.random.key(5)
    k = 3
    ref = np.asarray(_decode(tok, tokens, rng, num_tokens=k))
    later = tokens.at[:, k].set((tokens[:, k] + 1) % tok.spec.vocab_size)
    later = later.at[:, k + 1 :].set(0)
    np.testing.assert_array_equal(_decode(tok, later, rng, num_tokens=k), ref)
    # The k-token prefix alone decodes the same; a change inside the prefix is read.
    np.testing.assert_allclose(_decode(tok, tokens[:, :k], rng), ref, rtol=1e-5, atol=1e-4)
    inside = tokens.at[:, k - 1].set((tokens[:, k - 1] + 1) % tok.spec.vocab_size)
    assert float(np.max(np.abs(_decode(tok, inside, rng, num_tokens=k) - ref))) > 1e-4
    # Evaluation's prefix view (evals.recon --num-tokens) is exactly this decode.
    view = PrefixReconstruction(tok, k)
    pixels, _ = nnx.jit(lambda v, x: v(x))(view, _images(1))
    np.testing.assert_allclose(pixels, _decode(tok, tokens, None, num_tokens=k), atol=1e-5)
    with pytest.raises(ValueError, match="1..8"):
        PrefixReconstruction(tok, 9)
    # A traced k decodes as the static one.
    traced = nnx.jit(lambda m, k: m.decode(tokens, num_tokens=k, rng=rng))(tok, jnp.int32(k))
    np.testing.assert_allclose(traced, ref, rtol=1e-5, atol=1e-4)


def test_training_step_is_a_finite_flow_loss_that_reaches_the_encoder(tok):
    def loss(model):
        out = model.training_step(_images(2, b=4), rng=jax.random.key(0))
        assert out.recon is None and not out.regress_pixels
        return sum(out.losses.values())

    value, grads = nnx.jit(nnx.value_and_grad(loss))(tok)
    assert np.isfinite(float(value)) and float(value) > 0
    enc_grad = jax.tree_util.tree_leaves(nnx.state(grads.encoder))
    assert max(float(jnp.max(jnp.abs(g))) for g in enc_grad) > 0  # through FSQ's STE


def test_sincos_positions_are_fixed_distinct_and_unit_scale():
    from visgen.tokenizers.flextok_nn import sincos_2d

    pos = np.asarray(sincos_2d((4, 4), 16))
    assert pos.shape == (16, 16)
    # Every patch gets its own code; each row/column half has unit mean square (sin^2 + cos^2).
    assert len({tuple(np.round(p, 5)) for p in pos}) == 16
    np.testing.assert_allclose(np.mean(np.square(pos), axis=1), 0.5, rtol=1e-5)
    # The row half depends on the row only, the column half on the column only.
    np.testing.assert_allclose(pos[1, :8], pos[2, :8])
    np.testing.assert_allclose(pos[4, 8:], pos[8, 8:])
    learned = make_tokenizer(
        "flextok", image_size=16, patch_size=4, width=16, depth=1, decoder_depth=1, heads=2,
        num_registers=K, token_dim=3, quantizer=dict(name="fsq", levels=(5, 4, 3)),
        pos_embed="learned", rngs=nnx.Rngs(0),
    )  # fmt: skip
    assert "table" in nnx.state(learned.encoder.pos, nnx.Param)
    assert not nnx.state(make_tokenizer(
        "flextok", image_size=16, patch_size=4, width=16, depth=1, decoder_depth=1, heads=2,
        num_registers=K, token_dim=3, quantizer=dict(name="fsq", levels=(5, 4, 3)),
        rngs=nnx.Rngs(0),
    ).encoder.pos, nnx.Param)  # fmt: skip


def test_bad_inputs_are_refused(tok):
    tokens = _tokens(tok, _images())
    with pytest.raises(ValueError, match="num_tokens must be in 1..8"):
        tok.decode(tokens, num_tokens=0)
    with pytest.raises(ValueError, match=r"k <= 8"):
        tok.decode(jnp.zeros((2, 9), jnp.int32))
    with pytest.raises(ValueError, match="nested_dropout must be one of uniform, pow2"):
        make_tokenizer("flextok", image_size=16, patch_size=4, width=32, depth=1,
                       decoder_depth=1, heads=2, num_registers=K, token_dim=3,
                       quantizer=dict(name="fsq", levels=(5, 4, 3)), nested_dropout="geo",
                       rngs=nnx.Rngs(0))  # fmt: skip
    with pytest.raises(ValueError, match="pos_embed must be one of sincos, learned"):
        make_tokenizer("flextok", image_size=16, patch_size=4, width=32, depth=1,
                       decoder_depth=1, heads=2, num_registers=K, token_dim=3,
                       quantizer=dict(name="fsq", levels=(5, 4, 3)), pos_embed="rope",
                       rngs=nnx.Rngs(0))  # fmt: skip


@pytest.mark.parametrize(("size", "depth"), [("d12", 12), ("d18", 18)])
def test_the_paper_size_configs_build(size, depth):
    from visgen.config import load_config_file

    args = load_config_file(f"configs/flextok.py:size={size}").tokenizer.to_dict()
    model = nnx.eval_shape(lambda: make_tokenizer(**args, rngs=nnx.Rngs(0)))
    # 256 registers of FSQ [8, 8, 8, 5, 5, 5]; width 64 * depth; 256 patches (16 px at 256 px).
    assert model.spec.layout == (256,) and model.spec.vocab_size == 64_000
    assert model.encoder.pos().shape == (256, 64 * depth)
    assert len(model.encoder.blocks) == len(model.decoder.blocks) == depth
