"""VQ2D: a 2D grid VQ tokenizer in the VQGAN / LlamaGen VQ-16 style.

An encoder maps an image to an `(h, w)` grid of features, a quantizer turns
each cell into a `token_dim` latent (by default an L2-normalised codebook, the
same `vq` as TiTok; any registered quantizer by config, e.g. `gaussian` for a
continuous grid), and a decoder maps the grid back to pixels. Two backbones:

- `conv` (default): the VQGAN convolutional encoder and decoder of
  `visgen.nn.convnet`, downsampling `2^(len(channel_mult) - 1)`. The
  LlamaGen VQ-16 shape (`VQ16`: channels 128, multipliers (1, 1, 2, 2, 4), two
  residual blocks, z 256, mid attention, 16384 x 8 codes, commitment 0.25) is
  `configs/vq2d.py` at 256 px.
- `vit`: a patch ViT (patch `p` = the downsampling factor): patch embedding +
  position -> ViT blocks -> linear to the quantizer's input; the decoder
  mirrors it and predicts each patch's pixels. On a CPU a small conv model
  (channels 32, multipliers (1, 2, 2), 1.0M params) is far slower per train
  step than the tiny ViT (0.22M params; timings: see docs/results.md), so the
  `tiny` config uses this backbone (a deviation from the paper's conv design).

Videos `[B, T, H, W, 3]` are tokenized frame by frame into a `(t, h, w)`
grid: a simplification (no temporal compression), so a video costs T images.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.nn.convnet import ConvDecoder, ConvEncoder
from visgen.nn.patchify import patchify, unpatchify
from visgen.nn.vit import DENSE_INIT, LN_EPS, Transformer, learned_embedding
from visgen.quantizers import make_quantizer, quantizer_input_dim, quantizer_kwargs
from visgen.tokenizers.base import Encoded, TokenizerOutput, check_input, spec_from_quantizer

# LlamaGen's VQ-16 at 256 px (downsample 16, 16 x 16 tokens).
VQ16 = dict(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256)
# LlamaGen's VQ-16 codebook: 16384 L2-normalised codes (of `token_dim` = 8 channels).
VQ16_QUANTIZER = MappingProxyType(
    dict(name="vq", codebook_size=16384, l2_norm=True, commitment=0.25)
)


class ViTGridEncoder(nnx.Module):
    """Images `[B, H, W, 3]` -> features `[B, H/p, W/p, out_dim]` float32."""

    def __init__(
        self, *, image_size, patch_size, width, depth, heads, out_dim, positions, dtype, rngs
    ):
        self.patch = (patch_size, patch_size)
        self.grid = (image_size // patch_size, image_size // patch_size)
        n = self.grid[0] * self.grid[1]
        self.dtype = dtype
        self.embed = nnx.Linear(
            3 * patch_size**2, width, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs
        )
        self.pos = learned_embedding(rngs, n, width) if positions else None
        self.transformer = Transformer(depth, width, heads, dtype=dtype, rngs=rngs)
        self.ln_post = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)
        self.head = nnx.Linear(width, out_dim, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.embed(patchify(x, self.patch).astype(self.dtype)).astype(jnp.float32)
        h = self.transformer(h if self.pos is None else h + self.pos[...])
        z = self.head(self.ln_post(h).astype(self.dtype)).astype(jnp.float32)
        return z.reshape(x.shape[0], *self.grid, -1)


class ViTGridDecoder(nnx.Module):
    """Latents `[B, h, w, token_dim]` -> pixels `[B, h*p, w*p, 3]` float32."""

    def __init__(
        self, *, image_size, patch_size, width, depth, heads, token_dim, positions, dtype, rngs
    ):
        self.patch = (patch_size, patch_size)
        self.grid = (image_size // patch_size, image_size // patch_size)
        n = self.grid[0] * self.grid[1]
        self.dtype = dtype
        self.embed = nnx.Linear(token_dim, width, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)
        self.pos = learned_embedding(rngs, n, width) if positions else None
        self.transformer = Transformer(depth, width, heads, dtype=dtype, rngs=rngs)
        self.ln_post = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)
        self.head = nnx.Linear(
            width, 3 * patch_size**2, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs
        )

    def __call__(self, z: jax.Array) -> jax.Array:
        b = z.shape[0]
        h = self.embed(z.reshape(b, -1, z.shape[-1]).astype(self.dtype)).astype(jnp.float32)
        h = self.transformer(h if self.pos is None else h + self.pos[...])
        patches = self.head(self.ln_post(h).astype(self.dtype)).astype(jnp.float32)
        return unpatchify(patches, self.grid, self.patch, 3)


class VQ2D(nnx.Module):
    """2D grid tokenizer for images `[B, H, W, 3]` or videos `[B, T, H, W, 3]` in [-1, 1].

    Args:
      image_size: input height and width (divisible by the downsampling factor).
      num_frames: 0 for images; `T > 0` for videos (tokenized frame by frame).
      backbone: `conv` (VQGAN) or `vit` (patch ViT).
      channels, channel_mult, num_res_blocks, z_channels, attention, norm_groups:
        the conv backbone (`visgen.nn.convnet`); the grid is
        `image_size / 2^(len(channel_mult) - 1)` on a side.
      patch_size, width, depth, heads: the vit backbone; the grid is
        `image_size / patch_size` on a side.
      positions: the vit backbone adds learned position embeddings to its
        patches (both sides). `False` makes it translation-equivariant: with
        `depth=0` (`configs/vq2d.py:tiny`) a patch's code then depends on its
        pixels alone, so a background or a shape's interior gets the same
        code at every position instead of one per position.
      token_dim: latent channels per cell that the decoder reads; the quantizer's `dim`.
      quantizer: the bottleneck, a config section `name` + that quantizer's
        typed arguments without `dim` (`visgen.quantizers.QUANTIZERS`); the
        `spec` follows it (discrete ids for `vq`).
      dtype: compute dtype; params, norms and outputs are float32.
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        *,
        image_size: int = 256,
        num_frames: int = 0,
        backbone: Literal["conv", "vit"] = "conv",
        channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        attention: bool = True,
        norm_groups: int = 32,
        patch_size: int = 16,
        width: int = 512,
        depth: int = 8,
        heads: int = 8,
        positions: bool = True,
        token_dim: int = 8,
        quantizer: Mapping[str, Any] = VQ16_QUANTIZER,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if backbone not in ("conv", "vit"):
            raise ValueError(f"backbone must be 'conv' or 'vit', got {backbone!r}")
        factor = 2 ** (len(channel_mult) - 1) if backbone == "conv" else patch_size
        if image_size % factor:
            raise ValueError(
                f"image_size {image_size} is not divisible by the {backbone} backbone's "
                f"downsampling factor {factor}"
            )
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        quantizer = quantizer_kwargs(quantizer, dim=token_dim, owner="VQ2D token_dim")
        out_dim = quantizer_input_dim(**quantizer)
        self.downsample = factor
        self.grid = (image_size // factor, image_size // factor)
        frame_shape = (image_size, image_size, 3)
        self.input_shape = (num_frames, *frame_shape) if num_frames else frame_shape
        layout = (num_frames, *self.grid) if num_frames else self.grid
        # Parameters are drawn in this order (encoder, decoder, quantizer).
        if backbone == "conv":
            shared = dict(
                channels=channels,
                channel_mult=tuple(channel_mult),
                num_res_blocks=num_res_blocks,
                z_channels=z_channels,
                groups=norm_groups,
                attention=attention,
                dtype=dtype,
                rngs=rngs,
            )
            self.encoder = ConvEncoder(out_dim=out_dim, **shared)
            self.decoder = ConvDecoder(token_dim=token_dim, **shared)
        else:
            shared = dict(
                image_size=image_size,
                patch_size=patch_size,
                width=width,
                depth=depth,
                heads=heads,
                positions=positions,
                dtype=dtype,
                rngs=rngs,
            )
            self.encoder = ViTGridEncoder(out_dim=out_dim, **shared)
            self.decoder = ViTGridDecoder(token_dim=token_dim, **shared)
        self.quantizer = make_quantizer(**quantizer, rngs=rngs)
        self.spec = spec_from_quantizer(self.quantizer, layout)

    @property
    def revivable(self) -> bool:
        """Whether `revive` does anything: the quantizer's declared capability."""
        return self.quantizer.revivable

    def features(self, x: jax.Array) -> jax.Array:
        """Pre-quantization features `[B, *layout, input_dim]` float32."""
        check_input("VQ2D", x, self.input_shape)
        z = self.encoder(x.reshape(-1, *x.shape[-3:]))
        return z.reshape(*x.shape[:-3], *z.shape[1:])

    def encode(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> Encoded:
        """`x` -> tokens `[B, *layout]` int32 (None if continuous) and latents
        `[B, *layout, C]`; `rng` samples a stochastic quantizer; `text` unused."""
        del text
        q = self.quantizer(self.features(x), train=train, rng=rng)
        return Encoded(tokens=q.indices, latents=q.latents, losses=q.losses, stats=q.stats)

    def decode_latents(self, latents: jax.Array) -> jax.Array:
        """Latents `[B, *layout, C]` -> pixels `[B, H, W, 3]` / `[B, T, H, W, 3]` float32."""
        layout = self.spec.layout
        if latents.ndim != len(layout) + 2 or tuple(latents.shape[1:-1]) != layout:
            raise ValueError(
                f"latents must be [B, {', '.join(map(str, layout))}, C], got {tuple(latents.shape)}"
            )
        pixels = self.decoder(latents.reshape(-1, *latents.shape[-3:]))
        return pixels.reshape(*latents.shape[:-3], *pixels.shape[1:])

    def decode(
        self,
        tokens: jax.Array,
        *,
        text: jax.Array | None = None,
        num_tokens: int | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Token ids `[B, *layout]` (or latents `[B, *layout, C]`) -> pixels float32.

        `num_tokens` is not supported: every grid cell is needed to decode.
        """
        del text, rng
        if num_tokens is not None and num_tokens != self.spec.num_tokens:
            raise ValueError("VQ2D decodes whole grids; num_tokens prefixes are not supported")
        if jnp.issubdtype(tokens.dtype, jnp.integer):
            if self.spec.kind != "discrete":
                raise ValueError(
                    f"integer token ids need a discrete quantizer; this VQ2D makes "
                    f"{self.spec.describe()}: pass latents instead"
                )
            if tokens.shape[1:] != self.spec.layout:
                raise ValueError(
                    f"token ids must be [B, {', '.join(map(str, self.spec.layout))}], got "
                    f"{tuple(tokens.shape)}"
                )
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
        """Reconstruct `x` through the quantizer: returns (pixels float32, Encoded)."""
        encoded = self.encode(x, text=text, train=train, rng=rng)
        return self.decode_latents(encoded.latents), encoded

    def training_step(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> TokenizerOutput:
        """The training forward pass: the reconstruction, for the task's pixel
        losses, and the quantizer's losses (usage EMA updated)."""
        recon, encoded = self(x, text=text, train=True, rng=rng)
        return TokenizerOutput(recon, dict(encoded.losses), dict(encoded.stats), encoded)

    def revive(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> None:
        """Pass the batch's pre-quantization features, flattened `[N, input_dim]`,
        to the quantizer's `revive` (`text` is unused)."""
        del text
        features = self.features(x)
        self.quantizer.revive(features.reshape(-1, features.shape[-1]), rng)
