"""Speculative Jacobi Decoding (SJD), with coupled drafts (MC-SJD): lossless parallel sampling.

Teng et al. 2025, "Accelerating Auto-regressive Text-to-Image Generation with
Training-free Speculative Jacobi Decoding" (ICLR 2025; the official
`scheduler/jacobi_iteration_lumina_mgpt.py`), and MC-SJD (arXiv 2510.24211),
which couples each position's draft with its previous one. One forward pass
verifies a window of `L` steps instead of producing one, and the committed
tokens are distributed exactly as plain AR sampling with the same options.

Per row, with `n` steps committed and drafts `d_0 .. d_{L-2}` for steps
`n .. n + L - 2`, each drawn from a stored distribution `q_i`:

1. Forward `[step_{n-1}, d_0, .., d_{L-2}]` at position `n - 1`; output `j`
   gives the target `p_j` of step `n + j` after CFG (scale at the absolute
   step `n + j`, as plain AR), temperature, top-k and top-p.
2. Verify `d_i` for `i = 0, 1, ..`: accept with probability
   `min(1, p_i(d_i) / q_i(d_i))`, stop at the first rejection `a` (`a`
   accepted drafts).
3. Commit the accepted drafts and one more step: at a rejection a sample of
   the normalised residual `max(0, p_a - q_a)`; if all `L - 1` drafts pass, the
   bonus, a draw of `p_{L-1}`. This is speculative sampling (Leviathan et al.
   2023), so every committed token is an exact draw of `p(. | committed prefix)`.
4. Jacobi update: outputs `a + 1 .. L - 1` give the next drafts, with
   `q = p_{a+1} .. p_{L-1}`; the `a + 1` slots left at the end of the window get
   fresh drafts with a one-hot `q` (acceptance probability `p(draft)`):
   `random` (uniform), `repeat_horizontal` / `repeat_prev` (copy the previous
   step in raster order) or `repeat_vertical` (copy the step one grid row
   above; the first row copies the previous step).
5. KV cache: the window wrote keys and values for all `L` positions; only the
   verified prefix counts. Attention masks keys by position (`key <= query`),
   so the stale entries past it are overwritten before any query can see them
   and "truncation" is not advancing the row's position.

Coupling (`coupling`, step 4's redraw; `visgen.sampling.sjd_drafts`):
`none` draws each next draft afresh from `p_j` (SJD); `maximal` keeps the
previous draft `x ~ q` with probability `min(1, p_j(x) / q(x))`, else draws
the residual (MC-SJD's maximal coupling: the speculative test, run past the
first rejection); `gumbel` draws `argmax(log p_j + G)` with noise `G` fixed
per (row, step, token) for the whole sample (MC-SJD's cheaper coupling).
Each next draft is still an exact draw of its `q = p_j`, made with
randomness that no test of an earlier position reads, and steps 2-3 are
unchanged, so the output is still exact; drafts just stop flickering
between iterations.

Heads: SJD needs per-token probabilities (`require`; the head's
`capabilities`). A step has `g` tokens (`g = s^2` for a Token-Shuffle window,
1 otherwise); a draft is a whole step (a repeat init copies the previous or
upper window).

- `EXACT_PROBS` (the categorical head; Token-Shuffle windows drawn
  independently): the step's tokens are conditionally independent, each is
  tested on its own against `head.logits(hidden)`, and the step is accepted
  only when all `g` pass. At the first failing step the tokens that passed
  are kept and the others redrawn from their own residuals; each token is
  then an exact, independent draw of its `p`, so the window is an exact draw
  of their product.
- `CAUSAL_PROBS` (the causal window head): token `j`'s target is the head's
  conditional given the window's tokens before it,
  `head.logits(hidden, drafted window)[j]`, and the tokens are tested in
  order, so a step is speculative sampling over its tokens. At the first
  rejected token of step `a` that token is redrawn from its residual and the
  rest of the window drawn from the head given the new prefix (`g` head
  evaluations, no trunk pass), so the step still commits in this pass. Next
  drafts are drawn the same way, token after token from the head given the
  window's new tokens, with each token's conditional as its `q`.

Not in the papers (ours): Token-Shuffle windows as steps, in both forms
above (the per-token test composed with a step's all-pass rule, and
speculative sampling within a causal window), with coupling per token (a
causal window's token `j` coupled under its conditional given the window's
new earlier tokens); the joint test `min(1, prod p / prod q)` would accept
more often, but its residual over `V^g` windows is intractable. Also ours:
maximal coupling computed as the speculative test past the first rejection,
and the counters of acceptance and of draft flicker (`sample_sjd`'s stats).
Coupled windows (`WindowOptions.coupled`) are refused: a window drawn with
one shared Gumbel vector is not a product of per-token distributions that
drafts could be tested against.

Batches: rows accept different numbers of drafts, so each row keeps its own
position; the model's `decode_step` runs under `jax.vmap` over rows (each with
its conditional and, under CFG, its null row). The loop runs until every row
is done, so a batch takes as many passes as its slowest row. The whole loop is
one `lax.while_loop` over static shapes: the KV cache has `L - 1` positions of
room for the window past the last step, the token buffer `[B, M + L, g]` holds
committed steps then drafts (`M` steps; `M = N` and `g = 1` without
Token-Shuffle), and `q` is `[B, L - 1, g, V]`.

Randomness: pass `k` (the prefill is pass 0) draws a step it commits fresh
(the bonus; a causal window's tail after a rejection) as plain AR draws step
`k`: key `fold_in(rng, k)`, and a causal head's token `j` with
`fold_in(fold_in(rng, k), j)`. So `window=1` (no drafts) reproduces
`visgen.sampling.sample` token for token. The acceptance tests, the other
outputs, the residuals (inverse-CDF draws, one uniform each instead of `V`
Gumbels) and random drafts use one array of uniforms per pass from
`fold_in(fold_in(rng, k), c)`, `c = 1` (`c = g`, past the token keys, for a
causal head). `maximal` reuses the test's uniforms past the first rejection
(no test read them); `gumbel` noise comes from a stream no pass key reaches.

Differences from the official code: Jacobi mode covers every step after the
first (the official code enables it inside a position range that skips
Lumina-mGPT's newline tokens); the residual is not re-filtered by top-k
(its support already lies inside `p`'s top-k set, so that is a no-op); the
`repeat_vertical` init the paper reports best but the code disables is
implemented. Measurements: docs/results.md (speculative Jacobi decoding).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators import EXACT_PROBS, Cache, DrawContext, guide
from visgen.generators.base import CAUSAL_PROBS
from visgen.generators.categorical import draw_processed, process_logits
from visgen.sampling.ar import ModelLike, as_graph_state
from visgen.sampling.guidance import guidance_scale
from visgen.sampling.options import SampleOptions, require
from visgen.sampling.sjd_drafts import (
    COUPLINGS,
    GUMBEL_STREAM,
    Acceptance,
    accept_drafts,
    acceptance_rates,
    default_init,
    gumbel_draw,
    inits_for,
    inverse_cdf_draw,
    maximal_coupling,
    new_drafts,
    passes_test,
    position_gumbel,
    take_rows,
)
from visgen.sampling.weight_layout import loop_model

# What SJD needs of a head: either will do (`visgen.sampling.require`).
NEEDS = (EXACT_PROBS, CAUSAL_PROBS)
DEFAULT_WINDOW = 16
# The coupling with the best step compression in docs/results.md (speculative Jacobi decoding).
DEFAULT_COUPLING = "maximal"

__all__ = [
    "COUPLINGS",
    "DEFAULT_COUPLING",
    "DEFAULT_WINDOW",
    "NEEDS",
    "SJDState",
    "acceptance_rates",
    "check_sjd_args",
    "default_init",
    "inits_for",
    "inverse_cdf_draw",
    "run_sjd",
    "sample_sjd",
]


def check_sjd_args(
    layout: tuple[int, ...], window: int, init: str, coupling: str = DEFAULT_COUPLING
) -> None:
    """Raise ValueError unless `window >= 1`, `init` suits `layout` (a model's
    `step_layout`: the token layout, or the fused grid of Token-Shuffle windows) and
    `coupling` is one of `COUPLINGS`."""
    if window < 1:
        raise ValueError(f"the SJD window must be >= 1, got {window}")
    valid = inits_for(layout)
    if init not in valid:
        kind = "1D" if len(layout) == 1 else "grid"
        raise ValueError(
            f"SJD init {init!r} does not apply to the {kind} layout {layout}; "
            f"valid: {', '.join(valid)}"
        )
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown SJD coupling {coupling!r}; valid: {', '.join(COUPLINGS)}")


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
      iteration: `[B, L - 1]` how many times each draft has been redrawn by the model.
      cache: per layer `{"k", "v"}` of `[B, G, H, S, Dh]`.
      passes: `[B]` verification passes each row took (prefill excluded).
      accepted: `[B]` draft steps each row accepted.
      counts: acceptance counts over the whole batch (`Acceptance`).
    """

    step: jax.Array
    pos: jax.Array
    tokens: jax.Array
    q: jax.Array
    iteration: jax.Array
    cache: Cache
    passes: jax.Array
    accepted: jax.Array
    counts: Acceptance


