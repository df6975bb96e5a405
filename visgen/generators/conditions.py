"""Condition embeddings: the prefix a generator's trunk reads before the tokens.

LlamaGen (`FoundationVision/LlamaGen`, `autoregressive/models/gpt.py`):

- class: an embedding `[num_classes + 1, c * D]` whose last row is the null
  class used for classifier-free guidance (LlamaGen: `c = 1`; here a class
  prefix may span `c > 1` positions);
- text: embeddings `[B, L = c, D_text]` from any text encoder projected by a
  bias-free `Linear -> GELU(tanh) -> Linear` MLP (`CaptionEmbedder`), with a
  learned null text embedding `[L, D_text]` (init `randn / sqrt(D_text)`)
  substituted before the MLP. No text padding mask (LlamaGen's `emb_masks`).

Both take `drop: [B]` bool, which replaces those examples' condition by the
null one (training's condition dropout; the null half of a guided batch).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.nn.llama import DENSE_INIT


class ClassEmbedder(nnx.Module):
    """Labels `[B]` int -> prefix `[B, c, D]` float32; label `num_classes` is the null class."""

    def __init__(self, num_classes: int, width: int, prefix: int, *, rngs: nnx.Rngs):
        self.num_classes = num_classes
        self.prefix = prefix
        self.embedding = nnx.Embed(
            num_classes + 1, prefix * width, embedding_init=DENSE_INIT, rngs=rngs
        )

    def check(self, cond: jax.Array) -> None:
        if cond.ndim != 1:
            raise ValueError(f"class labels must be [B], got {tuple(cond.shape)}")

    def __call__(self, labels: jax.Array, drop: jax.Array | None = None) -> jax.Array:
        self.check(labels)
        labels = labels.astype(jnp.int32)
        if drop is not None:
            labels = jnp.where(drop, self.num_classes, labels)
        return self.embedding(labels).reshape(labels.shape[0], self.prefix, -1)


class TextEmbedder(nnx.Module):
    """Text embeddings `[B, L, D_text]` -> prefix `[B, L, D]` float32 (LlamaGen CaptionEmbedder)."""

    def __init__(self, text_dim: int, width: int, length: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.text_dim = text_dim
        self.prefix = length
        self.null = nnx.Param(
            jax.random.normal(rngs.params(), (length, text_dim), jnp.float32) / text_dim**0.5
        )
        kw = dict(use_bias=False, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(text_dim, width, **kw)
        self.fc2 = nnx.Linear(width, width, **kw)

    def check(self, cond: jax.Array) -> None:
        if cond.ndim != 3 or cond.shape[1:] != (self.prefix, self.text_dim):
            raise ValueError(
                f"text embeddings must be [B, {self.prefix}, {self.text_dim}], "
                f"got {tuple(cond.shape)}"
            )

    def __call__(self, text: jax.Array, drop: jax.Array | None = None) -> jax.Array:
        self.check(text)
        text = text.astype(jnp.float32)
        if drop is not None:
            text = jnp.where(drop[:, None, None], self.null[...], text)
        h = jax.nn.gelu(self.fc1(text.astype(self.dtype)), approximate=True)
        return self.fc2(h).astype(jnp.float32)
