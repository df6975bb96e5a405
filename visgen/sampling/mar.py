"""MAR's sampler: reveal a masked generator's tokens in a random order over `num_iter` passes.

Li et al. 2024 (`LTH14/mar`, `MAR.sample_tokens`), as one jitted loop:

- a random order of the `N` positions per sample;
- iteration `i` of `num_iter` runs the bidirectional backbone once over the
  tokens revealed so far (the rest masked), and the diffusion head draws the
  next `counts[i]` positions of the order from their hidden states;
- `counts` follow MAR's cosine schedule (`reveal_counts`): after iteration
  `i`, `floor(N cos(pi/2 (i + 1) / num_iter))` tokens stay masked, at least
  one is revealed per iteration and at least one stays masked until the last;
- classifier-free guidance doubles the batch (null-class rows) and guides the
  head's noise prediction; the scale follows `options.cfg_schedule` at the
  fraction of tokens revealed after the iteration (`linear` is MAR's
  `1 + (cfg - 1) (N - mask_len) / N`);
- the head's options pick the diffusion steps per iteration (`--disa`: DiSA's
  schedule over the `num_iter` iterations, DrawContext `step`/`num_steps`).

Static shapes: each iteration draws `K = max(counts)` positions per sample
(the next `K` of the order) and keeps the first `counts[i]`; the others are
drawn and dropped, so the head runs over `B K` tokens per evaluation.

`stats`: `forward_passes` (`num_iter` backbone passes per batch; a doubled CFG
batch is one), `head_evaluations` (diffusion steps summed over the tokens of
one sample: `sum_i counts[i] steps[i]`, comparable with plain AR's count of
one token per step) and `denoiser_calls` (`sum_i steps[i]`: the head
network's batched calls, each over `B K` tokens, what wall-clock time follows).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.diffusion import effective_steps
from visgen.generators import DrawContext
from visgen.generators.mar import random_orders
from visgen.sampling.guidance import guidance_scale
from visgen.sampling.options import SampleOptions

# MAR's default number of iterations in its sampling script (its paper's FIDs use 256).
DEFAULT_NUM_ITER = 64


def reveal_counts(num_tokens: int, num_iter: int) -> np.ndarray:
    """Tokens revealed at each of `num_iter` iterations, `[num_iter]` int32 summing to `N`.

    MAR: after iteration `i` the masked count is `floor(N cos(pi/2 (i + 1) / num_iter))`,
    clamped to keep at least one masked before the last iteration and to reveal at
    least one per iteration.
    """
    if not 1 <= num_iter <= num_tokens:
        raise ValueError(f"num_iter must be in 1..{num_tokens} (the tokens), got {num_iter}")
    counts, masked = [], num_tokens
    for i in range(num_iter):
        if i == num_iter - 1:
            left = 0
        else:
            left = math.floor(num_tokens * np.cos(math.pi / 2.0 * (i + 1) / num_iter))
            left = max(1, min(masked - 1, left))
        counts.append(masked - left)
        masked = left
    return np.asarray(counts, np.int32)


def _mar_loop(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions,
    num_iter: int,
) -> jax.Array:
    model = nnx.merge(graphdef, state)
    b, n, c = cond.shape[0], model.num_tokens, model.spec.channels
    counts = reveal_counts(n, num_iter)
    k = int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    head_options = options.head_options(model.head)
    order_rng, draw_rng = jax.random.split(rng)
    orders = random_orders(order_rng, b, n)
    # `K` columns past the end so the last iterations' windows stay in range (dropped).
    orders = jnp.concatenate([orders, orders[:, :k]], axis=1)
    guided = options.guided
    cond_all = jnp.concatenate([cond, cond]) if guided else cond
    drop = (jnp.arange(2 * b) >= b) if guided else None
    rows = jnp.arange(b)[:, None]

    def body(i, carry):
        tokens, known = carry
        both = (lambda x: jnp.concatenate([x, x])) if guided else (lambda x: x)
        hidden = model.hidden_states(both(tokens), cond_all, both(~known), drop=drop)
        at = jax.lax.dynamic_slice_in_dim(orders, jnp.asarray(starts)[i], k, axis=1)  # [B, K]
        valid = jnp.arange(k)[None, :] < jnp.asarray(counts)[i]
        picked = jnp.take_along_axis(hidden, both(at)[..., None], axis=1)  # [R, K, D]
        revealed = jnp.asarray(starts)[i] + jnp.asarray(counts)[i]
        scale = guidance_scale(
            options.cfg_schedule, options.cfg_scale, revealed, n, options.cfg_interval
        )
        context = DrawContext(
            options.temperature, head_options, guided, scale, step=i, num_steps=num_iter
        )
        drawn = model.head.draw(
            picked.reshape(-1, model.width), jax.random.fold_in(draw_rng, i), context
        ).reshape(b, k, c)
        old = tokens[rows, at]
        tokens = tokens.at[rows, at].set(jnp.where(valid[..., None], drawn, old))
        known = known.at[rows, at].set(known[rows, at] | valid)
        return tokens, known

    tokens = jnp.zeros((b, n, c), jnp.float32)
    known = jnp.zeros((b, n), bool)
    tokens, _ = jax.lax.fori_loop(0, num_iter, body, (tokens, known))
    return tokens


_mar_loop_jit = jax.jit(_mar_loop, static_argnames=("graphdef", "options", "num_iter"))


def head_counts(model, options: SampleOptions, num_iter: int) -> dict[str, int]:
    """`head_evaluations` (diffusion steps summed over a sample's tokens) and
    `denoiser_calls` (the head's batched calls) for one batch, on the host."""
    counts = reveal_counts(model.num_tokens, num_iter)
    steps = per_iteration_steps(options.head_options(model.head), num_iter)
    return {
        "head_evaluations": int(np.sum(counts * steps)),
        "denoiser_calls": int(np.sum(steps)),
    }


def per_iteration_steps(head_options: Any, num_iter: int) -> np.ndarray:
    """The diffusion steps the head runs at each iteration (after the timestep clamp):
    `[num_iter]` int."""
    clip = head_options.timestep_clip
    asked = head_options.step_counts(num_iter)
    return np.asarray([effective_steps(int(s), clip) for s in asked], np.int64)


def sample_mar(
    model,
    cond: jax.Array,
    rng: jax.Array,
    options: SampleOptions | None = None,
    *,
    num_iter: int = DEFAULT_NUM_ITER,
) -> tuple[jax.Array, dict[str, Any]]:
    """Sample latents from a masked generator (`visgen.generators.MaskedGenerator`).

    Args:
      model: the generator, or its `(graphdef, state)` from `nnx.split`.
      cond: class labels `[B]` int.
      rng: a PRNG key; equal keys give equal samples.
      options: decoding options (static); None means `SampleOptions()`.
      num_iter: backbone passes, 1..N (MAR: 64 by default, 256 in its paper's FIDs).

    Returns:
      latents `[B, N, C]` float32 in raster order, and stats `forward_passes`
      (`num_iter`), `tokens_generated` (`B N`), `head_evaluations` and
      `denoiser_calls` (see the module doc).
    """
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
    else:
        graphdef, state = model
        model = nnx.merge(graphdef, state)
    if model.method != "mar":
        raise ValueError(
            "the MAR sampler draws from a masked generator (configs/mar.py); this generator "
            "decodes causally: sample it with visgen.sampling.sample"
        )
    options = options or SampleOptions()
    reveal_counts(model.num_tokens, num_iter)  # a clear error for a bad num_iter
    cond = jnp.asarray(cond)
    tokens = _mar_loop_jit(graphdef, state, cond, rng, options=options, num_iter=num_iter)
    stats = {"forward_passes": num_iter, "tokens_generated": int(cond.shape[0] * model.num_tokens)}
    stats.update(head_counts(model, options, num_iter))
    return tokens, stats
