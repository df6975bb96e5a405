"""Speculative Jacobi Decoding (SJD): lossless parallel sampling for categorical AR generators.

Teng et al. 2025, "Accelerating Auto-regressive Text-to-Image Generation with
Training-free Speculative Jacobi Decoding" (ICLR 2025; the official
`scheduler/jacobi_iteration_lumina_mgpt.py`). One forward pass verifies a
window of `L` tokens instead of producing one, and the committed tokens are
distributed exactly as plain AR sampling with the same options.

Per row, with `n` tokens committed and drafts `d_0 .. d_{L-2}` for tokens
`n .. n + L - 2`, each drawn from a stored distribution `q_i`:

1. Forward `[tok_{n-1}, d_0, .., d_{L-2}]` at token position `n - 1`; output `j`
   gives the target `p_j` of token `n + j` after CFG (scale at the absolute
   token index `n + j`, as plain AR), temperature, top-k and top-p. A sample
   `s_j ~ p_j` is drawn at every output.
2. Verify `d_i` for `i = 0, 1, ..`: accept with probability
   `min(1, p_i(d_i) / q_i(d_i))`, stop at the first rejection `a` (`a`
   accepted drafts).
3. Commit the accepted drafts and one more token: at a rejection a sample of
   the normalised residual `max(0, p_a - q_a)`; if all `L - 1` drafts pass, the
   bonus `s_{L-1}`. This is speculative sampling (Leviathan et al. 2023), so
   every committed token is an exact draw of `p(. | committed prefix)`.
4. Jacobi update: the outputs past the rejection, `s_{a+1} .. s_{L-1}`, become
   the next drafts with `q = p_{a+1} .. p_{L-1}`; the `a + 1` slots left at the
   end of the window get fresh drafts with a one-hot `q` (so acceptance
   probability `p(draft)`): `random` (uniform over the vocabulary),
   `repeat_horizontal` / `repeat_prev` (copy the previous token in raster
   order) or `repeat_vertical` (copy the token one grid row above; the first
   row copies the previous token). `INITS` lists which a layout allows.
5. KV cache: the window wrote keys and values for all `L` positions; only the
   verified prefix counts. Attention masks keys by position (`key <= query`),
   so the stale entries past it are overwritten before any query can see them
   and "truncation" is not advancing the row's position.

Heads: SJD needs exact per-token probabilities, the tokens of a step drawn
each on its own from them (`EXACT_PROBS`: the categorical head, and
Token-Shuffle window heads drawing independently); `visgen.sampling.require`
refuses any other head. A step has `g` tokens (`g = s^2` for a Token-Shuffle
window, 1 otherwise), conditionally independent given the step's hidden
state, so the loop runs over steps with a `g` axis: a draft is a whole window
(a repeat init copies the previous or upper window), each of its tokens is
tested on its own, and the step is accepted only when all `g` pass. At the
first failing step the tokens that passed are kept and the others are
redrawn from their own residuals. Each token is then an exact, independent
draw of its `p`, so the window is an exact draw of their product; the joint
test `min(1, prod p / prod q)` would accept more often, but its residual
over `V^g` windows is intractable. (This composition is ours; the two papers
do not combine them.) Coupled window draws are refused: a coupled window is
not a product of per-token distributions that drafts could be tested
against.

Batches: rows accept different numbers of drafts, so each row keeps its own
position; the model's `decode_step` runs under `jax.vmap` over rows (each with
its conditional and, under CFG, its null row). The loop runs until every row
is done, so a batch takes as many passes as its slowest row. The whole loop is
one `lax.while_loop` over static shapes: the KV cache has `L - 1` positions of
room for the window past the last step, the token buffer `[B, M + L, g]` holds
committed steps then drafts (`M` steps; `M = N` and `g = 1` without
Token-Shuffle), and `q` is `[B, L - 1, g, V]`.

Randomness: pass `k` (the prefill is pass 0) draws its last output (the bonus
token) with `jax.random.categorical(fold_in(rng, k), ...)`, exactly as plain AR
draws token `k`, so `window=1` (no drafts) reproduces `visgen.sampling.sample`
token for token. The acceptance tests, the other outputs and the residual
(inverse-CDF draws, one uniform each instead of `V` Gumbels) and random drafts
use one array of uniforms from `fold_in(fold_in(rng, k), 1)`, fresh every pass.

Differences from the official code: Jacobi mode covers every token after the
first (the official code enables it inside a position range that skips
Lumina-mGPT's newline tokens); the residual is not re-filtered by top-k
(its support already lies inside `p`'s top-k set, so that is a no-op); the
`repeat_vertical` init the paper reports best but the code disables is
implemented.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators import EXACT_PROBS, Cache, guide
from visgen.generators.categorical import draw_processed, process_logits
from visgen.sampling.ar import ModelLike, as_graph_state
from visgen.sampling.guidance import guidance_scale
from visgen.sampling.options import SampleOptions, require
from visgen.sampling.weight_layout import loop_model

INITS_1D: tuple[str, ...] = ("random", "repeat_prev")
INITS_GRID: tuple[str, ...] = ("random", "repeat_horizontal", "repeat_vertical")
DEFAULT_WINDOW = 16
# The best of `INITS_GRID` on the demo generator (docs/notes/2026-11-26-sjd-demo-generator.md);
# 1D layouts use the matching previous-token copy.
DEFAULT_INIT_GRID = "repeat_horizontal"
DEFAULT_INIT_1D = "repeat_prev"


def inits_for(layout: tuple[int, ...]) -> tuple[str, ...]:
    """Draft initialisations valid for a token layout: 1D `(K,)` or a grid."""
    return INITS_1D if len(layout) == 1 else INITS_GRID


def default_init(layout: tuple[int, ...]) -> str:
    """The default draft initialisation for a token layout."""
    return DEFAULT_INIT_1D if len(layout) == 1 else DEFAULT_INIT_GRID


def check_sjd_args(layout: tuple[int, ...], window: int, init: str) -> None:
    """Raise ValueError unless `window >= 1` and `init` suits `layout` (a model's
    `step_layout`: the token layout, or the fused grid of Token-Shuffle windows)."""
    if window < 1:
        raise ValueError(f"the SJD window must be >= 1, got {window}")
    valid = inits_for(layout)
    if init not in valid:
        kind = "1D" if len(layout) == 1 else "grid"
        raise ValueError(
            f"SJD init {init!r} does not apply to the {kind} layout {layout}; "
            f"valid: {', '.join(valid)}"
        )


class SJDState(NamedTuple):
    """The loop carry (`G` = 2 rows per condition under CFG, else 1; `S` cache length).

    A step is one token, or with Token-Shuffle one window of `g = s^2` tokens
    (`g = 1` without it); `M` steps make a sample.

    Attributes:
      step: forward passes so far (the prefill is pass 0), int32 scalar.
      pos: `[B]` steps committed per row.
      tokens: `[B, M + L, g]` committed steps `< pos`, drafts at `pos .. pos + L - 2`,
        in the model's fused order.
      q: `[B, L - 1, g, V]` the distribution each draft token was drawn from.
      cache: per layer `{"k", "v"}` of `[B, G, H, S, Dh]`.
      passes: `[B]` verification passes each row took (prefill excluded).
      accepted: `[B]` draft steps each row accepted.
    """

    step: jax.Array
    pos: jax.Array
    tokens: jax.Array
    q: jax.Array
    cache: Cache
    passes: jax.Array
    accepted: jax.Array


def passes_test(p: jax.Array, q: jax.Array, drafts: jax.Array, u: jax.Array) -> jax.Array:
    """Whether each draft token passes: `u q(x) < p(x)`, probability `min(1, p(x) / q(x))`.

    `p, q: [..., V]` target and draft distributions, `drafts, u: [...]` -> `[...]` bool.
    """
    p_x = jnp.take_along_axis(p, drafts[..., None], axis=-1)[..., 0]
    q_x = jnp.take_along_axis(q, drafts[..., None], axis=-1)[..., 0]
    return u * q_x < p_x


def accept_drafts(p: jax.Array, q: jax.Array, drafts: jax.Array, u: jax.Array) -> jax.Array:
    """The number of leading draft steps accepted, `[B]` int32.

    `p, q: [B, L - 1, g, V]` target and draft distributions, `drafts, u: [B, L - 1, g]`
    tokens and uniforms. A step passes when each of its `g` tokens passes its own
    test (`passes_test`); the count stops at the first step that does not.
    """
    ok = jnp.all(passes_test(p, q, drafts, u), axis=-1)
    return jnp.sum(jnp.cumprod(ok, axis=1), axis=1).astype(jnp.int32)


def inverse_cdf_draw(weights: jax.Array, u: jax.Array) -> jax.Array:
    """Draws from non-negative `weights: [..., V]` (normalised here) with uniforms `u: [...]`.

    The first positive-weight index whose cumulative weight exceeds `u * total`
    (the last positive one if rounding leaves none), so a zero-weight index is
    never drawn. One uniform per draw instead of the `V` Gumbels of
    `jax.random.categorical`: on a CPU the Gumbels of a whole window cost more
    than the transformer pass of a small model. The prefix sum is an
    associative scan (on a CPU 8x faster than `cumsum` at `V = 16384`).
    """
    cumulative = jax.lax.associative_scan(jnp.add, weights, axis=-1)
    positive = weights > 0
    hit = positive & (cumulative > u[..., None] * cumulative[..., -1:])
    last = weights.shape[-1] - 1 - jnp.argmax(positive[..., ::-1], axis=-1)
    return jnp.where(jnp.any(hit, axis=-1), jnp.argmax(hit, axis=-1), last).astype(jnp.int32)


def _take_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """`x[b, index[b, i]]` for `x: [B, M, ...]`, `index: [B, I]` -> `[B, I, ...]`."""
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def _copy_sources(slots: jax.Array, fill: jax.Array, width: int) -> jax.Array:
    """The token a repeat init copies into each slot `[B, I]`, `width` 1 for the previous.

    Slot `t` copies `t - width` (`t - 1` in the first grid row). Filled slots
    are a suffix of the window from slot `f`, so a copy chains through filled
    slots until it reaches a known token: the first token below `f` on the
    vertical chain, or `f - 1` where the chain enters the first row (whose
    slots copy, in turn, the previous token). `f >= 1` as token 0 is committed.
    """
    first = jnp.min(jnp.where(fill, slots, jnp.iinfo(jnp.int32).max), axis=1, keepdims=True)
    above = slots - width * ((slots - first) // width + 1)
    return jnp.where(above >= 0, above, first - 1)


def _init_drafts(
    tokens: jax.Array,
    slots: jax.Array,
    fill: jax.Array,
    u: jax.Array,
    init: str,
    layout: tuple[int, ...],
    vocab: int,
) -> jax.Array:
    """Fresh drafts into `tokens: [B, M + L, g]` at step slots `slots: [B, I]` where
    `fill: [B, I]`; a repeat init copies a whole step (all `g` tokens).

    `random` draws token `floor(u * vocab)` from uniforms `u: [B, I, g]`.
    """
    if slots.shape[1] == 0:  # window 1: no drafts
        return tokens
    if init == "random":
        fresh = jnp.minimum(jnp.floor(u * vocab), vocab - 1).astype(jnp.int32)
    else:
        width = layout[-1] if init == "repeat_vertical" else 1
        fresh = _take_rows(tokens, _copy_sources(slots, fill, width))
    rows = jnp.arange(tokens.shape[0])[:, None]
    keep = _take_rows(tokens, slots)
    return tokens.at[rows, slots].set(jnp.where(fill[..., None], fresh, keep))


def _new_drafts(
    tokens: jax.Array, slots: jax.Array, fill: jax.Array, u: jax.Array, init: str, layout, vocab
) -> tuple[jax.Array, jax.Array]:
    """`_init_drafts`, and the one-hot `q` `[B, I, g, V]` of every slot's tokens."""
    tokens = _init_drafts(tokens, slots, fill, u, init, layout, vocab)
    return tokens, jax.nn.one_hot(_take_rows(tokens, slots), vocab, dtype=jnp.float32)


