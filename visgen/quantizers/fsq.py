"""Finite scalar quantization (FSQ): round each channel to one of a few levels.

Mentzer et al. 2024, "Finite Scalar Quantization: VQ-VAE Made Simple", as
FlexTok uses it (levels `[8, 8, 8, 5, 5, 5]`, 64,000 codes; see
`../shared/papers/tokenizers.md` section 2):

- bound: channel `i` with `L_i` levels maps `z` to
  `tanh(z + shift_i) * h_i - offset_i`, `h_i = (L_i - 1)(1 + eps) / 2`, with
  the half-step `offset_i = 0.5` for even `L_i` (0 for odd) and
  `shift_i = atanh(offset_i / h_i)`, so that rounding yields exactly `L_i`
  integers (`-L/2 .. L/2 - 1` for even, `-(L-1)/2 .. (L-1)/2` for odd);
- round with a straight-through estimator (the forward pass rounds, the
  backward pass is the identity), then divide by `floor(L_i / 2)`, so the
  latents lie in [-1, 1];
- ids are mixed-radix: `id = sum_i digit_i * prod_{j < i} L_j` with
  `digit_i = round(bound(z)_i) + floor(L_i / 2)`, and back.

- `drop_quant_p` (FlexTok's FSQ knob; its value in the released configs is
  unknown): in training, each example skips the rounding with this
  probability, so its latents are the bounded values `bound(z) / floor(L / 2)`.
  The decoder then sees feature variations smaller than a rounding step, which
  rounding would erase, and learns to read them; ids are always the rounded
  codes'.

There is no codebook to learn, so there are no losses and nothing to revive.
A level of 1 is allowed (a channel that is always 0), which lets small tests
and tiny configs choose any codebook size.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.quantizers.base import Quantized

# FlexTok's (and the FSQ paper's ~2^16) levels: 8 * 8 * 8 * 5 * 5 * 5 = 64,000 codes.
PAPER_LEVELS: tuple[int, ...] = (8, 8, 8, 5, 5, 5)


def round_ste(x: jax.Array) -> jax.Array:
    """`round(x)` forward, identity gradient backward (straight-through)."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


