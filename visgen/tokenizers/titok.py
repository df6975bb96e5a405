"""TiTok: a 1D tokenizer that reads an image into K learned latent tokens.

Yu et al. 2024, "An Image is Worth 32 Tokens for Reconstruction and
Generation" (bytedance/1d-tokenizer), single-stage non-legacy path:

- Encoder: patch embedding (a linear layer on `patchify` output, equal to the
  kernel = stride = p convolution) -> `[CLS, N patches] + pos` followed by `K`
  learned latent tokens `+ latent pos` -> ln_pre -> ViT blocks -> the last
  `K` outputs -> ln_post -> linear to what the quantizer reads (`token_dim`
  for VQ, `2 * token_dim` for the Gaussian).
- Bottleneck: any registered quantizer, named by the `quantizer` section: an
  L2-normalised VQ codebook (`vq`, the paper's), a diagonal Gaussian posterior
  (`gaussian`, TiTok's VAE mode) or a chain of them. The `spec` follows it:
  discrete ids for VQ, continuous latents for the Gaussian.
- Decoder: linear `token_dim -> width` + latent pos; sequence
  `[CLS, N mask tokens, K latents] + pos` -> ln_pre -> ViT blocks -> positions
  `1..N` -> ln_post -> linear to `p*p*3` pixels per patch -> unpatchify ->
  3x3 conv (3 -> 3).

Two-stage training (the paper's main recipe), when a `proxy` tokenizer is
given: the decoder's head predicts, for each patch, logits over the proxy's
codebook instead of pixels. Training minimises the cross-entropy against the
codes a frozen 2D grid tokenizer (the paper's MaskGIT-VQGAN; here any trained
`vq2d` whose grid equals TiTok's patch grid) assigns to the image, plus the
quantizer loss: `training_step` returns that objective and asks the task for
no pixel regression. Pixels are the proxy decoder applied to the softmax-weighted
sum of proxy codebook entries, as the official decode does. The paper's
second stage (fine-tuning that pixel decoder with perceptual and GAN losses)
is not implemented: the proxy decoder stays frozen.

Videos `[B, T, H, W, 3]` use `tubelet x p x p` patches (`num_frames > 0`) and a
per-frame 3x3 output conv. The transformer computes in `dtype`; the residual
stream, LayerNorms, quantizer and losses stay float32 and outputs are float32.
"""

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from visgen.nn.patchify import grid_shape, patchify, unpatchify
from visgen.nn.vit import DENSE_INIT, Transformer, layer_norm, learned_embedding
from visgen.quantizers import make_quantizer, quantizer_input_dim, quantizer_kwargs
from visgen.tokenizers.base import Encoded, TokenizerOutput, check_input, spec_from_quantizer

# Model sizes of the paper as (width, depth, heads); its headline 256-px models
# are S-128, B-64 and L-32 (size-tokens), all with 4096 codes x 12 dims, L2 norm.
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (512, 8, 8),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}

