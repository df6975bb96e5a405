"""MAR's masked random-order generator: a bidirectional backbone over a continuous token grid.

Li et al. 2024, "Autoregressive Image Generation without Vector Quantization"
(`LTH14/mar`, `models/mar.py`), registered in `GENERATORS` as `mar`:

- tokens: a continuous tokenizer's latents `[B, N, C]` (raster order of
  `spec.layout`), modelled as `scale * latent` (the diffusion head's `scale`),
  embedded by a linear layer (MAR's `z_proj`);
- condition: `buffer_tokens` class "buffer" positions before the grid, each
  the class embedding (MAR: 64 buffer tokens); the null class (index
  `num_classes`) replaces the label with probability `cond_dropout` in
  training (MAR: 0.1), for classifier-free guidance;
- masking: in training a random order per example and one mask ratio per
  batch from the truncated normal (MAR: mean 1.0, std 0.25, truncated to
  `[0.7, 1.0]`), `ceil(N r)` tokens masked; a masked position's input is a
  learned mask token;
- backbone: pre-LN ViT blocks with full bidirectional attention
  (`visgen.nn.vit`) over `[buffer, grid]` with learned position embeddings,
  then a LayerNorm and a learned per-position embedding added to the grid's
  outputs (MAR's `diffusion_pos_embed_learned`);
- head: MAR's diffusion head (`visgen.generators.diffusion_head`), whose
  loss is taken on the masked tokens only.

Simplified vs MAR: one stack of blocks in which masked positions carry a mask
token, instead of MAR's MAE encoder (which drops the masked tokens; dropping
a variable number of tokens would break static shapes) followed by a decoder
that re-inserts them; `depth` blocks replace MAR's `depth + depth` encoder and
decoder. `tiny` uses fewer buffer tokens (4). Init: `normal(0.02)` for the
blocks, the embeddings and the mask token, Xavier-uniform for `z_proj`.

Sampling (`visgen.sampling.mar`) reads `hidden_states(tokens, cond, mask)`,
the head's inputs at every position given the visible tokens.
"""

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators.ar import token_embedding
from visgen.generators.diffusion_head import DiffusionHead, require_continuous
from visgen.nn.vit import DENSE_INIT, Transformer, layer_norm
from visgen.token_spec import TokenSpec

# (width, depth, heads) of MAR-B/L/H (their encoder's and decoder's depth each) and the
# diffusion head's (depth, width) (MAR's released configs); `tiny` for tests and the demo.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (96, 4, 4),
    "B": (768, 12, 12),
    "L": (1024, 16, 16),
    "H": (1280, 20, 16),
}
HEAD_SIZES: dict[str, tuple[int, int]] = {
    "tiny": (3, 128),
    "B": (6, 1024),
    "L": (8, 1280),
    "H": (12, 1536),
}

# MAR's training mask ratio: a truncated normal with this mean and std on [min, 1].
MASK_RATIO_MEAN, MASK_RATIO_STD, MASK_RATIO_MIN = 1.0, 0.25, 0.7


def num_masked(num_tokens: int, ratio: jax.Array) -> jax.Array:
    """Tokens masked at mask ratio `ratio` (MAR: `ceil(N r)`), an int32 scalar."""
    return jnp.ceil(num_tokens * ratio).astype(jnp.int32)


def random_orders(rng: jax.Array, batch: int, num_tokens: int) -> jax.Array:
    """A random permutation of the positions per example: `[B, N]` int32."""
    return jnp.argsort(jax.random.uniform(rng, (batch, num_tokens)), axis=-1).astype(jnp.int32)


def order_mask(orders: jax.Array, count: jax.Array | int) -> jax.Array:
    """`[B, N]` bool: True at the first `count` positions of each example's order."""
    ranks = jnp.argsort(orders, axis=-1)  # the rank of each position in its order
    return ranks < count