class FiniteScalarQuantizer(nnx.Module):
    """FSQ over `len(levels)` channels: `z [..., C]` -> latents `[..., C]` in [-1, 1], ids `[...]`.

    It has no parameters or state: its level tables are static tuples.

    Args:
      dim: latent channels `C`; must equal `len(levels)`.
      levels: levels per channel, each >= 1; the codebook has `prod(levels)` codes.
      eps: widens the tanh bound slightly so that the extreme levels are reached.
      drop_quant_p: training only: the probability that an example (leading axis) skips
        the rounding (needs `rng`); 0 = always round.
      rngs: unused (no parameters); accepted like every registered quantizer.
    """

    kind = "discrete"
    revivable = False

    def __init__(
        self,
        dim: int,
        *,
        levels: Sequence[int] = PAPER_LEVELS,
        eps: float = 1e-3,
        drop_quant_p: float = 0.0,
        rngs=None,
    ):
        del rngs
        if not 0.0 <= drop_quant_p < 1.0:
            raise ValueError(f"FSQ drop_quant_p must be in [0, 1), got {drop_quant_p}")
        self.drop_quant_p = drop_quant_p
        levels = tuple(int(level) for level in levels)
        if not levels or any(level < 1 for level in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of ints >= 1, got {levels}")
        if dim != len(levels):
            raise ValueError(
                f"FSQ dim must equal the number of levels ({len(levels)} for {list(levels)}), "
                f"got dim={dim}"
            )
        self.levels = levels
        self.dim = dim
        self.input_dim = dim
        self.codebook_size = math.prod(levels)
        half = tuple((level - 1) * (1.0 + eps) / 2.0 for level in levels)
        offset = tuple(0.5 if level % 2 == 0 else 0.0 for level in levels)
        # atanh(offset / h) for even levels; a level of 1 has h = 0 and no offset.
        self._half_levels = half
        self._offset = offset
        self._shift = tuple(
            math.atanh(o / h) if o else 0.0 for o, h in zip(offset, half, strict=True)
        )
        # Digits are `round(bound) + floor(L / 2)`; latents divide by floor(L / 2) (1 for L = 1).
        self._digit_offset = tuple(level // 2 for level in levels)
        self._half_width = tuple(float(max(level // 2, 1)) for level in levels)
        self._basis = tuple(math.prod(levels[:i]) for i in range(len(levels)))

    def bound(self, z: jax.Array) -> jax.Array:
        """`z [..., C]` -> values in `(-L/2 - offset, L/2 - offset)` per channel (float32)."""
        z = z.astype(jnp.float32)
        h, offset, shift = (
            jnp.asarray(a, jnp.float32) for a in (self._half_levels, self._offset, self._shift)
        )
        return jnp.tanh(z + shift) * h - offset

    def quantize(self, z: jax.Array) -> jax.Array:
        """`z [..., C]` -> straight-through rounded latents `[..., C]` in [-1, 1]."""
        return round_ste(self.bound(z)) / jnp.asarray(self._half_width, jnp.float32)

    def indices(self, latents: jax.Array) -> jax.Array:
        """Quantized latents `[..., C]` -> mixed-radix ids `[...]` int32."""
        half = jnp.asarray(self._half_width, jnp.float32)
        offset = jnp.asarray(self._digit_offset, jnp.float32)
        digits = jnp.round(latents * half + offset).astype(jnp.int32)
        return jnp.sum(digits * jnp.asarray(self._basis, jnp.int32), axis=-1)

    def embed(self, indices: jax.Array) -> jax.Array:
        """Ids `[...]` int -> latents `[..., C]` float32 (the inverse of `indices`)."""
        ids = jnp.asarray(indices, jnp.int32)[..., None]
        basis = jnp.asarray(self._basis, jnp.int32)
        digits = (ids // basis) % jnp.asarray(self.levels, jnp.int32)
        half = jnp.asarray(self._half_width, jnp.float32)
        offset = jnp.asarray(self._digit_offset, jnp.float32)
        return (digits.astype(jnp.float32) - offset) / half

    def codes(self) -> jax.Array:
        """Every code `[prod(levels), C]` float32, in id order."""
        return self.embed(jnp.arange(self.codebook_size, dtype=jnp.int32))

    def __call__(
        self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None
    ) -> Quantized:
        """Quantize `z: [..., C]`; deterministic unless `train` with `drop_quant_p > 0`
        (then `rng` picks the examples, along the leading axis, that skip the rounding).

        Stats, as VQ's: `perplexity` of the batch's code distribution and
        `code_usage`, the fraction of the `prod(levels)` codes it uses.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ features have dim {z.shape[-1]}, expected {self.dim}")
        latents = self.quantize(z)
        ids = self.indices(jax.lax.stop_gradient(latents))
        if train and self.drop_quant_p > 0:
            if rng is None:
                raise ValueError("FSQ with drop_quant_p > 0 needs an rng in training")
            skip = jax.random.bernoulli(rng, self.drop_quant_p, (z.shape[0],))
            skip = skip.reshape((-1,) + (1,) * (z.ndim - 1))
            unrounded = self.bound(z) / jnp.asarray(self._half_width, jnp.float32)
            latents = jnp.where(skip, unrounded, latents)
        counts = jnp.bincount(ids.reshape(-1), length=self.codebook_size)
        probs = counts.astype(jnp.float32) / ids.size
        stats = {
            "perplexity": jnp.exp(jnp.sum(jax.scipy.special.entr(probs))),
            "code_usage": jnp.mean((counts > 0).astype(jnp.float32)),
        }
        return Quantized(latents=latents, indices=ids, losses={}, stats=stats)

    def revive(self, features: jax.Array, rng: jax.Array | None = None) -> None:
        """A no-op: FSQ has no codebook to revive."""
        del features, rng
