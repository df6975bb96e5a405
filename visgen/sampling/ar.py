"""Plain autoregressive sampling: one jitted decode loop with a KV cache and CFG.

`sample(model, cond, rng, options)` draws `[B, N]` tokens from an
`ARGenerator`. The whole loop is one `jax.jit` program: `prefill` then a
`lax.fori_loop` of `decode_step`s over an explicit KV-cache pytree with
static shapes, so there is no host round-trip per step. `options` and the
model's graph are static, so each distinct `SampleOptions` compiles once and
is cached. Nothing is donated: the cache is born and dies inside the
program, and the parameters are reused across calls.

Each step feeds the previous step's tokens and hands the trunk's hidden
state to the head, which draws the step's `g` tokens
(`head.draw(hidden, key, context)`): guidance (the batch is doubled into
conditional and null rows), temperature and the head's own options are the
head's business, with key `fold_in(rng, step)`, so a sample depends only on
`rng` and is reproducible. The guidance schedule's step index and length
are the step and `M`.

Where the KV cache is large (`SEGMENT_MIN_BYTES`; GPT-B from batch 8), the
loop runs in `CACHE_SEGMENTS` consecutive `fori_loop`s, each over a cache
zero-padded to just the length its steps reach, so attention stops
re-reading the not-yet-written tail on every step (measured in
docs/results.md, decode speed). The tokens are the same; each segment
compiles its own loop body.

`sample_no_cache` recomputes the full sequence every step (for benchmarks and
as a cache-free reference). To keep one static shape it runs the transformer
over all `c + M - 1` positions each step (later, not-yet-sampled positions
are causally masked out of what is read), so its cost per step is that of
the longest prefix, not the current one.

A static `num_steps = s < M` (`sample(..., num_steps=s)`) stops the loop
after its first `s` steps: a k-token prefix of a 1D tokenizer's sequence
(FlexTok) needs only its first steps, since a causal model's first `s` steps
do not depend on the later ones. The tokens of the steps not run are 0 (the
output keeps its static shape `[B, N, ...]`); the steps run draw exactly the
full loop's tokens (the same per-step keys, and the guidance schedule keeps
its length `M`), and the KV cache is only as long as the `s` steps need.

`stats` reports `forward_passes` (one per step run, so `M`, or `s`: the AR
steps; the prefill counts as one; a doubled CFG batch is still one pass) and
`tokens_generated` (`B * N`, or the `B * s * g` tokens of the steps run),
and for a head that counts its own network's evaluations
(`visgen.generators.CountsEvaluations`: a diffusion head's denoising steps)
`head_evaluations`, counted like forward passes (once per batch).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators import Cache, CountsEvaluations, DrawContext
from visgen.sampling.guidance import guidance_scale
from visgen.sampling.options import SampleOptions
from visgen.sampling.weight_layout import loop_model

# The plain decode loop runs in `CACHE_SEGMENTS` segments, each over a cache just long
# enough for it (`cache_segments`), when the whole cache is at least `SEGMENT_MIN_BYTES`:
# then re-reading it every step costs as much as reading the weights (GPT-B at batch 8:
# 151 MB of cache, 444 MB of weights). Smaller caches stay in one loop: each segment
# compiles its own loop body (GPT-B: ~6 s more), and a cache that fits the CPU's caches
# gains nothing.
CACHE_SEGMENTS = 4
SEGMENT_MIN_BYTES = 64 * 2**20


def _decode_loop(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions,
    use_cache: bool,
    nocache_steps: int | None = None,
    num_steps: int | None = None,
) -> jax.Array:
    """`nocache_steps`: without the cache, run only the first steps (the rest stay 0):
    every step costs the same, so benchmarks time a few to rate the whole loop.
    `num_steps`: run only the first steps, with or without the cache (a prefix; the
    rest stay 0)."""
    model = nnx.merge(graphdef, state)
    b, steps = cond.shape[0], model.num_steps
    run = steps if num_steps is None else num_steps
    head_options = options.head_options(model.head)
    if options.guided:
        # Rows [0, B) are conditional, rows [B, 2B) the same conditions dropped to null.
        cond_all = jnp.concatenate([cond, cond])
        drop = jnp.arange(2 * b) >= b
    else:
        cond_all, drop = cond, None

    def pick(hidden: jax.Array, step: jax.Array | int, head=model.head) -> jax.Array:
        """The head's input `[B or 2B, D]` at step `step` -> its tokens `[B, g, ...]`."""
        scale = guidance_scale(
            options.cfg_schedule, options.cfg_scale, step, steps, options.cfg_interval
        )
        context = DrawContext(
            options.temperature, head_options, options.guided, scale, step=step, num_steps=steps
        )
        return head.draw(hidden, jax.random.fold_in(rng, step), context)

    def rows(tokens: jax.Array) -> jax.Array:
        return jnp.concatenate([tokens, tokens]) if options.guided else tokens

    def put(buffer: jax.Array, new: jax.Array, step: jax.Array | int) -> jax.Array:
        return jax.lax.dynamic_update_slice_in_dim(buffer, new[:, None], step, axis=1)

    def empty(first: jax.ShapeDtypeStruct) -> jax.Array:
        """The step buffer `[B, M, g, ...]` for steps shaped like `first` `[B, g, ...]`."""
        return jnp.zeros((b, steps, *first.shape[1:]), first.dtype)

    if use_cache:
        full = jax.eval_shape(lambda: model.init_cache(cond_all.shape[0]))
        cache_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(full))
        segments = cache_segments(run, CACHE_SEGMENTS if cache_bytes >= SEGMENT_MIN_BYTES else 1)
        first = model.prefix + segments[0][1] - 1 if segments else model.max_len
        cache = model.init_cache(cond_all.shape[0], max_len=first)
        hidden, cache = model.prefill(cond_all, cache, drop=drop)
        drawn = pick(hidden, 0)
        tokens = put(empty(drawn), drawn, 0)

        in_loop = loop_model(graphdef, state)

        def step_cached(i, carry):
            tokens, cache = carry
            step_model = in_loop()
            prev = jax.lax.dynamic_slice_in_dim(tokens, i - 1, 1, axis=1)
            hidden, cache = step_model.decode_step(rows(prev), i - 1, cache)
            return put(tokens, pick(hidden[:, 0], i, step_model.head), i), cache

        for lo, hi in segments:
            # Step `i` writes position `c + i - 1` and attends to the positions before it,
            # so the segment's cache needs `c + hi - 1` positions.
            cache = grow_cache(cache, model.prefix + hi - 1)
            tokens, cache = jax.lax.fori_loop(lo, hi, step_cached, (tokens, cache))
        return model.trunk_input.from_steps(tokens)

    def step_full(i, tokens):
        raster = rows(model.trunk_input.from_steps(tokens))
        hidden = model.hidden_states(raster, cond_all, drop=drop)
        return put(tokens, pick(jax.lax.dynamic_index_in_dim(hidden, i, 1, False), i), i)

    hidden_shape = jax.ShapeDtypeStruct((cond_all.shape[0], model.width), jnp.float32)
    first = jax.eval_shape(pick, hidden_shape, 0)
    tokens = jax.lax.fori_loop(0, nocache_steps or run, step_full, empty(first))
    return model.trunk_input.from_steps(tokens)