class MaskedGenerator(nnx.Module):
    """MAR's masked generator over continuous tokens; see the module doc.

    Args:
      spec: the tokenizer's token spec (continuous); `N = spec.num_tokens`.
      head: the diffusion head's section `{"name": "diffusion", **its arguments}`.
      width, depth, heads: the bidirectional stack (see `SIZES`).
      num_classes: class-conditional with this many classes (index `num_classes`
        is the null class).
      buffer_tokens: class buffer positions before the grid (MAR: 64).
      cond_dropout: the probability of the null class in training.
      mask_ratio_min: the truncated normal's lower bound (MAR: 0.7).
      dtype: compute dtype; parameters, norms and softmax stay float32.
      rngs: parameter initialisation.
    """

    # The sampler of `visgen.sampling.METHODS` this generator is drawn with.
    method = "mar"

    def __init__(
        self,
        *,
        spec: TokenSpec,
        head: Mapping[str, Any],
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        num_classes: int = 1000,
        buffer_tokens: int = 64,
        cond_dropout: float = 0.1,
        mask_ratio_min: float = MASK_RATIO_MIN,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        require_continuous(spec)
        head_args = dict(head)
        if head_args.pop("name", None) != "diffusion":
            raise ValueError(
                f"the masked generator (mar) draws with MAR's diffusion head: "
                f"generator.head.name must be 'diffusion', got {head.get('name')!r}"
            )
        if num_classes < 1:
            raise ValueError(
                f"the masked generator is class-conditional: num_classes={num_classes}"
            )
        if buffer_tokens < 1:
            raise ValueError(f"buffer_tokens must be >= 1 (MAR: 64), got {buffer_tokens}")
        if not 0.0 <= mask_ratio_min < MASK_RATIO_MEAN:
            raise ValueError(f"mask_ratio_min must be in [0, 1), got {mask_ratio_min}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.spec = spec
        self.width = width
        self.step_layout = tuple(int(n) for n in spec.layout)
        self.num_tokens = math.prod(self.step_layout)
        # One token per "step" in the CLI's accounting (plain AR's passes would be N).
        self.num_steps = self.num_tokens
        self.tokens_per_step = 1
        self.num_classes = num_classes
        self.buffer = buffer_tokens
        self.cond_dropout = cond_dropout
        self.mask_ratio_min = float(mask_ratio_min)

        def embedding(*shape: int) -> nnx.Param:
            return nnx.Param(DENSE_INIT(rngs.params(), shape, jnp.float32))

        self.class_embed = nnx.Embed(num_classes + 1, width, embedding_init=DENSE_INIT, rngs=rngs)
        self.token_embed = token_embedding(spec, width, rngs)
        self.mask_token = embedding(width)
        self.pos_embed = embedding(buffer_tokens + self.num_tokens, width)
        self.input_norm = layer_norm(width, rngs)
        self.blocks = Transformer(depth, width, heads, dtype=dtype, rngs=rngs)
        self.norm = layer_norm(width, rngs)
        self.head_pos_embed = embedding(self.num_tokens, width)
        self.head = DiffusionHead(
            width, spec.channels, **head_args, any_order=True, dtype=dtype, rngs=rngs
        )

    # --- the backbone ---------------------------------------------------------------

    def condition_drop(self, batch: int, rng: jax.Array) -> jax.Array:
        """Training's classifier-free-guidance dropout: `[batch]` bool, True w.p. `cond_dropout`."""
        return jax.random.uniform(rng, (batch,)) < self.cond_dropout

    def hidden_states(
        self,
        tokens: jax.Array,
        cond: jax.Array,
        mask: jax.Array,
        *,
        drop: jax.Array | None = None,
    ) -> jax.Array:
        """Latents `[B, N, C]` (unscaled), labels `[B]`, `mask` `[B, N]` bool (True: hidden
        from the model) -> the head's inputs at every position `[B, N, D]` float32.

        `drop: [B]` bool uses the null class for those rows."""
        b, n = tokens.shape[:2]
        if n != self.num_tokens:
            raise ValueError(
                f"the masked generator takes all {self.num_tokens} tokens of layout "
                f"{self.step_layout}, got {n}"
            )
        labels = jnp.asarray(cond, jnp.int32)
        if drop is not None:
            labels = jnp.where(drop, self.num_classes, labels)
        classes = jnp.broadcast_to(self.class_embed(labels)[:, None], (b, self.buffer, self.width))
        x = self.token_embed(self.head.scale * tokens.astype(jnp.float32))
        x = jnp.where(mask[..., None], self.mask_token[...], x)
        x = jnp.concatenate([classes, x], axis=1) + self.pos_embed[...]
        x = self.blocks(self.input_norm(x))
        return self.norm(x[:, self.buffer :]) + self.head_pos_embed[...]

    # --- training -------------------------------------------------------------------

    def training_mask(self, batch: int, rng: jax.Array) -> jax.Array:
        """MAR's training mask `[batch, N]` bool: one ratio per batch from the truncated
        normal, a random order per example."""
        ratio_rng, order_rng = jax.random.split(rng)
        lower = (self.mask_ratio_min - MASK_RATIO_MEAN) / MASK_RATIO_STD
        z = jax.random.truncated_normal(ratio_rng, lower, 0.0)
        ratio = MASK_RATIO_MEAN + MASK_RATIO_STD * z
        return order_mask(
            random_orders(order_rng, batch, self.num_tokens), num_masked(self.num_tokens, ratio)
        )

    def loss_terms(
        self,
        tokens: jax.Array,
        cond: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        drop: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per-token `(mse, bound, mask)`, each `[B, N]` float32: the head's two loss terms
        (`DiffusionHead.loss_terms`) and the mask (1 where the token was hidden, the
        tokens the loss counts). Without `rng` (evaluation) the mask, the class
        dropout and the head's draws use fixed keys, so the test loss is deterministic."""
        b = tokens.shape[0]
        key = jax.random.key(0) if rng is None else rng
        mask_rng, drop_rng, head_rng = jax.random.split(key, 3)
        if train and drop is None and self.cond_dropout > 0:
            drop = self.condition_drop(b, drop_rng)
        mask = self.training_mask(b, mask_rng)
        hidden = self.hidden_states(tokens, cond, mask, drop=drop)
        targets = tokens.astype(jnp.float32)[:, :, None]
        mse, bound = self.head.loss_terms(hidden, targets, head_rng if train else None)
        return mse[..., 0], bound[..., 0], mask.astype(jnp.float32)

    def loss(
        self,
        tokens: jax.Array,
        cond: jax.Array,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
        drop: jax.Array | None = None,
    ) -> jax.Array:
        """The head's loss averaged over the masked tokens (MAR's `forward_loss`)."""
        mse, bound, mask = self.loss_terms(tokens, cond, train=train, rng=rng, drop=drop)
        return jnp.sum((mse + bound) * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    def token_losses(self, tokens: jax.Array, cond: jax.Array) -> jax.Array:
        """Evaluation: the head's loss of every token under the fixed evaluation mask,
        `[B, N]` float32, zero at the tokens the mask leaves visible."""
        mse, bound, mask = self.loss_terms(tokens, cond)
        return (mse + bound) * mask
