"""Tests for the AR generator: RoPE tables, KV-cache decoding, conditioning, training.

Tiny models only (width 32, depth 1-2, 2 heads, 64 codes, at most 16 tokens)
with numpy random weights, so XLA compile time dominates: each test compiles
one or two programs, and shapes of the real sizes are checked by abstract
evaluation.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from visgen.generators import (
    AR_SIZES,
    GENERATORS,
    ARGenerator,
    CategoricalHead,
    CategoricalOptions,
    Head,
    make_generator,
)
from visgen.nn.llama import swiglu_hidden
from visgen.nn.rope import apply_rope, rope_table
from visgen.sampling import SampleOptions, sample
from visgen.token_spec import TokenSpec

VOCAB = 64
TINY = dict(width=32, depth=2, heads=2, mlp_multiple_of=32)
TEXT_LEN, TEXT_DIM = 3, 16


def spec(layout, vocab_size: int = VOCAB) -> TokenSpec:
    """Discrete tokens: `vocab_size` ids on `layout`."""
    return TokenSpec(kind="discrete", layout=tuple(layout), vocab_size=vocab_size, channels=8)


def shuffle_head(window: int = 2, causal: bool = False, **kwargs) -> dict:
    """The `token_shuffle` head's config: `s x s` windows, independent or causal."""
    return {"name": "token_shuffle", "window": window, "causal": causal, **kwargs}


def _build(
    cond: str = "class",
    layout=(4, 4),
    *,
    seed: int = 0,
    cls=ARGenerator,
    vocab_size: int = VOCAB,
    **kwargs,
) -> ARGenerator:
    """A tiny `cls` model over `vocab_size` ids on `layout` with numpy random weights
    (std 0.1, norm scales near 1); `kwargs` go to `cls` (`head`, trunk sizes, ...).

    Shapes come from abstract evaluation, so no initialiser is compiled; the
    real initialisation is tested once, in the training test.
    """
    kwargs = {**TINY, "spec": spec(layout, vocab_size), **kwargs}
    if cond == "class":
        kwargs.setdefault("num_classes", 10)
    else:
        kwargs.update(text_dim=TEXT_DIM, cls_token_num=TEXT_LEN)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(rngs=nnx.Rngs(0), **kwargs)))
    rng = np.random.default_rng(seed)

    def fill(path, x):
        mean = 1.0 if "weight" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(mean + 0.1 * rng.normal(size=x.shape), jnp.float32)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def _cond(model: ARGenerator, batch: int, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    if model.num_classes:
        return jnp.asarray(rng.integers(0, model.num_classes, batch), jnp.int32)
    return jnp.asarray(rng.normal(size=(batch, TEXT_LEN, TEXT_DIM)), jnp.float32)


def _tokens(model: ARGenerator, batch: int, seed: int = 1) -> jax.Array:
    rng = np.random.default_rng(seed)
    shape = (batch, model.num_tokens)
    return jnp.asarray(rng.integers(0, model.spec.vocab_size, shape), jnp.int32)


# --- RoPE -----------------------------------------------------------------------------


def _llamagen_2d(grid: int, head_dim: int, prefix: int, base: float = 10000.0):
    """numpy transcription of LlamaGen's `precompute_freqs_cis_2d`."""
    half = head_dim // 2
    freqs = 1.0 / base ** (np.arange(0, half, 2)[: half // 2] / half)
    f = np.outer(np.arange(grid), freqs)
    grid_freqs = np.concatenate(
        [
            np.broadcast_to(f[:, None], (grid, grid, len(freqs))),
            np.broadcast_to(f[None], f.shape[:1] + f.shape),
        ],
        axis=-1,
    ).reshape(grid * grid, -1)
    zeros = np.zeros((prefix, half))
    return np.concatenate([zeros, np.cos(grid_freqs)]), np.concatenate([zeros, np.sin(grid_freqs)])


def test_rope_tables_match_llamagen():
    cos, sin = rope_table((4, 4), 16, prefix=2)
    ref_cos, ref_sin = _llamagen_2d(4, 16, 2)
    np.testing.assert_allclose(cos, ref_cos, atol=1e-6)
    np.testing.assert_allclose(sin, ref_sin, atol=1e-6)
    # 1D: gpt-fast / LlamaGen `precompute_freqs_cis`, angle pos * base^(-2i / head_dim).
    cos, sin = rope_table((5,), 8, prefix=1, zero_prefix=False)
    angles = np.outer(np.arange(5), 10000.0 ** (-np.arange(0, 8, 2) / 8))
    np.testing.assert_allclose(cos[1:], np.cos(angles), atol=1e-6)
    np.testing.assert_allclose(sin[1:], np.sin(angles), atol=1e-6)
    # Without the zeroed prefix, prefix rows are the identity rotation.
    np.testing.assert_array_equal(cos[0], 1.0)
    np.testing.assert_array_equal(sin[0], 0.0)
    # 3D: 16 pairs split 6 / 5 / 5 over (t, h, w); frame 1, row 0, col 0 rotates only t pairs.
    cos, sin = rope_table((2, 2, 2), 32)
    assert cos.shape == (8, 16)
    moved = np.nonzero(sin[4])[0]
    np.testing.assert_array_equal(moved, np.arange(6))


def test_rope_2d_is_relative():
    # q . k after RoPE depends only on the 2D offset between the two positions.
    head_dim = 16
    cos, sin = rope_table((6, 6), head_dim)
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, head_dim)), jnp.float32) for _ in range(2))

    def score(pq, pk):
        iq, ik = pq[0] * 6 + pq[1], pk[0] * 6 + pk[1]
        rq = apply_rope(q, cos[iq : iq + 1], sin[iq : iq + 1])
        rk = apply_rope(k, cos[ik : ik + 1], sin[ik : ik + 1])
        return float(jnp.sum(rq * rk))

    # The same offset (+1, +2) at two places gives the same score; another offset does not.
    np.testing.assert_allclose(score((1, 0), (2, 2)), score((3, 3), (4, 5)), rtol=1e-5)
    assert abs(score((1, 0), (2, 2)) - score((1, 0), (2, 1))) > 1e-3


