"""Codebook statistics from token histograms: usage and perplexity.

Computed from the histogram of codes over a whole split (accumulated batch by
batch), not averaged per batch, so they describe the tokenizer, not the batch.
"""

import jax
import jax.numpy as jnp
import numpy as np


def code_histogram(tokens: jax.Array, codebook_size: int, mask: jax.Array | None = None):
    """Counts `[codebook_size]` of `tokens` `[B, ...]`, ignoring examples where `mask` is False."""
    flat = tokens.reshape(tokens.shape[0], -1)
    weights = jnp.ones(flat.shape, jnp.float32)
    if mask is not None:
        weights = weights * mask[:, None].astype(jnp.float32)
    return jnp.zeros((codebook_size,), jnp.float32).at[flat.reshape(-1)].add(weights.reshape(-1))


def usage_and_perplexity(histogram: np.ndarray) -> tuple[float, float]:
    """(fraction of codes used at least once, exp(entropy) of the code distribution)."""
    h = np.asarray(histogram, np.float64)
    total = h.sum()
    if total == 0:
        return 0.0, 0.0
    p = h[h > 0] / total
    return float((h > 0).mean()), float(np.exp(-(p * np.log(p)).sum()))