def _sjd_loop(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions,
    window: int,
    init: str,
    coupling: str,
    max_passes: jax.Array,
) -> SJDState:
    model = nnx.merge(graphdef, state)
    # `n` steps of `g` tokens each (Token-Shuffle windows; g = 1 without it).
    b, n, vocab = cond.shape[0], model.num_steps, model.spec.vocab_size
    g, layout = model.tokens_per_step, model.step_layout
    init = init or default_init(layout)
    head_options = options.head_options(model.head)
    causal = CAUSAL_PROBS in model.head.capabilities(head_options)
    temperature = options.temperature
    length, drafts = window, window - 1
    guided = options.guided
    groups = 2 if guided else 1
    rows = jnp.arange(b)
    cond_all = jnp.concatenate([cond, cond]) if guided else cond
    drop = jnp.arange(2 * b) >= b if guided else None
    # A causal head draws token `j` of a fresh step with `fold_in(key, j)`: the uniforms
    # come from past those keys.
    stream = g if causal else 1
    gumbel_key = jax.random.fold_in(rng, GUMBEL_STREAM)

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

    def forward(window_tokens: jax.Array, start: jax.Array, cache: Cache, step_model):
        """Steps `[B, L, g]` whose first is step `start[b]` -> the cache and, per row and
        group, the head's inputs `[B, G, L, D]` (causal) or logits `[B, G, L, g, V]`."""

        def one_row(tokens, start, cache):
            fed = jnp.broadcast_to(tokens, (groups, length, g))
            hidden, cache = step_model.decode_step(fed, start, cache)
            return (hidden if causal else step_model.head.logits(hidden)), cache

        return jax.vmap(one_row)(window_tokens, start, cache)

    def window_logits(head, hidden: jax.Array, steps: jax.Array) -> jax.Array:
        """Causal head: inputs `[B, G, L, D]` and windows `[B, L, g]` -> `[B, G, L, g, V]`,
        token `j`'s logits given the window's tokens before `j`."""

        def one_row(h, s):
            return head.logits(h, jnp.broadcast_to(s, (groups, *s.shape)))

        return jax.vmap(one_row)(hidden, steps)

    def redraw(filtered, p, old, q_old, u_keep, u_draw, noise, fresh_last):
        """The next drafts from outputs `p: [B, L, ..., V]` (`filtered`: their logits).

        Output `i < L - 1` redraws draft `old[:, i]` (drawn from `q_old[:, i]`), coupled
        with it; output `L - 1` draws its step for the first time: `fresh_last`
        `[B, ...]`, or under `gumbel` with the position's noise.
        """
        if coupling == "gumbel":
            return gumbel_draw(filtered, noise, temperature)
        if coupling == "none":
            redrawn = inverse_cdf_draw(p[:, :-1], u_draw[:, :-1])
        else:
            redrawn = maximal_coupling(p[:, :-1], q_old, old, u_keep, u_draw[:, :-1])
        return jnp.concatenate([redrawn, fresh_last[:, None]], axis=1)

    def causal_windows(head, hidden, steps, filtered, p, q_old, a, kept, u, noise, key, index):
        """A causal head's windows, token after token: `[B, L, g]` and their `q` `[B, L, g, V]`.

        `steps: [B, L, g]` the windows the outputs read (the drafts), `a: [B]` the
        committed window, `kept: [B]` its leading draft tokens that passed. Window
        `a` is the committed one: those tokens, the residual of the first rejected
        token, then fresh draws given that prefix (plain AR's keys); all fresh for
        the bonus (`a = L - 1`). Windows past `a` are the next drafts, each token
        redrawn (coupled with its previous draft) from the head's conditional given
        the window's new tokens before it. Windows before `a` keep their drafts.
        """
        u_accept, u_draw = u
        rejected = a < drafts
        slot = jnp.arange(length)[None]
        before, here = slot < a[:, None], slot == a[:, None]
        if drafts:
            at, j = jnp.minimum(a, drafts - 1), jnp.minimum(kept, g - 1)
            weights = jnp.maximum(p[rows, at, j] - q_old[rows, at, j], 0.0)
            residual = inverse_cdf_draw(weights, u_draw[rows, at, j])
        else:
            residual = jnp.zeros((b,), jnp.int32)
        cur, q_new = steps, []
        for j in range(g):
            if j:  # token 0 reads no window token: its logits are the test's
                f_j, p_j = process(window_logits(head, hidden, cur)[:, :, :, j : j + 1], index)
                f_j, p_j = f_j[:, :, 0], p_j[:, :, 0]
            else:
                f_j, p_j = filtered[:, :, 0], p[:, :, 0]
            first_draw = inverse_cdf_draw(p_j[:, -1], u_draw[:, -1, j])
            noise_j = None if noise is None else noise[:, :, j]
            drawn = redraw(
                f_j,
                p_j,
                steps[:, :-1, j],
                q_old[:, :, j],
                u_accept[:, :, j],
                u_draw[:, :, j],
                noise_j,
                first_draw,
            )
            fresh = draw_processed(f_j[rows, a], jax.random.fold_in(key, j), temperature)
            committed = jnp.where(
                j < kept, cur[rows, a, j], jnp.where(rejected & (j == kept), residual, fresh)
            )
            column = jnp.where(before, cur[:, :, j], jnp.where(here, committed[:, None], drawn))
            cur = cur.at[:, :, j].set(column)
            q_new.append(p_j)
        return cur, jnp.stack(q_new, axis=2)

    # Pass 0: the prefill commits step 0 with plain AR's key, then the first drafts.
    cache = model.init_cache(groups * b, max_len=model.max_len + drafts)
    hidden, cache = model.prefill(cond_all, cache, drop=drop)
    key0 = jax.random.fold_in(rng, 0)
    if causal:
        scale = guidance_scale(options.cfg_schedule, options.cfg_scale, 0, n, options.cfg_interval)
        context = DrawContext(temperature, head_options, guided, scale)
        first = model.head.draw(hidden, key0, context)
    else:
        logits = model.head.logits(hidden[:, None]).reshape(groups, b, 1, g, vocab).swapaxes(0, 1)
        filtered, _ = process(logits, jnp.zeros((b, 1)))
        first = draw_processed(filtered[:, 0], key0, temperature)
    cache = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(groups, b, *x.shape[1:]), 0, 1), cache)
    tokens = jnp.zeros((b, n + length, g), jnp.int32).at[:, 0].set(first)
    zeros = jnp.zeros((b,), jnp.int32)
    slots = 1 + jnp.broadcast_to(jnp.arange(drafts), (b, drafts))
    u = jax.random.uniform(jax.random.fold_in(key0, stream), (b, drafts, g))
    tokens, q = new_drafts(tokens, slots, jnp.ones_like(slots, bool), u, init, layout, vocab)
    counts = Acceptance.zeros(window, g)
    st = SJDState(jnp.int32(1), zeros + 1, tokens, q, slots * 0, cache, zeros, zeros, counts)

    def verify_pass(st: SJDState) -> SJDState:
        key = jax.random.fold_in(rng, st.step)
        # One draw of uniforms per pass (few RNG calls: each is a loop on a CPU).
        u = jax.random.uniform(jax.random.fold_in(key, stream), (b, 3, length, g))
        u_accept, u_draw, u_init = u[:, 0, :drafts], u[:, 1], u[:, 2, :drafts]
        offsets = jnp.arange(length)
        index = st.pos[:, None] + offsets
        window_tokens = take_rows(st.tokens, index - 1)
        drafted = window_tokens[:, 1:]
        noise = position_gumbel(gumbel_key, index, (g, vocab)) if coupling == "gumbel" else None
        step_model = in_loop()
        out, cache = forward(window_tokens, st.pos - 1, st.cache, step_model)
        if causal:
            # Each output reads the next draft window (the last output an empty one).
            steps = jnp.concatenate([drafted, jnp.zeros_like(window_tokens[:, :1])], axis=1)
            filtered, p = process(window_logits(step_model.head, out, steps), index)
        else:
            filtered, p = process(out, index)
        passed = passes_test(p[:, :-1], st.q, drafted, u_accept)
        a = accept_drafts(p[:, :-1], st.q, drafted, u_accept)
        rejected = a < drafts
        at = jnp.minimum(a, max(drafts - 1, 0))
        if causal:
            # The committed window's leading draft tokens that passed (none for the bonus).
            kept = jnp.sum(jnp.cumprod(passed[rows, at], axis=-1), axis=-1) if drafts else zeros
            kept = jnp.where(rejected, kept, 0)
            s, q_out = causal_windows(
                step_model.head,
                out,
                steps,
                filtered,
                p,
                st.q,
                a,
                kept,
                (u_accept, u_draw),
                noise,
                key,
                index,
            )
            correction = s[rows, a]
        else:
            # The last output (the bonus step) is drawn as plain AR draws step `step`.
            last = draw_processed(filtered[:, -1], key, temperature)
            s = redraw(filtered, p, drafted, st.q, u_accept, u_draw, noise, last)
            q_out, correction = p, last
            if drafts:
                # The first failing step keeps the tokens that passed and redraws the others
                # from their residuals: each token is then an exact draw, independently.
                p_at, q_at, draft_at = p[rows, at], st.q[rows, at], drafted[rows, at]
                ok = passes_test(p_at, q_at, draft_at, u_accept[rows, at])
                redrawn = inverse_cdf_draw(jnp.maximum(p_at - q_at, 0.0), u_draw[:, -1])
                correction = jnp.where(rejected[:, None], jnp.where(ok, draft_at, redrawn), last)
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
            jnp.where(carried[..., None], take_rows(s, tail), take_rows(tokens, slots))
        )
        tokens, q_init = new_drafts(tokens, slots, ~carried, u_init, init, layout, vocab)
        q = jnp.where(carried[..., None, None], take_rows(q_out, tail), q_init)
        # Output `j < L - 1` redraws draft `j`; output `L - 1` draws its step for the first time.
        redraws = jnp.concatenate([st.iteration, jnp.zeros((b, 1), jnp.int32)], axis=1) + 1
        iteration = jnp.where(carried, take_rows(redraws, tail), 0)
        # Acceptance counts: draft steps up to the first rejection were tested.
        slot = jnp.arange(drafts)[None]
        valid = active[:, None] & (st.pos[:, None] + slot < n)
        tested, accepted = valid & (slot <= a[:, None]), valid & (slot < a[:, None])
        token_tested = jnp.broadcast_to(tested[..., None], passed.shape)
        if causal:
            # Within the rejected step, tokens up to the first failing one were tested.
            upto = jnp.arange(g) <= kept[:, None, None]
            token_tested = token_tested & (accepted[..., None] | upto)
        # Flicker: drafts past the rejection the model redrew, and whether they changed.
        redrawn = valid & (slot > a[:, None])
        changed = jnp.any(s[:, :drafts] != drafted, axis=-1)
        counts = st.counts.add(
            tested, accepted, st.iteration, token_tested, passed, redrawn, changed
        )
        return SJDState(
            st.step + 1,
            new_pos,
            tokens,
            q,
            iteration,
            cache,
            st.passes + active,
            st.accepted + jnp.where(active, jnp.minimum(a, n - st.pos), 0),
            counts,
        )

    def running(st: SJDState) -> jax.Array:
        return jnp.any(st.pos < n) & (st.step <= max_passes)

    return jax.lax.while_loop(running, verify_pass, st)