# --- model ----------------------------------------------------------------------------


def test_sizes_and_registry():
    # LlamaGen's SwiGLU hidden sizes and the parameter count of GPT-B (111M with 16384 codes).
    assert [swiglu_hidden(w) for w in (768, 1024, 1280)] == [2048, 2816, 3584]
    width, depth, heads = AR_SIZES["B"]
    abstract = nnx.eval_shape(
        lambda: make_generator(
            "ar",
            spec=spec((16, 16), 16384),
            width=width,
            depth=depth,
            heads=heads,
            num_classes=1000,
            rngs=nnx.Rngs(0),
        )
    )
    assert isinstance(abstract, ARGenerator) and isinstance(abstract.head, Head)
    # The default head is categorical: one token per step.
    assert isinstance(abstract.head, CategoricalHead) and abstract.head_name == "categorical"
    assert abstract.tokens_per_step == 1 and abstract.num_steps == abstract.num_tokens == 256
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert 110e6 < params < 112e6, params
    # Fused QKV, SwiGLU hidden rounded to a multiple of 256, null class row, no biases.
    block = abstract.trunk.layers[0]
    assert block.attention.wqkv.kernel.shape == (768, 3 * 768)
    assert block.feed_forward.w1.kernel.shape == (768, 2048)
    assert abstract.condition.embedding.embedding.shape == (1001, 768)
    assert abstract.head.classifier.output.kernel.shape == (768, 16384)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(nnx.state(abstract))]
    assert not any("bias" in p for p in paths)
    assert GENERATORS.names() == ["ar", "mar"]
    with pytest.raises(KeyError, match="valid names: ar"):
        make_generator("arr", rngs=nnx.Rngs(0))


def _full_and_cached(model, tokens, cond, chunk: bool):
    """Teacher-forced logits; the same from prefill + one-token decode steps; a 2-token chunk.

    The cached methods speak steps `[B, n, 1]` (one token each) and return the head's
    inputs; the head's logits are `[..., 1, V]`."""
    full = model.logits(tokens, cond)
    b, n = tokens.shape
    steps = model.trunk_input.to_steps(tokens)  # [B, N, 1]
    hidden0, prefilled = model.prefill(cond, model.init_cache(b))
    logits0 = model.head.logits(hidden0[:, None])[:, 0]  # [B, 1, V]

    def step(i, carry):
        out, cache = carry
        hidden, cache = model.decode_step(jax.lax.dynamic_slice_in_dim(steps, i, 1, 1), i, cache)
        logits = model.head.logits(hidden)[:, :, 0]  # [B, 1, V]
        return jax.lax.dynamic_update_slice_in_dim(out, logits, i + 1, axis=1), cache

    out = jnp.zeros_like(full).at[:, 0].set(logits0[:, 0])
    cached, _ = jax.lax.fori_loop(0, n - 1, step, (out, prefilled))
    if not chunk:
        return full, cached, None
    # Decoding tokens 0 and 1 together predicts tokens 1 and 2.
    chunk_hidden, _ = model.decode_step(steps[:, :2], 0, prefilled)
    return full, cached, model.head.logits(chunk_hidden)[:, :, 0]


