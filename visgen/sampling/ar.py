"""Plain autoregressive sampling: one jitted decode loop with a KV cache and CFG.

`sample(model, cond, rng, options)` draws `[B, N]` token ids from an
`ARTransformer` (or any module with its `num_tokens`, `init_cache`, `prefill`,
`decode_step`, `hidden_states` and `head`). The whole loop is one `jax.jit`
program: `prefill` then a `lax.fori_loop` of `decode_step`s over an explicit
KV-cache pytree with static shapes, so there is no host round-trip per token.
`options` and the model's graph are static, so each distinct `SampleOptions`
compiles once and is cached. Nothing is donated: the cache is born and dies
inside the program, and the parameters are reused across calls.

Per step (LlamaGen's `generate.py`): logits -> classifier-free guidance
(`visgen.sampling.guidance`; the batch is doubled into conditional and null
rows) -> `/ temperature` -> top-k -> top-p -> a categorical draw with key
`fold_in(rng, step)`, so a sample depends only on `rng` and is reproducible.
`temperature = 0` takes the argmax instead.

Where the KV cache is large (`SEGMENT_MIN_BYTES`; GPT-B from batch 8), the
loop runs in `CACHE_SEGMENTS` consecutive `fori_loop`s, each over a cache
zero-padded to just the length its steps reach, so attention stops
re-reading the not-yet-written tail on every step: GPT-B at batch 8 with
CFG 4 (16 rows) measured 54-55 ms per step instead of 66-75 (BENCHMARKS.md).
The tokens are the same; each segment compiles its own loop body.

`sample_no_cache` recomputes the full sequence every step (for benchmarks and
as a cache-free reference). To keep one static shape it runs the transformer
over all `c + N - 1` positions (`c + M - 1` with shuffling) each step
(later, not-yet-sampled positions are causally masked out of what is read),
so its cost per step is that of the longest prefix, not the current one.

Token-Shuffle models (`shuffle_window = s > 1`) use the same loop: it runs
`M = N / s^2` steps, each drawing the next window's `s^2` tokens
independently from the head's `[B, s^2, V]` logits (with the same guidance,
temperature, top-k and top-p per token, and one key per step), in the
model's fused order, then returns them in raster order (`coupled_windows`
couples the window's draws instead: `sample_window`). With a causal window
head (`ARTransformer(causal_window=True)`) the step's one pass returns the
head's input and the head draws the window's tokens one after another
(`TokenShuffleHead.draw_window`), each guided and filtered like a plain
token. The guidance schedule's step index and length are the fused step
and `M`.

`stats` reports `forward_passes` (one per step, so `M`; the prefill counts
as one; a doubled CFG batch is still one pass) and `tokens_generated`
(`B * N`).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators.ar import Cache
from visgen.sampling.guidance import SCHEDULES, Schedule, guidance_scale, guide
from visgen.sampling.weight_layout import loop_model

# The plain decode loop runs in `CACHE_SEGMENTS` segments, each over a cache just long
# enough for it (`cache_segments`), when the whole cache is at least `SEGMENT_MIN_BYTES`:
# then re-reading it every step costs as much as reading the weights (GPT-B at batch 8:
# 151 MB of cache, 444 MB of weights). Smaller caches stay in one loop: each segment
# compiles its own loop body (GPT-B: ~6 s more), and a cache that fits the CPU's caches
# gains nothing.
CACHE_SEGMENTS = 4
SEGMENT_MIN_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Decoding options (hashable: they are static arguments of the jitted loop).

    Attributes:
      temperature: logits are divided by it; 0 means greedy (argmax).
      top_k: keep the `top_k` largest logits (0 = off).
      top_p: nucleus sampling: keep the smallest set of tokens whose
        probability reaches `top_p` (1 = off).
      cfg_scale: classifier-free guidance scale `s`; 1 disables guidance (and
        the doubled batch).
      cfg_schedule: `constant`, `linear` or `half-linear` (see `guidance`).
      cfg_interval: optional `(start, end)` fraction of steps where guidance
        applies; scale 1 elsewhere.
      coupled_windows: Token-Shuffle models only (ignored without a window):
        draw a window's `s^2` tokens with one shared Gumbel vector instead of
        one each (`sample_window`). Each token is still an exact draw of its
        own distribution; tokens whose distributions agree take the same code.
        Not in the Token-Shuffle paper, which draws them independently.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0
    cfg_schedule: Schedule = "constant"
    cfg_interval: tuple[float, float] | None = None
    coupled_windows: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.cfg_schedule not in SCHEDULES:
            raise ValueError(
                f"unknown cfg_schedule {self.cfg_schedule!r}; valid: {', '.join(SCHEDULES)}"
            )
        if self.cfg_interval is not None:
            object.__setattr__(self, "cfg_interval", tuple(float(x) for x in self.cfg_interval))
            if len(self.cfg_interval) != 2:
                raise ValueError(f"cfg_interval must be (start, end), got {self.cfg_interval}")

    @property
    def guided(self) -> bool:
        """Whether the loop runs a doubled (conditional + null) batch."""
        return self.cfg_scale != 1.0


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Top-k then top-p filtering of logits `[..., V]`: dropped entries become -inf.

    Top-p keeps the highest-probability tokens up to and including the one
    whose cumulative probability first exceeds `top_p` (HF / LlamaGen rule);
    tokens tied with the last kept logit are kept too.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = -jnp.sort(-logits, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # The number of kept tokens: those before the first cumulative > top_p, plus it.
        keep = jnp.sum(cumulative <= top_p, axis=-1, keepdims=True) + 1
        keep = jnp.minimum(keep, logits.shape[-1])
        cutoff = jnp.take_along_axis(sorted_logits, keep - 1, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def sample_logits(logits: jax.Array, rng: jax.Array, options: SampleOptions) -> jax.Array:
    """One token per row from float32 logits `[B, V]`: `[B]` int32."""
    if options.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / options.temperature, options.top_k, options.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def sample_window(logits: jax.Array, rng: jax.Array, options: SampleOptions) -> jax.Array:
    """The tokens of one step from float32 logits `[B, w, V]`: `[B, w]` int32.

    Independent draws (one Gumbel vector per token, as `sample_logits`), or
    with `options.coupled_windows` Gumbel-max with one vector `[B, 1, V]`
    shared by the window: each token is still `argmax(logits + G)` of its own
    (tempered, filtered) logits, an exact draw of its distribution, but the
    draws are coupled. Tokens with the same distribution take the same code,
    so a window whose tokens each put a third on three background colours
    gets one colour, not a patchwork of the three (four independent draws
    all agree with probability 1/27). `temperature = 0` is the argmax either way.
    """
    b, w, v = logits.shape
    if not options.coupled_windows or w == 1 or options.temperature == 0:
        return sample_logits(logits.reshape(b * w, v), rng, options).reshape(b, w)
    logits = filter_logits(logits / options.temperature, options.top_k, options.top_p)
    gumbel = jax.random.gumbel(rng, (b, 1, v), logits.dtype)
    return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)


def _decode_loop(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions,
    use_cache: bool,
    nocache_steps: int | None = None,
) -> jax.Array:
    """`nocache_steps`: without the cache, run only the first steps (the rest stay 0):
    every step costs the same, so benchmarks time a few to rate the whole loop."""
    model = nnx.merge(graphdef, state)
    # One step emits one window of `w` tokens (w = 1 without token shuffling);
    # `tokens` holds them in the model's fused order until the final `to_raster`.
    b, n, w, steps = cond.shape[0], model.num_tokens, model.window_tokens, model.num_steps
    if options.guided:
        # Rows [0, B) are conditional, rows [B, 2B) the same conditions dropped to null.
        cond_all = jnp.concatenate([cond, cond])
        drop = jnp.arange(2 * b) >= b
    else:
        cond_all, drop = cond, None

    causal = getattr(model, "causal_window", False)
    hidden_kw = {"return_hidden": True} if causal else {}  # the head's input, not logits

    def pick(logits: jax.Array, step: jax.Array | int) -> jax.Array:
        """Logits `[B or 2B, V]` or `[B or 2B, w, V]` of step `step` -> its tokens `[B, w]`.

        One key per step; `sample_window` draws the window's `w` tokens. With a
        causal window head `logits` is the head's input `[B or 2B, D]`, and token
        `j` of the window is drawn with key `fold_in(key, j)` once the ones
        before it are chosen.
        """
        key = jax.random.fold_in(rng, step)
        scale = guidance_scale(
            options.cfg_schedule, options.cfg_scale, step, steps, options.cfg_interval
        )
        if causal:

            def choose(slot_logits: jax.Array, j: int) -> jax.Array:
                if options.guided:
                    slot_logits = guide(slot_logits[:b], slot_logits[b:], scale)
                return rows(sample_logits(slot_logits, jax.random.fold_in(key, j), options))

            return model.head.draw_window(logits, choose)[:b]
        v = logits.shape[-1]
        logits = logits.reshape(-1, w, v)
        if options.guided:
            logits = guide(logits[:b], logits[b:], scale)
        return sample_window(logits, key, options)

    def rows(tokens: jax.Array) -> jax.Array:
        return jnp.concatenate([tokens, tokens]) if options.guided else tokens

    def put(tokens: jax.Array, new: jax.Array, step: jax.Array | int) -> jax.Array:
        return jax.lax.dynamic_update_slice_in_dim(tokens, new, step * w, axis=1)

    tokens = jnp.zeros((b, n), jnp.int32)
    if use_cache:
        full = jax.eval_shape(lambda: model.init_cache(cond_all.shape[0]))
        cache_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(full))
        segments = cache_segments(steps, CACHE_SEGMENTS if cache_bytes >= SEGMENT_MIN_BYTES else 1)
        first = model.prefix + segments[0][1] - 1 if segments else model.max_len
        cache = model.init_cache(cond_all.shape[0], max_len=first)
        logits, cache = model.prefill(cond_all, cache, drop=drop, **hidden_kw)
        tokens = put(tokens, pick(logits, 0), 0)

        in_loop = loop_model(graphdef, state)

        def step_cached(i, carry):
            tokens, cache = carry
            prev = jax.lax.dynamic_slice_in_dim(tokens, (i - 1) * w, w, axis=1)
            logits, cache = in_loop().decode_step(rows(prev), i - 1, cache, **hidden_kw)
            return put(tokens, pick(logits[:, 0], i), i), cache

        for lo, hi in segments:
            # Step `i` writes position `c + i - 1` and attends to the positions before it,
            # so the segment's cache needs `c + hi - 1` positions.
            cache = grow_cache(cache, model.prefix + hi - 1)
            tokens, cache = jax.lax.fori_loop(lo, hi, step_cached, (tokens, cache))
        return model.to_raster(tokens)

    def step_full(i, tokens):
        hidden = model.hidden_states(rows(model.to_raster(tokens)), cond_all, drop=drop)
        row = jax.lax.dynamic_slice_in_dim(hidden, i, 1, axis=1)
        return put(tokens, pick(row[:, 0] if causal else model.head.logits(row)[:, 0], i), i)

    return model.to_raster(jax.lax.fori_loop(0, nocache_steps or steps, step_full, tokens))


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
    _decode_loop, static_argnames=("graphdef", "options", "use_cache", "nocache_steps")
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
) -> tuple[jax.Array, dict[str, Any]]:
    graphdef, state = as_graph_state(model)
    options = options or SampleOptions()
    tokens = _decode_loop_jit(
        graphdef, state, jnp.asarray(cond), rng, options=options, use_cache=use_cache
    )
    b, n = tokens.shape
    steps = (model if isinstance(model, nnx.Module) else nnx.merge(graphdef, state)).num_steps
    return tokens, {"forward_passes": steps, "tokens_generated": b * n}


def sample(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Sample token ids with the KV cache.

    Args:
      model: an `ARTransformer`, or its `(graphdef, state)` from `nnx.split`.
      cond: class labels `[B]` int or text embeddings `[B, c, D_text]`.
      rng: a PRNG key; equal keys give equal samples.
      options: decoding options (static: a new value compiles a new loop);
        None means `SampleOptions()`.

    Returns:
      tokens `[B, N]` int32 in raster order of the model's layout, and stats
      `{"forward_passes": M, "tokens_generated": B * N}` (`M = N / s^2`
      steps with a Token-Shuffle window `s`, else `N`).
    """
    return _run(model, cond, rng, options, use_cache=True)


def sample_no_cache(
    model: ModelLike,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """As `sample`, recomputing the full sequence each step (no KV cache).

    Uses the same per-step keys, so it draws the same tokens as `sample` up to
    floating-point ties.
    """
    return _run(model, cond, rng, options, use_cache=False)
