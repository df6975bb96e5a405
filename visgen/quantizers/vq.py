"""Vector quantizer with an L2-normalised codebook and usage-driven code revival.

VQ-VAE (van den Oord et al. 2017) with the choices of TiTok (Yu et al. 2024,
bytedance/1d-tokenizer `VectorQuantizer`):

- codebook `[K, D]` initialised uniform in `[-1/K, 1/K]`;
- optional L2 normalisation of features and codes (ViT-VQGAN, Yu et al. 2022),
  which turns the nearest-code search into a cosine-similarity search;
- losses (VQ-VAE eq. 3): `commitment = beta * mse(sg(zq), z)` and
  `codebook = mse(zq, sg(z))`, with the straight-through estimator
  `z + sg(zq - z)` carrying the decoder's gradient to the encoder;
- TiTok's single-stage `clustering_vq`: an EMA of how often each code is chosen
  (`CodeUsage`, updated in training forwards), and `revive`, which pulls
  rarely used codes toward their nearest batch feature (CVQ-VAE, Zheng and
  Vedaldi 2023) with weight `exp(-10 K u / (1 - decay) - 1e-3)`, `u` the usage EMA.

Everything here runs in float32 whatever the model's compute dtype.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.quantizers.base import Quantized


class CodeUsage(nnx.Variable):
    """EMA of per-code assignment frequency `[K]`.

    A separate Variable type (not `nnx.Param`) so optimizers, which update
    `nnx.Param` state only, never touch it; it still lives in the model state
    and hence in checkpoints.
    """


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    # Same clamp as torch.nn.functional.normalize: zero vectors stay zero.
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def _sqdist(z: jax.Array, codes: jax.Array) -> jax.Array:
    """Squared distances `[N, K]` via |z|^2 + |e|^2 - 2 z.e (one matmul, no [N, K, D])."""
    # HIGHEST keeps the search in true float32 on TPUs, whose default f32 matmul is bf16.
    cross = jnp.matmul(z, codes.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(z * z, axis=-1, keepdims=True) + jnp.sum(codes * codes, axis=-1) - 2.0 * cross


class VectorQuantizer(nnx.Module):
    """Nearest-code quantization of `z: [..., D]` into `K` codes.

    Registered as `vq`. Reads and returns `D` channels; revivable.

    Args:
      codebook_size: number of codes `K`.
      dim: code dimension `D`.
      l2_norm: normalise features and codes before the search and lookup.
      commitment: weight `beta` of the commitment loss.
      usage_decay: EMA decay of the per-code usage statistics.
      rngs: draws the codebook initialisation.
    """

    kind = "discrete"
    revivable = True

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        l2_norm: bool = True,
        commitment: float = 0.25,
        usage_decay: float = 0.99,
        rngs: nnx.Rngs,
    ):
        self.codebook_size = codebook_size
        self.dim = dim
        self.input_dim = dim
        self.l2_norm = l2_norm
        self.commitment = commitment
        self.usage_decay = usage_decay
        bound = 1.0 / codebook_size
        self.codebook = nnx.Param(
            jax.random.uniform(rngs.params(), (codebook_size, dim), jnp.float32, -bound, bound)
        )
        self.usage = CodeUsage(jnp.zeros((codebook_size,), jnp.float32))

    def codes(self) -> jax.Array:
        """The codebook `[K, D]` as used for search and lookup (normalised if l2_norm)."""
        codes = self.codebook[...].astype(jnp.float32)
        return _l2_normalize(codes) if self.l2_norm else codes

    def embed(self, indices: jax.Array) -> jax.Array:
        """Code vectors for ids: `[...]` int -> `[..., D]` float32."""
        return jnp.take(self.codes(), indices, axis=0)

    def nearest(self, z: jax.Array) -> jax.Array:
        """Ids `[...]` int32 of the nearest code to each feature of `z: [..., D]`."""
        z = z.astype(jnp.float32)
        return self._search(_l2_normalize(z) if self.l2_norm else z, self.codes())

    def _search(self, z: jax.Array, codes: jax.Array) -> jax.Array:
        """Nearest ids `[...]` for features already in search space (normalised if l2_norm)."""
        dist = _sqdist(z.reshape(-1, self.dim), codes)
        return jnp.argmin(dist, axis=-1).astype(jnp.int32).reshape(z.shape[:-1])

    def __call__(
        self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None
    ) -> Quantized:
        """Quantize `z: [..., D]`; `train` updates the usage EMA; `rng` is unused."""
        del rng
        if z.shape[-1] != self.dim:
            raise ValueError(f"features have dim {z.shape[-1]}, codebook dim is {self.dim}")
        z = z.astype(jnp.float32)
        if self.l2_norm:
            z = _l2_normalize(z)
        codes = self.codes()
        indices = self._search(z, codes)
        zq = jnp.take(codes, indices, axis=0)

        sg = jax.lax.stop_gradient
        losses = {
            "commitment": self.commitment * jnp.mean(jnp.square(sg(zq) - z)),
            "codebook": jnp.mean(jnp.square(zq - sg(z))),
        }
        # Batch code distribution p_k = n_k / N.
        counts = jnp.bincount(indices.reshape(-1), length=self.codebook_size)
        probs = counts.astype(jnp.float32) / indices.size
        if train:
            decay = self.usage_decay
            self.usage[...] = decay * self.usage[...] + (1.0 - decay) * probs
        stats = {
            "perplexity": jnp.exp(jnp.sum(jax.scipy.special.entr(probs))),
            "code_usage": jnp.mean((counts > 0).astype(jnp.float32)),
        }
        return Quantized(latents=z + sg(zq - z), indices=indices, losses=losses, stats=stats)

    def revival_weights(self) -> jax.Array:
        """Per-code weight `[K]` in (0, 1) of the pull toward a batch feature.

        TiTok's rule `exp(-10 K u / (1 - decay) - 1e-3)`: 0.999 for a never-used
        code, 4.5e-5 for one used at 1% of the uniform rate `1/K`, and below 1e-43
        (a float32 no-op) from 10% of it on, so healthy codes are left untouched.
        """
        scale = 10.0 * self.codebook_size / (1.0 - self.usage_decay)
        return jnp.exp(-scale * self.usage[...] - 1e-3)

    def revive(self, features: jax.Array, rng: jax.Array | None = None) -> None:
        """Pull rarely used codes toward their nearest feature in `features: [N, D]`.

        Call after an optimizer update (every step in the official code) with
        the batch's pre-quantization features (`TiTok.features`). Each code `k` moves to
        `(1 - w_k) e_k + w_k f_{n(k)}`, where `f_{n(k)}` is the (unnormalised)
        feature nearest to code `k` and `w_k = revival_weights()[k]`. This is
        the official rule, so there is no dead-code threshold; `rng` is
        accepted for callers that treat quantizers uniformly and is unused.
        The usage EMA is not reset, as in the official code: a revived code
        stays eligible until batches start choosing it.
        """
        del rng
        features = jax.lax.stop_gradient(features.astype(jnp.float32)).reshape(-1, self.dim)
        search = _l2_normalize(features) if self.l2_norm else features
        nearest_feature = jnp.argmin(_sqdist(search, self.codes()), axis=0)
        weights = self.revival_weights()[:, None]
        codebook = self.codebook[...]
        self.codebook[...] = (1.0 - weights) * codebook + weights * features[nearest_feature]
