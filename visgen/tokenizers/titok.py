"""TiTok: a 1D tokenizer that reads an image into K learned latent tokens.

Yu et al. 2024, "An Image is Worth 32 Tokens for Reconstruction and
Generation" (bytedance/1d-tokenizer), single-stage non-legacy path:

- Encoder: patch embedding (a linear layer on `patchify` output, equal to the
  kernel = stride = p convolution) -> `[CLS, N patches] + pos` followed by `K`
  learned latent tokens `+ latent pos` -> ln_pre -> ViT blocks -> the last
  `K` outputs -> ln_post -> linear to `token_dim` (`2 * token_dim` for the VAE).
- Bottleneck: an L2-normalised VQ codebook (`latent="vq"`) or a diagonal
  Gaussian posterior (`latent="vae"`).
- Decoder: linear `token_dim -> width` + latent pos; sequence
  `[CLS, N mask tokens, K latents] + pos` -> ln_pre -> ViT blocks -> positions
  `1..N` -> ln_post -> linear to `p*p*3` pixels per patch -> unpatchify ->
  3x3 conv (3 -> 3).

Two-stage training (the paper's main recipe), when a `proxy` tokenizer is
given: the decoder's head predicts, for each patch, logits over the proxy's
codebook instead of pixels. Training minimises the cross-entropy against the
codes a frozen 2D grid tokenizer (the paper's MaskGIT-VQGAN; here any trained
`vq2d` whose grid equals TiTok's patch grid) assigns to the image, plus the
quantizer loss; pixels are the proxy decoder applied to the softmax-weighted
sum of proxy codebook entries, as the official decode does. The paper's
second stage (fine-tuning that pixel decoder with perceptual and GAN losses)
is not implemented: the proxy decoder stays frozen.

Videos `[B, T, H, W, 3]` use `tubelet x p x p` patches (`num_frames > 0`) and a
per-frame 3x3 output conv. The transformer computes in `dtype`; the residual
stream, LayerNorms, quantizer and losses stay float32 and outputs are float32.
"""

import math
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from visgen.nn.patchify import grid_shape, patchify, unpatchify
from visgen.nn.vit import DENSE_INIT, Transformer, layer_norm, learned_embedding
from visgen.quantizers import DiagonalGaussian, VectorQuantizer
from visgen.tokenizers.base import Encoded, TokenSpec, check_input

# Model sizes of the paper as (width, depth, heads); its headline 256-px models
# are S-128, B-64 and L-32 (size-tokens), all with 4096 codes x 12 dims, L2 norm.
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (512, 8, 8),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}


