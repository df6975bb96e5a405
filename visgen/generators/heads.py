"""Output heads of the AR transformer: hidden states to token predictions.

A head turns the trunk's final (normalised) hidden states `[B, N, D]` into a
training loss against targets and, for categorical heads, logits. Every head
implements `Head`, so the trunk, the training task and the sampling loops
stay the same when a token-shuffle, dimension-wise (TokenBridge) or diffusion
(MAR DiffLoss) head replaces the categorical one. A head may add trailing
axes: the token-shuffle head (`visgen.generators.token_shuffle`) reads one
row per fused position `[B, M, D]` and predicts its window, logits
`[B, M, s^2, V]`, targets and loss `[B, M, s^2]`.
"""

from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.nn.llama import DENSE_INIT


@runtime_checkable
class Head(Protocol):
    """What the trunk and the training task need from a head."""

    def logits(self, hidden: jax.Array) -> jax.Array:
        """`hidden: [B, N, D]` -> float32 logits `[B, N, V]` (categorical heads)."""
        ...

    def loss(self, hidden: jax.Array, targets: jax.Array) -> jax.Array:
        """`hidden: [B, N, D]`, targets `[B, N, ...]` -> per-token loss `[B, N]` float32."""
        ...


class CategoricalHead(nnx.Module):
    """A bias-free linear classifier over the vocabulary (LlamaGen's `output`).

    LlamaGen zero-initialises it (`zero_init=True`), so an untrained model
    predicts the uniform distribution; `zero_init=False` uses `normal(0.02)`.
    """

    def __init__(
        self,
        width: int,
        vocab_size: int,
        *,
        zero_init: bool = True,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.vocab_size = vocab_size
        self.dtype = dtype
        init = nnx.initializers.zeros_init() if zero_init else DENSE_INIT
        self.output = nnx.Linear(
            width, vocab_size, use_bias=False, kernel_init=init, dtype=dtype, rngs=rngs
        )

    def logits(self, hidden: jax.Array) -> jax.Array:
        """`[B, N, D]` -> `[B, N, V]` float32."""
        return self.output(hidden.astype(self.dtype)).astype(jnp.float32)

    def loss(self, hidden: jax.Array, targets: jax.Array) -> jax.Array:
        """Cross-entropy of int targets `[B, N]` under `logits(hidden)`: `[B, N]` float32."""
        logits = self.logits(hidden)
        picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)
        return jax.nn.logsumexp(logits, axis=-1) - picked[..., 0]
