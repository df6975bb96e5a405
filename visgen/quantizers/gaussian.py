"""Diagonal Gaussian posterior: the continuous (VAE) bottleneck.

Kingma and Welling 2014, as in LDM's `DiagonalGaussianDistribution` and
TiTok's VAE mode: the encoder emits `mean || logvar` per token, logvar is
clamped to [-30, 20], a latent is drawn by reparameterisation
`mean + exp(logvar / 2) * eps` (the mode `mean` when no rng is given), and

    KL(q || N(0, I)) = 0.5 * sum(mean^2 + var - 1 - logvar)

is summed over every latent dimension and averaged over the batch (the
official code sums everything and divides by the batch size). Float32 throughout.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.quantizers.base import Quantized

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class DiagonalGaussian(nnx.Module):
    """Gaussian bottleneck on `moments: [B, ..., 2C]` -> latents `[B, ..., C]`.

    Registered as `gaussian`: continuous (no ids, no codebook), nothing to revive.

    Args:
      dim: latent channels `C` (the input carries `2C`: mean then logvar).
      kl_weight: weight of the KL term in `losses["kl"]`.
      rngs: unused (the posterior has no parameters); accepted like every quantizer.
    """

    kind = "continuous"
    codebook_size = 0
    revivable = False

    def __init__(self, dim: int, *, kl_weight: float = 1e-6, rngs: nnx.Rngs | None = None):
        del rngs
        self.dim = dim
        self.input_dim = 2 * dim
        self.kl_weight = kl_weight

    def split(self, moments: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`[..., 2C]` -> (mean `[..., C]`, clamped logvar `[..., C]`), float32."""
        if moments.shape[-1] != 2 * self.dim:
            raise ValueError(
                f"moments have {moments.shape[-1]} channels, expected 2 * {self.dim} "
                "(mean || logvar)"
            )
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

    def __call__(
        self, moments: jax.Array, *, train: bool = False, rng: jax.Array | None = None
    ) -> Quantized:
        """Sample (with `rng`) or take the mode (without); `train` changes nothing here."""
        del train
        mean, logvar = self.split(moments)
        std = jnp.exp(0.5 * logvar)
        latents = mean if rng is None else mean + std * jax.random.normal(rng, mean.shape)
        per_example = 0.5 * jnp.sum(
            jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar,
            axis=tuple(range(1, mean.ndim)),
        )
        kl = jnp.mean(per_example)
        return Quantized(
            latents=latents,
            indices=None,
            losses={"kl": self.kl_weight * kl},
            stats={"kl": kl, "posterior_std": jnp.mean(std)},
        )

    def embed(self, indices: jax.Array) -> jax.Array:
        """Raises: a Gaussian posterior has no ids."""
        raise ValueError("the gaussian quantizer is continuous: it has no ids to embed")

    def codes(self) -> jax.Array:
        """Raises: a Gaussian posterior has no codebook."""
        raise ValueError("the gaussian quantizer is continuous: it has no codebook")

    def revive(self, features: jax.Array, rng: jax.Array | None = None) -> None:
        """Nothing to revive (`revivable` is False)."""
        del features, rng