def _sjd_loop(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions,
    window: int,
    init: str,
    max_passes: jax.Array,
) -> SJDState:
    model = nnx.merge(graphdef, state)
    # `n` steps of `g` tokens each (Token-Shuffle windows; g = 1 without it).
    b, n, vocab = cond.shape[0], model.num_steps, model.spec.vocab_size
    g, layout = model.tokens_per_step, model.step_layout
    init = init or default_init(layout)
    head_options = options.head_options(model.head)
    temperature = options.temperature
    length, drafts = window, window - 1
    guided = options.guided
    groups = 2 if guided else 1
    rows = jnp.arange(b)
    cond_all = jnp.concatenate([cond, cond]) if guided else cond
    drop = jnp.arange(2 * b) >= b if guided else None

    def process(logits: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`[B, G, K, g, V]` logits predicting steps `index` `[B, K]` -> `process_logits`."""
        if guided:
            scale = guidance_scale(
                options.cfg_schedule, options.cfg_scale, index, n, options.cfg_interval
            )
            logits = guide(logits[:, 0], logits[:, 1], scale[..., None, None])
            return process_logits(logits, temperature, head_options)
        return process_logits(logits[:, 0], temperature, head_options)

    in_loop = loop_model(graphdef, state)

    def forward(window_tokens: jax.Array, start: jax.Array, cache: Cache):
        """Steps `[B, L, g]` whose first is step `start[b]` -> logits `[B, G, L, g, V]`, cache."""
        step_model = in_loop()

        def one_row(tokens, start, cache):
            fed = jnp.broadcast_to(tokens, (groups, length, g))
            hidden, cache = step_model.decode_step(fed, start, cache)
            return step_model.head.logits(hidden), cache

        return jax.vmap(one_row)(window_tokens, start, cache)

    # Pass 0: the prefill commits token 0 with plain AR's key, then the first drafts.
    cache = model.init_cache(groups * b, max_len=model.max_len + drafts)
    hidden, cache = model.prefill(cond_all, cache, drop=drop)
    logits = model.head.logits(hidden[:, None])
    cache = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(groups, b, *x.shape[1:]), 0, 1), cache)
    logits = logits.reshape(groups, b, 1, g, vocab).swapaxes(0, 1)
    filtered, _ = process(logits, jnp.zeros((b, 1)))
    key0 = jax.random.fold_in(rng, 0)
    first = draw_processed(filtered[:, 0], key0, temperature)
    tokens = jnp.zeros((b, n + length, g), jnp.int32).at[:, 0].set(first)
    zeros = jnp.zeros((b,), jnp.int32)
    slots = 1 + jnp.broadcast_to(jnp.arange(drafts), (b, drafts))
    u = jax.random.uniform(jax.random.fold_in(key0, 1), (b, drafts, g))
    tokens, q = _new_drafts(tokens, slots, jnp.ones_like(slots, bool), u, init, layout, vocab)
    st = SJDState(jnp.int32(1), zeros + 1, tokens, q, cache, zeros, zeros)

    def verify_pass(st: SJDState) -> SJDState:
        key = jax.random.fold_in(rng, st.step)
        # One draw of uniforms per pass (few RNG calls: each is a loop on a CPU).
        u = jax.random.uniform(jax.random.fold_in(key, 1), (b, 3, length, g))
        u_accept, u_draw, u_init = u[:, 0, :drafts], u[:, 1], u[:, 2, :drafts]
        offsets = jnp.arange(length)
        window_tokens = _take_rows(st.tokens, st.pos[:, None] - 1 + offsets)
        logits, cache = forward(window_tokens, st.pos - 1, st.cache)
        filtered, p = process(logits, st.pos[:, None] + offsets)
        # The last output (the bonus token) is drawn as plain AR draws token `step`; the
        # others only seed the next drafts, with one uniform each.
        last = draw_processed(filtered[:, -1], key, temperature)[:, None]
        s = jnp.concatenate([inverse_cdf_draw(p[:, :-1], u_draw[:, :-1]), last], axis=1)
        if drafts:
            a = accept_drafts(p[:, :-1], st.q, window_tokens[:, 1:], u_accept)
            at = jnp.minimum(a, drafts - 1)
            # The first failing step keeps the tokens that passed and redraws the others
            # from their residuals: each token is then an exact draw, independently.
            p_at, q_at, draft_at = p[rows, at], st.q[rows, at], window_tokens[rows, at + 1]
            kept = passes_test(p_at, q_at, draft_at, u_accept[rows, at])
            redrawn = inverse_cdf_draw(jnp.maximum(p_at - q_at, 0.0), u_draw[:, -1])
            correction = jnp.where(
                (a < drafts)[:, None], jnp.where(kept, draft_at, redrawn), last[:, 0]
            )
        else:
            a, correction = jnp.zeros((b,), jnp.int32), last[:, 0]
        active = st.pos < n
        # Steps past M are scratch: a row that finishes mid-window commits no more.
        new_pos = jnp.minimum(st.pos + a + 1, n)
        tokens = st.tokens.at[rows, st.pos + a].set(correction, mode="drop")
        # Jacobi update: outputs past the rejection become the next drafts.
        tail = a[:, None] + 1 + jnp.arange(drafts)
        carried = tail < length
        tail = jnp.minimum(tail, length - 1)
        slots = new_pos[:, None] + jnp.arange(drafts)
        tokens = tokens.at[rows[:, None], slots].set(
            jnp.where(carried[..., None], _take_rows(s, tail), _take_rows(tokens, slots))
        )
        tokens, q_init = _new_drafts(tokens, slots, ~carried, u_init, init, layout, vocab)
        q = jnp.where(carried[..., None, None], _take_rows(p, tail), q_init)
        return SJDState(
            st.step + 1,
            new_pos,
            tokens,
            q,
            cache,
            st.passes + active,
            st.accepted + jnp.where(active, jnp.minimum(a, n - st.pos), 0),
        )

    def running(st: SJDState) -> jax.Array:
        return jnp.any(st.pos < n) & (st.step <= max_passes)

    return jax.lax.while_loop(running, verify_pass, st)


_sjd_loop_jit = jax.jit(_sjd_loop, static_argnames=("graphdef", "options", "window", "init"))


def run_sjd(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None,
    window: int,
    init: str | None,
    max_passes: int | None = None,
) -> SJDState:
    """The jitted SJD loop's final state (the arguments of `sample_sjd`).

    `max_passes` stops after that many verification passes (tests inspect the
    state mid-sample; it is traced, so it shares the compiled loop). Bad
    `window` or `init` values raise ValueError.
    """
    graphdef, state = as_graph_state(model)
    options = options or SampleOptions()
    module = nnx.merge(graphdef, state)
    require(module.head, options, EXACT_PROBS, "SJD")
    check_sjd_args(module.step_layout, window, init or default_init(module.step_layout))
    limit = jnp.iinfo(jnp.int32).max if max_passes is None else max_passes
    return _sjd_loop_jit(
        graphdef,
        state,
        jnp.asarray(cond),
        rng,
        options=options,
        window=window,
        init=init,
        max_passes=jnp.int32(limit),
    )


def sample_sjd(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None = None,
    *,
    window: int = DEFAULT_WINDOW,
    init: str | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Sample token ids with speculative Jacobi decoding.

    Args:
      model: an `ARGenerator` whose head gives exact per-token probabilities, or its
        `(graphdef, state)`.
      cond: class labels `[B]` int or text embeddings `[B, c, D_text]`.
      rng: a PRNG key; equal keys give equal samples.
      options: decoding options as for `visgen.sampling.sample` (static).
      window: tokens per forward pass `L` (`L - 1` drafts); 1 is plain AR.
      init: draft initialisation (`inits_for(model.step_layout)`); None is the
        layout's default.

    Returns:
      tokens `[B, N]` int32 in raster order, distributed as `visgen.sampling.sample`'s,
      and stats: `forward_passes` (prefill included; the batch runs until its
      slowest row is done), `tokens_generated` (`B * N`), `accepted_drafts`
      (draft steps, summed over rows), `verify_passes` (passes summed over
      rows, prefill excluded), `accepted_per_pass` (their ratio),
      `step_compression` (`M / forward_passes` for `M` steps; plain AR's is 1)
      and `row_step_compression` (`M` over the mean of the rows' own pass
      counts: what a row alone, batch 1, gets on average; a batch's
      `step_compression` is lower, as it waits for its slowest row). A step
      is a token, or with Token-Shuffle a window of `s^2` tokens.
    """
    st = run_sjd(model, cond, rng, options, window, init)
    b, n = st.tokens.shape[0], st.tokens.shape[1] - window
    forward_passes, accepted, verify = (
        int(x) for x in jax.device_get((st.step, jnp.sum(st.accepted), jnp.sum(st.passes)))
    )
    module = model if isinstance(model, nnx.Module) else nnx.merge(*model)
    tokens = module.trunk_input.from_steps(st.tokens[:, :n])
    return tokens, {
        "forward_passes": forward_passes,
        "tokens_generated": int(tokens.size),
        "accepted_drafts": accepted,
        "verify_passes": verify,
        "accepted_per_pass": accepted / max(verify, 1),
        "step_compression": n / forward_passes,
        "row_step_compression": b * n / (b + verify),
    }