class TiTokEncoder(nnx.Module):
    """Patches `[B, N, P]` -> pre-quantization features `[B, K, out_dim]` float32."""

    def __init__(
        self,
        *,
        patch_dim: int,
        num_patches: int,
        width: int,
        depth: int,
        heads: int,
        num_tokens: int,
        out_dim: int,
        dtype: jnp.dtype,
        remat: bool,
        init_std: float,
        qk_norm: bool,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.patch_embed = nnx.Linear(
            patch_dim, width, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs
        )
        self.cls = learned_embedding(rngs, 1, width)
        self.pos = learned_embedding(rngs, num_patches + 1, width)
        self.latent_tokens = learned_embedding(rngs, num_tokens, width)
        self.latent_pos = learned_embedding(rngs, num_tokens, width)
        self.ln_pre = layer_norm(width, rngs)
        self.transformer = Transformer(
            depth,
            width,
            heads,
            dtype=dtype,
            remat=remat,
            init=nnx.initializers.normal(stddev=init_std),
            qk_norm=qk_norm,
            rngs=rngs,
        )
        self.ln_post = layer_norm(width, rngs)
        self.head = nnx.Linear(width, out_dim, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)

    def __call__(self, patches: jax.Array) -> jax.Array:
        b = patches.shape[0]
        x = self.patch_embed(patches.astype(self.dtype)).astype(jnp.float32)
        cls = jnp.broadcast_to(self.cls[...], (b, *self.cls.shape))
        x = jnp.concatenate([cls, x], axis=1) + self.pos[...]
        latents = self.latent_tokens[...] + self.latent_pos[...]
        x = jnp.concatenate([x, jnp.broadcast_to(latents, (b, *latents.shape))], axis=1)
        x = self.transformer(self.ln_pre(x))
        k = self.latent_tokens.shape[0]
        y = self.ln_post(x[:, -k:]).astype(self.dtype)
        return self.head(y).astype(jnp.float32)


class TiTokDecoder(nnx.Module):
    """Latents `[B, k, C]` (k <= K) -> per-patch pixels `[B, N, P]` in `dtype`."""

    def __init__(
        self,
        *,
        patch_dim: int,
        num_patches: int,
        width: int,
        depth: int,
        heads: int,
        num_tokens: int,
        token_dim: int,
        dtype: jnp.dtype,
        remat: bool,
        init_std: float,
        qk_norm: bool,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.embed = nnx.Linear(token_dim, width, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)
        self.cls = learned_embedding(rngs, 1, width)
        self.pos = learned_embedding(rngs, num_patches + 1, width)
        self.mask_token = learned_embedding(rngs, 1, width)
        self.latent_pos = learned_embedding(rngs, num_tokens, width)
        self.ln_pre = layer_norm(width, rngs)
        self.transformer = Transformer(
            depth,
            width,
            heads,
            dtype=dtype,
            remat=remat,
            init=nnx.initializers.normal(stddev=init_std),
            qk_norm=qk_norm,
            rngs=rngs,
        )
        self.ln_post = layer_norm(width, rngs)
        self.head = nnx.Linear(width, patch_dim, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)

    def __call__(self, latents: jax.Array) -> jax.Array:
        b, k, _ = latents.shape
        n = self.pos.shape[0] - 1
        x = self.embed(latents.astype(self.dtype)).astype(jnp.float32)
        # A prefix of k tokens takes the first k latent positions (FlexTok-style prefixes).
        x = x + self.latent_pos[...][:k]
        queries = jnp.concatenate(
            [self.cls[...], jnp.broadcast_to(self.mask_token[...], (n, self.pos.shape[1]))]
        )
        queries = queries + self.pos[...]
        x = jnp.concatenate([jnp.broadcast_to(queries, (b, *queries.shape)), x], axis=1)
        x = self.transformer(self.ln_pre(x))
        y = self.ln_post(x[:, 1 : 1 + n]).astype(self.dtype)
        return self.head(y)


class TiTok(nnx.Module):
    """TiTok 1D tokenizer for images `[B, H, W, 3]` or videos `[B, T, H, W, 3]` in [-1, 1].

    Args:
      image_size: input height and width.
      patch_size: spatial patch size `p`.
      num_frames: 0 for images; `T > 0` for videos of `T` frames.
      tubelet: frames per video patch (video only).
      width, depth, heads: transformer size (see `SIZES`), shared by encoder
        and decoder.
      num_tokens: number of 1D latent tokens `K`.
      codebook_size: VQ codebook size (vocabulary).
      token_dim: channels per token `C` (codebook dim, or VAE latent channels).
      latent: `vq` (discrete tokens) or `vae` (continuous Gaussian latents).
      l2_norm: L2-normalise features and codebook (VQ).
      commitment: VQ commitment weight beta.
      kl_weight: weight of the VAE KL loss.
      dtype: transformer compute dtype (e.g. `jnp.bfloat16`); params are float32.
      remat: recompute each block's activations in the backward pass.
      init_std: std of the transformer blocks' weight init (TiTok: 0.02).
      qk_norm: LayerNorm queries and keys per head (not in TiTok; see `configs/titok.py`).
      proxy: a trained, frozen 2D grid tokenizer (`visgen.nn.frozen.freeze`)
        for two-stage training; its token grid must equal the patch grid.
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        *,
        image_size: int = 256,
        patch_size: int = 16,
        num_frames: int = 0,
        tubelet: int = 1,
        width: int = 512,
        depth: int = 8,
        heads: int = 8,
        num_tokens: int = 128,
        codebook_size: int = 4096,
        token_dim: int = 12,
        latent: Literal["vq", "vae"] = "vq",
        l2_norm: bool = True,
        commitment: float = 0.25,
        kl_weight: float = 1e-6,
        dtype: jnp.dtype = jnp.float32,
        remat: bool = False,
        init_std: float = 0.02,
        qk_norm: bool = False,
        proxy: nnx.Module | None = None,
        rngs: nnx.Rngs,
    ):
        if latent not in ("vq", "vae"):
            raise ValueError(f"latent must be 'vq' or 'vae', got {latent!r}")
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        self.latent = latent
        self.dtype = dtype
        if num_frames:
            self.input_shape = (num_frames, image_size, image_size, 3)
            self.patch = (tubelet, patch_size, patch_size)
        else:
            self.input_shape = (image_size, image_size, 3)
            self.patch = (patch_size, patch_size)
        self.grid = grid_shape(self.input_shape[:-1], self.patch)
        num_patches, patch_dim = math.prod(self.grid), math.prod(self.patch) * 3
        self.spec = TokenSpec(
            kind="discrete" if latent == "vq" else "continuous",
            layout=(num_tokens,),
            vocab_size=codebook_size if latent == "vq" else 0,
            channels=token_dim,
        )
        shared = dict(
            patch_dim=patch_dim,
            num_patches=num_patches,
            width=width,
            depth=depth,
            heads=heads,
            num_tokens=num_tokens,
            dtype=dtype,
            remat=remat,
            init_std=init_std,
            qk_norm=qk_norm,
            rngs=rngs,
        )
        self.proxy = proxy
        if proxy is not None and (
            proxy.spec.kind != "discrete" or tuple(proxy.spec.layout) != tuple(self.grid)
        ):
            raise ValueError(
                f"the proxy tokenizer's tokens ({proxy.spec.kind}, layout "
                f"{tuple(proxy.spec.layout)}) must be discrete on TiTok's patch grid "
                f"{tuple(self.grid)}"
            )
        out_dim = token_dim if latent == "vq" else 2 * token_dim
        self.encoder = TiTokEncoder(out_dim=out_dim, **shared)
        head_dim = patch_dim if proxy is None else proxy.spec.vocab_size
        self.decoder = TiTokDecoder(token_dim=token_dim, **dict(shared, patch_dim=head_dim))
        if latent == "vq":
            self.quantizer = VectorQuantizer(
                codebook_size, token_dim, l2_norm=l2_norm, commitment=commitment, rngs=rngs
            )
        else:
            self.quantizer = DiagonalGaussian(token_dim, kl_weight=kl_weight)
        self.conv_out = (
            nnx.Conv(3, 3, (3, 3), padding="SAME", kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)
            if proxy is None
            else None
        )

    def features(self, x: jax.Array) -> jax.Array:
        """Pre-quantization features `[B, K, C]` float32 (`[B, K, 2C]` moments for vae).

        The training task passes these (flattened) to `quantizer.revive`.
        """
        check_input("TiTok", x, self.input_shape)
        return self.encoder(patchify(x, self.patch))

    def encode(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> Encoded:
        """`x: [B, H, W, 3]` or `[B, T, H, W, 3]` -> tokens `[B, K]` int32, latents `[B, K, C]`.

        `train` updates the codebook usage EMA; `rng` samples the VAE posterior
        (its mode without). `text` is unused: TiTok is not text-conditioned.
        """
        del text
        q = self.quantizer(self.features(x), train=train, rng=rng)
        return Encoded(tokens=q.indices, latents=q.latents, losses=q.losses, stats=q.stats)

    def decode_latents(self, latents: jax.Array) -> jax.Array:
        """Latents `[B, k, C]` (k <= K) -> pixels `[B, H, W, 3]` / `[B, T, H, W, 3]` float32."""
        if (
            latents.ndim != 3
            or latents.shape[1] > self.spec.num_tokens
            or latents.shape[2] != self.spec.channels
        ):
            raise ValueError(
                f"latents must be [B, k <= {self.spec.num_tokens}, {self.spec.channels}], "
                f"got {tuple(latents.shape)}"
            )
        out = self.decoder(latents.astype(jnp.float32))
        if self.proxy is not None:
            return self._decode_proxy_logits(out)
        pixels = unpatchify(out, self.grid, self.patch, 3)
        frames = pixels.reshape(-1, *pixels.shape[-3:])
        return self.conv_out(frames).astype(jnp.float32).reshape(pixels.shape)

    def _decode_proxy_logits(self, logits: jax.Array) -> jax.Array:
        """Proxy-code logits `[B, N, V]` -> pixels through the frozen proxy decoder."""
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        latents = probs @ self.proxy.quantizer.codes()
        return self.proxy.decode_latents(latents.reshape(-1, *self.grid, latents.shape[-1]))

    def decode(
        self,
        tokens: jax.Array,
        *,
        text: jax.Array | None = None,
        num_tokens: int | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Token ids `[B, K]` (vq) or latents `[B, K, C]` -> pixels, float32.

        `num_tokens` decodes only the first `num_tokens` tokens. `text` and
        `rng` are unused (the decoder is deterministic and unconditional).
        """
        del text, rng
        if num_tokens is not None:
            tokens = tokens[:, :num_tokens]
        if jnp.issubdtype(tokens.dtype, jnp.integer):
            if self.latent != "vq":
                raise ValueError("integer token ids need latent='vq'; pass VAE latents instead")
            if tokens.ndim != 2:
                raise ValueError(f"token ids must be [B, K], got {tuple(tokens.shape)}")
            return self.decode_latents(self.quantizer.embed(tokens))
        return self.decode_latents(tokens)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rng: jax.Array | None = None
    ) -> tuple[jax.Array, Encoded]:
        """Reconstruct `x` through the bottleneck: returns (pixels float32, Encoded).

        With a proxy tokenizer, `Encoded.losses` also holds `proxy_ce`, the
        cross-entropy of the predicted proxy codes (the two-stage objective),
        and `Encoded.stats` their accuracy.
        """
        encoded = self.encode(x, train=train, rng=rng)
        if self.proxy is None:
            return self.decode_latents(encoded.latents), encoded
        logits = self.decoder(encoded.latents).astype(jnp.float32)
        targets = jax.lax.stop_gradient(self.proxy.encode(x).tokens)
        targets = targets.reshape(targets.shape[0], -1)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == targets).astype(jnp.float32))
        encoded.losses["proxy_ce"] = jnp.mean(ce)
        encoded.stats["proxy_accuracy"] = accuracy
        return self._decode_proxy_logits(logits), encoded