@pytest.mark.parametrize(
    "cond, layout, extra, chunked",
    [
        ("class", (16,), {"qk_norm": True}, False),
        ("text", (4, 4), {}, True),
    ],
    ids=["class-1d-qknorm", "text-2d"],
)
def test_kv_cache_matches_full_forward(cond, layout, extra, chunked):
    model = _build(cond, layout, **extra)
    tokens, c = _tokens(model, 2), _cond(model, 2)
    run = nnx.jit(_full_and_cached, static_argnames="chunk")
    full, cached, chunk = run(model, tokens, c, chunk=chunked)
    assert full.shape == (2, 16, 64) and full.dtype == jnp.float32
    assert float(jnp.std(full)) > 0.1  # a non-trivial test: the logits vary
    np.testing.assert_allclose(cached, full, atol=1e-5)
    if chunked:
        np.testing.assert_allclose(chunk, full[:, 1:3], atol=1e-5)


def test_bf16_compute_tracks_float32():
    # A 3D (t, h, w) layout with an unrotated (not zeroed) prefix, in bf16 and float32.
    kwargs = dict(layout=(2, 2, 4), zero_cond_rope=False, depth=1)
    bf16, f32 = _build(dtype=jnp.bfloat16, **kwargs), _build(**kwargs)  # the same weights
    assert bf16.trunk.layers[0].attention.wqkv.kernel.dtype == jnp.float32
    tokens, c = _tokens(f32, 2), _cond(f32, 2)

    def both(bf16, f32):
        hidden, cache = bf16.prefill(c, bf16.init_cache(2))
        logits = bf16.head.logits(hidden[:, None])[:, 0, 0]
        return bf16.logits(tokens, c), f32.logits(tokens, c), logits, cache[0]["k"]

    low, high, prefill, cached_keys = nnx.jit(both)(bf16, f32)
    assert low.dtype == prefill.dtype == jnp.float32 and cached_keys.dtype == jnp.bfloat16
    # bf16 only rounds: logits of std ~1 move by a few hundredths.
    np.testing.assert_allclose(low, high, atol=0.1)
    np.testing.assert_allclose(prefill, high[:, 0], atol=0.1)
    assert not np.array_equal(low, high)


def test_label_dropout_rate_and_null_condition():
    model, text_model = _build(), _build("text")
    text = _cond(text_model, 2)

    @nnx.jit
    def embed(model, text_model):
        drop = model.condition_drop(20000, jax.random.key(0, impl="unsafe_rbg"))
        prefix = model.embed_condition(jnp.zeros((2,), jnp.int32), drop=jnp.array([True, False]))
        text_prefix = text_model.embed_condition(text, drop=jnp.array([True, False]))
        null_text = text_model.condition(text_model.condition.null[None])
        return drop, prefix, text_prefix, null_text

    drop, prefix, text_prefix, null_text = embed(model, text_model)
    assert abs(float(jnp.mean(drop)) - 0.1) < 0.01
    table = model.condition.embedding.embedding[...]
    np.testing.assert_array_equal(prefix[0, 0], table[10])  # the null class
    np.testing.assert_array_equal(prefix[1, 0], table[0])
    # Dropped text is the learned null embedding through the same projection.
    np.testing.assert_allclose(text_prefix[0], null_text[0], atol=1e-6)
    assert not np.allclose(text_prefix[0], text_prefix[1])


def train_losses(
    model: ARGenerator, tokens: jax.Array, cond: jax.Array, *, norms_at: int, steps: int = 15
) -> tuple[list[float], dict[str, float]]:
    """Adam (lr 1e-2) on `model.loss` with dropout: the losses of `steps` steps and every
    parameter's gradient norm at step `norms_at`."""
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, rng):
        loss_fn = lambda m: m.loss(tokens, cond, train=True, rng=rng)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, jax.tree.map(jnp.linalg.norm, grads)

    losses, norms = [], {}
    for step in range(steps):
        loss, grad_norms = train_step(model, optimizer, jax.random.key(step, impl="unsafe_rbg"))
        losses.append(float(loss))
        if step == norms_at:
            leaves = jax.tree.leaves_with_path(grad_norms)
            norms = {jax.tree_util.keystr(p): float(g) for p, g in leaves}
    return losses, norms