def cache_segments(steps: int, count: int) -> list[tuple[int, int]]:
    """Split decode steps `1 .. steps - 1` into at most `count` contiguous `(lo, hi)` ranges.

    The loop runs one `fori_loop` per range over a cache just long enough for
    it, so attention reads the positions written so far (rounded up to the
    range's end) instead of the whole cache on every step: with 4 ranges, 62%
    of the full-cache reads on average. Each range compiles its own loop body.
    """
    count = max(1, min(count, steps - 1))
    bounds = [1 + round(j * (steps - 1) / count) for j in range(count + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def grow_cache(cache: Cache, length: int) -> Cache:
    """Zero-pad every `[B, H, S, Dh]` array of a KV cache to `length` positions."""
    pad = length - cache[0]["k"].shape[2]
    return jax.tree.map(lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))), cache)


_decode_loop_jit = jax.jit(
    _decode_loop,
    static_argnames=("graphdef", "options", "use_cache", "nocache_steps", "num_steps"),
)

ModelLike = nnx.Module | tuple[nnx.GraphDef, nnx.State]


def as_graph_state(model: ModelLike) -> tuple[nnx.GraphDef, nnx.State]:
    """`(graphdef, state)` of a module, or the pair itself."""
    if isinstance(model, nnx.Module):
        return nnx.split(model)
    graphdef, state = model
    return graphdef, state


def _run(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None,
    use_cache: bool,
    num_steps: int | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    graphdef, state = as_graph_state(model)
    options = options or SampleOptions()
    merged = model if isinstance(model, nnx.Module) else nnx.merge(graphdef, state)
    steps = merged.num_steps
    if num_steps is not None and not (
        isinstance(num_steps, int) and not isinstance(num_steps, bool) and 1 <= num_steps <= steps
    ):
        raise ValueError(
            f"num_steps must be an int in 1..{steps} (the model's steps), got {num_steps!r}"
        )
    run = steps if num_steps is None else num_steps
    tokens = _decode_loop_jit(
        graphdef, state, jnp.asarray(cond), rng, options=options, use_cache=use_cache,
        num_steps=None if run == steps else run,
    )  # fmt: skip
    b, n = tokens.shape[:2]
    stats = {"forward_passes": run, "tokens_generated": b * n * run // steps}
    if isinstance(merged.head, CountsEvaluations):
        head_options = options.head_options(merged.head)
        stats["head_evaluations"] = merged.head.evaluations(head_options, run)
    return tokens, stats


def sample(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None = None,
    num_steps: int | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Sample token ids with the KV cache.

    Args:
      model: an `ARGenerator`, or its `(graphdef, state)` from `nnx.split`.
      cond: class labels `[B]` int or text embeddings `[B, c, D_text]`.
      rng: a PRNG key; equal keys give equal samples.
      options: decoding options (static: a new value compiles a new loop);
        None means `SampleOptions()`.
      num_steps: run only the first `s` of the `M` steps (static, `1..M`; a prefix of a
        1D tokenizer's sequence); None runs all `M`.

    Returns:
      tokens `[B, N, ...]` in raster order of the tokenizer's layout (0 past the steps
      run), and stats `{"forward_passes": s, "tokens_generated": B * s * g}`
      (`s = M` steps of `g = N / M` tokens each by default: a Token-Shuffle window has
      `g = s^2`), plus `head_evaluations` for a head that counts them (`CountsEvaluations`).

    Raises:
      ValueError: `num_steps` outside `1..M`.
    """
    return _run(model, cond, rng, options, use_cache=True, num_steps=num_steps)


def sample_no_cache(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None = None,
    num_steps: int | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """As `sample`, recomputing the full sequence each step (no KV cache).

    Uses the same per-step keys, so it draws the same tokens as `sample` up to
    floating-point ties (the no-cache loop needs discrete tokens: it feeds
    zeros for the steps not drawn yet).
    """
    return _run(model, cond, rng, options, use_cache=False, num_steps=num_steps)
