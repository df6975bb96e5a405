"""SJD's drafts: initialisation, the speculative test, residual draws and coupled redraws.

The pieces `visgen.sampling.sjd`'s loop is built from, on arrays with a
window axis (`L - 1` draft steps, or `L` outputs) and a step axis of `g`
tokens (`g = s^2` for a Token-Shuffle window, 1 otherwise):

- initialisation of fresh drafts (`INITS_1D`, `INITS_GRID`; the copy rules
  of the official SJD code, plus the vertical copy the paper reports best);
- the speculative test `min(1, p(x) / q(x))` and the residual
  `norm(max(0, p - q))` (Leviathan et al. 2023), drawn by inverse CDF;
- coupled redraws (MC-SJD, arXiv 2510.24211): a position's next draft,
  an exact draw of its new distribution `q'`, made to agree with its
  previous draft `x ~ q` as often as possible. `maximal`: keep `x` with
  probability `min(1, q'(x) / q(x))`, else draw the residual of `q'` over
  `q`; that is the speculative test with `q'` as the target, so these are the
  same two functions. `gumbel`: `argmax(log q' + G)` with one Gumbel vector
  `G` per (row, step, token) for the whole sample, so a position redraws with
  the same noise at every iteration;
- acceptance counters by position in the window, by token of a step and by
  the draft's Jacobi iteration (`Acceptance`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

INITS_1D: tuple[str, ...] = ("random", "repeat_prev")
INITS_GRID: tuple[str, ...] = ("random", "repeat_horizontal", "repeat_vertical")
# The best of `INITS_GRID` on the demo generator (docs/notes/2026-11-26-sjd-demo-generator.md);
# 1D layouts use the matching previous-token copy.
DEFAULT_INIT_GRID = "repeat_horizontal"
DEFAULT_INIT_1D = "repeat_prev"
COUPLINGS: tuple[str, ...] = ("none", "maximal", "gumbel")
# The Gumbel coupling's noise: a key stream no pass reaches (pass `k` uses `fold_in(rng, k)`,
# `k < M`), so the noise is independent of every test and residual draw.
GUMBEL_STREAM = 2**31 - 1


def inits_for(layout: tuple[int, ...]) -> tuple[str, ...]:
    """Draft initialisations valid for a token layout: 1D `(K,)` or a grid."""
    return INITS_1D if len(layout) == 1 else INITS_GRID


def default_init(layout: tuple[int, ...]) -> str:
    """The default draft initialisation for a token layout."""
    return DEFAULT_INIT_1D if len(layout) == 1 else DEFAULT_INIT_GRID


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


def maximal_coupling(
    p: jax.Array, q: jax.Array, drafts: jax.Array, u_keep: jax.Array, u_draw: jax.Array
) -> jax.Array:
    """An exact draw of `p` per position, equal to the previous draft as often as possible.

    `drafts: [...]` were drawn from `q: [..., V]`; each is kept with probability
    `min(1, p(x) / q(x))` (uniforms `u_keep`), else replaced by a draw of
    `norm(max(0, p - q))` (uniforms `u_draw`). The result is distributed as `p`
    and differs from the draft with probability `TV(p, q)`, the least any
    coupling allows. Also the speculative correction: a tested draft that
    passes is kept, one that fails is redrawn from the residual.
    """
    residual = inverse_cdf_draw(jnp.maximum(p - q, 0.0), u_draw)
    return jnp.where(passes_test(p, q, drafts, u_keep), drafts, residual)


def position_gumbel(key: jax.Array, steps: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Gumbel noise keyed by position: `steps: [B, K]` absolute step indices -> `[B, K, *shape]`.

    Row `b`, step `t` always gets `gumbel(fold_in(fold_in(base, b), t), shape)`, whatever
    the iteration or the step's place in the window, so a position redraws from a new
    distribution with its old noise. `base` is a threefry key made from `key`'s bits:
    threefry's draws under `vmap` are those of each key alone, which RBG keys' are not.
    """
    words = jax.random.key_data(key).reshape(-1)
    base = jax.random.wrap_key_data(words[:2], impl="threefry2x32")
    for word in words[2:]:
        base = jax.random.fold_in(base, word)

    def one(b: jax.Array, t: jax.Array) -> jax.Array:
        return jax.random.gumbel(jax.random.fold_in(jax.random.fold_in(base, b), t), shape)

    rows = jnp.broadcast_to(jnp.arange(steps.shape[0])[:, None], steps.shape)
    return jax.vmap(jax.vmap(one))(rows, steps)