# The paper's bottleneck: 4096 L2-normalised codes (of `token_dim` = 12 channels).
PAPER_QUANTIZER = MappingProxyType(
    dict(name="vq", codebook_size=4096, l2_norm=True, commitment=0.25)
)


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
      token_dim: channels per token `C` that the decoder reads (the codebook
        dim, or the Gaussian's latent channels); the quantizer's `dim`.
      quantizer: the bottleneck, a config section `name` + that quantizer's
        typed arguments without `dim` (`visgen.quantizers.QUANTIZERS`), e.g.
        `dict(name="vq", codebook_size=4096, l2_norm=True, commitment=0.25)`
        or `dict(name="gaussian", kl_weight=1e-6)`.
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
        token_dim: int = 12,
        quantizer: Mapping[str, Any] = PAPER_QUANTIZER,
        dtype: jnp.dtype = jnp.float32,
        remat: bool = False,
        init_std: float = 0.02,
        qk_norm: bool = False,
        proxy: nnx.Module | None = None,
        rngs: nnx.Rngs,
    ):
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        quantizer = quantizer_kwargs(quantizer, dim=token_dim, owner="TiTok token_dim")
        self.dtype = dtype
        if num_frames:
            self.input_shape = (num_frames, image_size, image_size, 3)
            self.patch = (tubelet, patch_size, patch_size)
        else:
            self.input_shape = (image_size, image_size, 3)
            self.patch = (patch_size, patch_size)
        self.grid = grid_shape(self.input_shape[:-1], self.patch)
        num_patches, patch_dim = math.prod(self.grid), math.prod(self.patch) * 3
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
        # Parameters are drawn in this order (encoder, decoder, quantizer, conv_out).
        self.encoder = TiTokEncoder(out_dim=quantizer_input_dim(**quantizer), **shared)
        head_dim = patch_dim if proxy is None else proxy.spec.vocab_size
        self.decoder = TiTokDecoder(token_dim=token_dim, **dict(shared, patch_dim=head_dim))
        self.quantizer = make_quantizer(**quantizer, rngs=rngs)
        self.spec = spec_from_quantizer(self.quantizer, (num_tokens,))
        self.conv_out = (
            nnx.Conv(3, 3, (3, 3), padding="SAME", kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)
            if proxy is None
            else None
        )

    @property
    def revivable(self) -> bool:
        """Whether `revive` does anything: the quantizer's declared capability."""
        return self.quantizer.revivable

    def features(self, x: jax.Array) -> jax.Array:
        """Pre-quantization features `[B, K, input_dim]` float32 (`2C` moments for
        the Gaussian)."""
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

        `train` updates the codebook usage EMA; `rng` samples a Gaussian posterior
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
            if self.spec.kind != "discrete":
                raise ValueError(
                    f"integer token ids need a discrete quantizer; this TiTok makes "
                    f"{self.spec.describe()}: pass latents instead"
                )
            if tokens.ndim != 2:
                raise ValueError(f"token ids must be [B, K], got {tuple(tokens.shape)}")
            return self.decode_latents(self.quantizer.embed(tokens))
        return self.decode_latents(tokens)

    def __call__(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, Encoded]:
        """Reconstruct `x` through the bottleneck: returns (pixels float32, Encoded).

        With a proxy tokenizer the pixels are the proxy decoder's (see the module).
        """
        encoded = self.encode(x, text=text, train=train, rng=rng)
        return self.decode_latents(encoded.latents), encoded

    def training_step(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> TokenizerOutput:
        """The training forward pass (usage EMA updated, `rng` samples a Gaussian).

        Without a proxy: the reconstruction, for the task's pixel losses, and
        the quantizer's losses. With one (two-stage): `losses` adds
        `proxy_ce`, the cross-entropy of the predicted proxy codes `[B, N]`
        against those the frozen proxy assigns to `x`, `stats` their accuracy
        `proxy_accuracy`, and `regress_pixels` is False (the proxy-decoded
        `recon` is only logged).
        """
        encoded = self.encode(x, text=text, train=True, rng=rng)
        if self.proxy is None:
            recon = self.decode_latents(encoded.latents)
            return TokenizerOutput(recon, dict(encoded.losses), dict(encoded.stats), encoded)
        logits = self.decoder(encoded.latents).astype(jnp.float32)
        targets = jax.lax.stop_gradient(self.proxy.encode(x).tokens)
        targets = targets.reshape(targets.shape[0], -1)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == targets).astype(jnp.float32))
        return TokenizerOutput(
            recon=self._decode_proxy_logits(logits),
            losses={**encoded.losses, "proxy_ce": jnp.mean(ce)},
            stats={**encoded.stats, "proxy_accuracy": accuracy},
            encoded=encoded,
            regress_pixels=False,
        )

    def revive(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> None:
        """Pass the batch's pre-quantization features, flattened `[B*K, input_dim]`,
        to the quantizer's `revive` (`text` is unused)."""
        del text
        features = self.features(x)
        self.quantizer.revive(features.reshape(-1, features.shape[-1]), rng)
