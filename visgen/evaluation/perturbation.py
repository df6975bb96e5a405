"""RobusTok-style token perturbation for pFID: each token, with probability alpha,
replaced by one of its `delta` nearest codebook entries.

Neighbours are nearest to the token's own code embedding in the codebook's
search space, the token itself excluded, chosen uniformly; delta is clipped to
the codebook size - 1. RobusTok defines pFID as rFID under its latent
perturbation, but its evaluation code was not released; this follows the
definition above, so the replacement rate is exactly alpha. (RobusTok's
training-time perturbation, `latent_perturbation.py` in lxa9867/ImageFolder,
draws among the top-delta *including* the original code, an effective rate of
alpha (delta - 1) / delta, and ranks neighbours by the pre-quantization
feature; report alpha and delta with every pFID.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_ALPHAS = (0.1, 0.2, 0.3)  # the perturbation rates pFID reports by default


def nearest_codes(codes: jax.Array, delta: int, chunk: int = 1024) -> jax.Array:
    """Each code's `delta` nearest other codes: `[K, D]` -> int32 `[K, min(delta, K - 1)]`.

    Nearest first, by squared Euclidean distance in the space the codes are
    given in (pass `quantizer.codes()`: L2-normalised codes rank by cosine);
    a code is never its own neighbour. Rows are computed `chunk` at a time so
    a 16k codebook never holds a `[K, K]` matrix.
    """
    codes = jnp.asarray(codes, jnp.float32)
    k = codes.shape[0]
    if k < 2:
        raise ValueError(f"a codebook of {k} code(s) has no neighbours to perturb to")
    if delta < 1:
        raise ValueError(f"delta must be >= 1, got {delta}")
    delta = min(delta, k - 1)
    chunk = min(chunk, k)
    sq = jnp.sum(codes * codes, axis=-1)  # [K]
    table = np.zeros((k, delta), np.int32)
    for start in range(0, k, chunk):
        start = min(start, k - chunk)  # the last chunk overlaps the previous: static shapes
        table[start : start + chunk] = np.asarray(_neighbour_rows(codes, sq, start, chunk, delta))
    return jnp.asarray(table)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _neighbour_rows(codes, sq, start, chunk: int, delta: int) -> jax.Array:
    """Neighbour ids `[chunk, delta]` of codes `start .. start + chunk - 1` (`codes` `[K, D]`)."""
    block = jax.lax.dynamic_slice_in_dim(codes, start, chunk)  # [chunk, D]
    cross = jnp.matmul(block, codes.T, precision=jax.lax.Precision.HIGHEST)  # [chunk, K]
    dist = jax.lax.dynamic_slice_in_dim(sq, start, chunk)[:, None] + sq[None, :] - 2.0 * cross
    rows = start + jnp.arange(chunk)
    dist = jnp.where(rows[:, None] == jnp.arange(codes.shape[0])[None, :], jnp.inf, dist)
    return jax.lax.top_k(-dist, delta)[1].astype(jnp.int32)


def perturb_tokens(
    tokens: jax.Array, neighbours: jax.Array, alpha: float | jax.Array, key: jax.Array
) -> jax.Array:
    """RobusTok-style token perturbation, jit-able.

    Args:
      tokens: int `[B, ...]` code ids.
      neighbours: int32 `[K, delta]` from `nearest_codes` (no code lists itself).
      alpha: replacement probability in [0, 1] (a traced scalar is fine).
      key: PRNG key.

    Returns:
      `[B, ...]` ids of the same dtype: each token, with probability `alpha`,
      replaced by one of its `delta` neighbours drawn uniformly; alpha 0 is
      the identity and alpha 1 replaces every token.
    """
    k_replace, k_choice = jax.random.split(key)
    # uniform is in [0, 1): never below 0, always below 1.
    replace = jax.random.uniform(k_replace, tokens.shape) < alpha
    choice = jax.random.randint(k_choice, tokens.shape, 0, neighbours.shape[1])
    return jnp.where(replace, neighbours[tokens, choice].astype(tokens.dtype), tokens)


@jax.jit
def perturb_counted(codes, neighbours, alpha, key) -> tuple[jax.Array, jax.Array]:
    """`perturb_tokens` plus the number of replaced tokens per example `[B]`."""
    perturbed = perturb_tokens(codes, neighbours, alpha, key)
    changed = (perturbed != codes).reshape(codes.shape[0], -1)
    return perturbed, jnp.sum(changed.astype(jnp.float32), axis=-1)