def gumbel_draw(filtered: jax.Array, gumbel: jax.Array, temperature: float) -> jax.Array:
    """`argmax(filtered + G)`: an exact draw of `softmax(filtered)` per row, `[..., V]` -> `[...]`.

    `filtered` are `process_logits` logits (tempered, filtered to -inf); at
    temperature 0 the draw is the argmax.
    """
    if temperature == 0.0:
        return jnp.argmax(filtered, axis=-1).astype(jnp.int32)
    return jnp.argmax(filtered + gumbel, axis=-1).astype(jnp.int32)


def take_rows(x: jax.Array, index: jax.Array) -> jax.Array:
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


def init_drafts(
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
        fresh = take_rows(tokens, _copy_sources(slots, fill, width))
    rows = jnp.arange(tokens.shape[0])[:, None]
    keep = take_rows(tokens, slots)
    return tokens.at[rows, slots].set(jnp.where(fill[..., None], fresh, keep))


def new_drafts(
    tokens: jax.Array, slots: jax.Array, fill: jax.Array, u: jax.Array, init: str, layout, vocab
) -> tuple[jax.Array, jax.Array]:
    """`init_drafts`, and the one-hot `q` `[B, I, g, V]` of every slot's tokens (an
    initialised draft is tested with acceptance probability `p(draft)`)."""
    tokens = init_drafts(tokens, slots, fill, u, init, layout, vocab)
    return tokens, jax.nn.one_hot(take_rows(tokens, slots), vocab, dtype=jnp.float32)


class Acceptance(NamedTuple):
    """Tested and accepted draft counts, summed over rows and passes (int32).

    Attributes:
      slot_tested, slot_accepted: `[L - 1]` draft steps by position in the SJD window.
      iteration_tested, iteration_accepted: `[L]` draft steps by Jacobi iteration:
        how many times the model has redrawn the draft (0: initialised, not drawn).
      token_tested, token_accepted: `[g]` draft tokens by position in their step.
      redrawn, changed: `[]` drafts the model redrew past the first rejection (a draft
        there before), and how many of them changed (any token): the flicker that
        coupling removes.
    """

    slot_tested: jax.Array
    slot_accepted: jax.Array
    iteration_tested: jax.Array
    iteration_accepted: jax.Array
    token_tested: jax.Array
    token_accepted: jax.Array
    redrawn: jax.Array
    changed: jax.Array

    @classmethod
    def zeros(cls, window: int, g: int) -> "Acceptance":
        z = jnp.zeros
        i32 = jnp.int32
        sizes = ((window - 1,),) * 2 + ((window,),) * 2 + ((g,),) * 2 + ((),) * 2
        return cls(*(z(n, i32) for n in sizes))

    def add(
        self,
        step_tested: jax.Array,
        step_accepted: jax.Array,
        iteration: jax.Array,
        token_tested: jax.Array,
        token_passed: jax.Array,
        redrawn: jax.Array,
        changed: jax.Array,
    ) -> "Acceptance":
        """Counts one pass: `[B, L - 1]` bool step masks and draft iterations, `[B, L - 1, g]`
        bool token masks (`token_passed`: the token passed its test), `[B, L - 1]` bool
        masks of redrawn drafts and of those that changed."""
        tested, accepted = step_tested.astype(jnp.int32), step_accepted.astype(jnp.int32)
        tokens = token_tested.astype(jnp.int32)
        iteration = jnp.minimum(iteration, self.iteration_tested.shape[0] - 1)
        return Acceptance(
            self.slot_tested + tested.sum(0),
            self.slot_accepted + accepted.sum(0),
            self.iteration_tested.at[iteration].add(tested),
            self.iteration_accepted.at[iteration].add(accepted),
            self.token_tested + tokens.sum((0, 1)),
            self.token_accepted + (tokens * token_passed).sum((0, 1)),
            self.redrawn + redrawn.sum(),
            self.changed + (redrawn & changed).sum(),
        )


def acceptance_rates(counts: dict) -> dict:
    """`{"slot", "iteration", "token"}`: accepted over tested at each index (None if
    untested), and `changed`: the fraction of redrawn drafts that changed, from counts
    `{"slot_tested": [...], "slot_accepted": [...], ..., "redrawn": n, "changed": m}`
    (`Acceptance` as lists and ints)."""
    rates = {}
    for name in ("slot", "iteration", "token"):
        tested, accepted = counts[f"{name}_tested"], counts[f"{name}_accepted"]
        rates[name] = [a / t if t else None for a, t in zip(accepted, tested, strict=True)]
    rates["changed"] = counts["changed"] / counts["redrawn"] if counts["redrawn"] else None
    return rates