def _losses_three_ways(model, tokens, cond):
    """Cross-entropy from `logits` `[B, N]`, `token_losses` `[B, N]` and the mean `loss`."""
    logits = model.logits(tokens, cond)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
    return ce, model.token_losses(tokens, cond), model.loss(tokens, cond)


def test_text_training_reduces_loss_and_samples():
    # LlamaGen's real initialisation (zero head) and dropouts (0.1 token, residual, condition).
    with jax.default_prng_impl("unsafe_rbg"):
        model = nnx.jit(
            lambda: ARGenerator(
                spec=spec((8,)),
                text_dim=TEXT_DIM,
                cls_token_num=TEXT_LEN,
                rngs=nnx.Rngs(0),
                **{**TINY, "depth": 1},
            )
        )()
    np.testing.assert_array_equal(model.head.classifier.output.kernel[...], 0.0)
    assert 0.017 < float(jnp.std(model.trunk_input.token_embed.table.embedding[...])) < 0.023
    assert 0.2 < float(jnp.std(model.condition.null[...])) < 0.3  # randn / sqrt(16)
    tokens, text = _tokens(model, 4), _cond(model, 4)
    # Once the zero head has moved, every parameter learns (the null text
    # embedding only when dropout drew it).
    losses, norms = train_losses(model, tokens, text, norms_at=1)
    assert all(n > 0 for k, n in norms.items() if "null" not in k), norms
    np.testing.assert_allclose(losses[0], np.log(64), rtol=1e-5)  # the zero head: uniform
    assert losses[-1] < 0.7 * losses[0], losses
    # Evaluation's per-token losses are the cross-entropies of the teacher-forced logits,
    # in raster order, and their mean is the loss.
    ce, per_token, loss = nnx.jit(_losses_three_ways)(model, tokens, text)
    assert per_token.shape == (4, 8) and per_token.dtype == jnp.float32
    np.testing.assert_allclose(per_token, ce, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, ce.mean(), rtol=1e-5)
    # Guided sampling with a text prefix runs and gives valid ids.
    options = SampleOptions(cfg_scale=2.0, head=CategoricalOptions(top_k=8))
    ids, stats = sample(model, text[:2], jax.random.key(0, impl="unsafe_rbg"), options)
    assert ids.shape == (2, 8) and ids.dtype == jnp.int32
    assert int(ids.min()) >= 0 and int(ids.max()) < 64
    assert stats == {"forward_passes": 8, "tokens_generated": 16}


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of"):
        ARGenerator(spec=spec((4,)), num_classes=10, text_dim=8, rngs=nnx.Rngs(0), **TINY)
    with pytest.raises(ValueError, match="exactly one of"):
        ARGenerator(spec=spec((4,)), rngs=nnx.Rngs(0), **TINY)
    with pytest.raises(ValueError, match="layout"):
        ARGenerator(spec=spec((2, 2, 2, 2)), num_classes=10, rngs=nnx.Rngs(0), **TINY)
    with pytest.raises(ValueError, match="head_dim"):
        ARGenerator(spec=spec((2, 2, 2)), num_classes=10, **{**TINY, "heads": 8}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="generator.head needs a name"):
        ARGenerator(spec=spec((4,)), head={}, num_classes=10, rngs=nnx.Rngs(0), **TINY)
    with pytest.raises(KeyError, match="unknown head 'gmm'; valid names: categorical"):
        ARGenerator(spec=spec((4,)), head={"name": "gmm"}, num_classes=10, rngs=nnx.Rngs(0), **TINY)
    model = nnx.eval_shape(lambda: _build("text"))
    with pytest.raises(ValueError, match=r"text embeddings must be \[B, 3, 16\]"):
        model.embed_condition(jnp.zeros((2, 4, 16)))
    # Teacher forcing takes all the tokens of the layout: no more, and no prefixes.
    for n in (17, 8):
        with pytest.raises(ValueError, match=r"takes all 16 tokens of layout \(4, 4\), got"):
            model.logits(jnp.zeros((2, n), jnp.int32), jnp.zeros((2, 3, 16)))
    with pytest.raises(ValueError, match="needs an rng"):
        model.loss(jnp.zeros((2, 16), jnp.int32), jnp.zeros((2, 3, 16)), train=True)