_sjd_loop_jit = jax.jit(
    _sjd_loop, static_argnames=("graphdef", "options", "window", "init", "coupling")
)


def run_sjd(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None,
    window: int,
    init: str | None,
    max_passes: int | None = None,
    coupling: str = DEFAULT_COUPLING,
) -> SJDState:
    """The jitted SJD loop's final state (the arguments of `sample_sjd`).

    `max_passes` stops after that many verification passes (tests inspect the
    state mid-sample; it is traced, so it shares the compiled loop). Bad
    `window`, `init` or `coupling` values raise ValueError.
    """
    graphdef, state = as_graph_state(model)
    options = options or SampleOptions()
    module = nnx.merge(graphdef, state)
    require(module.head, options, NEEDS, "SJD")
    check_sjd_args(module.step_layout, window, init or default_init(module.step_layout), coupling)
    limit = jnp.iinfo(jnp.int32).max if max_passes is None else max_passes
    return _sjd_loop_jit(
        graphdef,
        state,
        jnp.asarray(cond),
        rng,
        options=options,
        window=window,
        init=init,
        coupling=coupling,
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
    coupling: str = DEFAULT_COUPLING,
) -> tuple[jax.Array, dict[str, Any]]:
    """Sample token ids with speculative Jacobi decoding.

    Args:
      model: an `ARGenerator` whose head gives per-token probabilities (`NEEDS`), or
        its `(graphdef, state)`.
      cond: class labels `[B]` int or text embeddings `[B, c, D_text]`.
      rng: a PRNG key; equal keys give equal samples.
      options: decoding options as for `visgen.sampling.sample` (static).
      window: steps per forward pass `L` (`L - 1` drafts); 1 is plain AR.
      init: draft initialisation (`inits_for(model.step_layout)`); None is the
        layout's default.
      coupling: how a draft is redrawn between iterations (`COUPLINGS`; static):
        `none` (SJD), `maximal` or `gumbel` (MC-SJD).

    Returns:
      tokens `[B, N]` int32 in raster order, distributed as `visgen.sampling.sample`'s,
      and stats: `forward_passes` (prefill included; the batch runs until its
      slowest row is done), `tokens_generated` (`B * N`), `accepted_drafts`
      (draft steps, summed over rows), `verify_passes` (passes summed over
      rows, prefill excluded), `accepted_per_pass` (their ratio),
      `step_compression` (`M / forward_passes` for `M` steps; plain AR's is 1),
      `row_step_compression` (`M` over the mean of the rows' own pass
      counts: what a row alone, batch 1, gets on average; a batch's
      `step_compression` is lower, as it waits for its slowest row) and
      `acceptance`: tested and accepted drafts by position in the window
      (`slot_*`, `L - 1`), by Jacobi iteration (`iteration_*`, `L`: how many
      times the model had redrawn the draft, 0 for an initialised one) and by
      token of a step (`token_*`, `g`), and the drafts redrawn past the first
      rejection (`redrawn`) and how many of them changed (`changed`), summed
      over rows (`acceptance_rates` turns them into rates). A step is a token,
      or with Token-Shuffle a window of `s^2` tokens.
    """
    st = run_sjd(model, cond, rng, options, window, init, coupling=coupling)
    b, n = st.tokens.shape[0], st.tokens.shape[1] - window
    forward_passes, accepted, verify, counts = jax.device_get(
        (st.step, jnp.sum(st.accepted), jnp.sum(st.passes), st.counts._asdict())
    )
    forward_passes, accepted, verify = int(forward_passes), int(accepted), int(verify)
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
        "acceptance": {
            name: int(c) if c.ndim == 0 else [int(x) for x in c] for name, c in counts.items()
        },
    }
