"""VQGAN-style convolutional encoder and decoder (Esser et al. 2021; LlamaGen's VQ).

    encoder: conv3x3 -> [ResBlock x n, stride-2 conv]* -> mid(Res, Attn, Res)
             -> GroupNorm, SiLU, conv3x3 to z -> conv1x1 to out_dim
    decoder: conv1x1 to z -> conv3x3 -> mid -> [ResBlock x (n+1), upsample]*
             -> GroupNorm, SiLU, conv3x3 to RGB

Differences from LlamaGen's module, on purpose: downsampling is a stride-2 3x3
conv with symmetric "SAME" padding (LlamaGen pads right/bottom only), and the
GroupNorm group count is a parameter so narrow models can use it. Convolutions
compute in `dtype`; norms, residual sums and outputs are float32.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.nn.vit import DENSE_INIT


def _conv(cin: int, cout: int, k: int, rngs: nnx.Rngs, *, dtype, stride: int = 1) -> nnx.Conv:
    return nnx.Conv(
        cin,
        cout,
        (k, k),
        strides=(stride, stride),
        padding="SAME",
        kernel_init=DENSE_INIT,
        dtype=dtype,
        rngs=rngs,
    )


class ResBlock(nnx.Module):
    """`x + conv(SiLU(GN(conv(SiLU(GN(x))))))`, 1x1 shortcut when channels change."""

    def __init__(self, cin: int, cout: int, groups: int, *, dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.norm1 = nnx.GroupNorm(cin, num_groups=min(groups, cin), epsilon=1e-6, rngs=rngs)
        self.conv1 = _conv(cin, cout, 3, rngs, dtype=dtype)
        self.norm2 = nnx.GroupNorm(cout, num_groups=min(groups, cout), epsilon=1e-6, rngs=rngs)
        self.conv2 = _conv(cout, cout, 3, rngs, dtype=dtype)
        self.shortcut = _conv(cin, cout, 1, rngs, dtype=dtype) if cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)).astype(self.dtype)).astype(jnp.float32)
        h = self.conv2(nnx.silu(self.norm2(h)).astype(self.dtype)).astype(jnp.float32)
        skip = x if self.shortcut is None else self.shortcut(x.astype(self.dtype))
        return skip.astype(jnp.float32) + h


class AttnBlock(nnx.Module):
    """Single-head self-attention over all grid cells: `[B, h, w, C]` -> same."""

    def __init__(self, channels: int, groups: int, *, dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.norm = nnx.GroupNorm(channels, num_groups=min(groups, channels), rngs=rngs)
        self.qkv = nnx.Linear(
            channels, 3 * channels, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs
        )
        self.out = nnx.Linear(channels, channels, kernel_init=DENSE_INIT, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        q, k, v = jnp.split(
            self.qkv(self.norm(x).astype(self.dtype)).reshape(b, h * w, 3 * c), 3, -1
        )
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) * c**-0.5
        y = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, -1).astype(v.dtype), v)
        return x + self.out(y).astype(jnp.float32).reshape(x.shape)


class MidBlock(nnx.Module):
    def __init__(self, channels: int, groups: int, attention: bool, *, dtype, rngs: nnx.Rngs):
        self.res1 = ResBlock(channels, channels, groups, dtype=dtype, rngs=rngs)
        self.attn = AttnBlock(channels, groups, dtype=dtype, rngs=rngs) if attention else None
        self.res2 = ResBlock(channels, channels, groups, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.res1(x)
        if self.attn is not None:
            x = self.attn(x)
        return self.res2(x)


class ConvEncoder(nnx.Module):
    """Images `[B, H, W, 3]` -> features `[B, H/f, W/f, out_dim]` float32, f = 2^(levels-1)."""

    def __init__(
        self, *, channels, channel_mult, num_res_blocks, z_channels, out_dim, groups, attention,
        dtype, rngs,
    ):  # fmt: skip
        self.dtype = dtype
        self.conv_in = _conv(3, channels, 3, rngs, dtype=dtype)
        layers, cin = [], channels
        for level, mult in enumerate(channel_mult):
            cout = channels * mult
            for _ in range(num_res_blocks):
                layers.append(ResBlock(cin, cout, groups, dtype=dtype, rngs=rngs))
                cin = cout
            if level < len(channel_mult) - 1:
                layers.append(_conv(cin, cin, 3, rngs, dtype=dtype, stride=2))
        self.layers = nnx.List(layers)
        self.mid = MidBlock(cin, groups, attention, dtype=dtype, rngs=rngs)
        self.norm_out = nnx.GroupNorm(cin, num_groups=min(groups, cin), epsilon=1e-6, rngs=rngs)
        self.conv_out = _conv(cin, z_channels, 3, rngs, dtype=dtype)
        self.quant_conv = _conv(z_channels, out_dim, 1, rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x.astype(self.dtype)).astype(jnp.float32)
        for layer in self.layers:
            h = layer(h) if isinstance(layer, ResBlock) else layer(h.astype(self.dtype))
            h = h.astype(jnp.float32)
        h = self.mid(h)
        h = self.conv_out(nnx.silu(self.norm_out(h)).astype(self.dtype))
        return self.quant_conv(h).astype(jnp.float32)


class Upsample(nnx.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 conv."""

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 3, rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x.astype(self.conv.dtype)).astype(jnp.float32)


class ConvDecoder(nnx.Module):
    """Latents `[B, h, w, token_dim]` -> pixels `[B, h*f, w*f, 3]` float32."""

    def __init__(
        self, *, channels, channel_mult, num_res_blocks, z_channels, token_dim, groups,
        attention, dtype, rngs,
    ):  # fmt: skip
        self.dtype = dtype
        cin = channels * channel_mult[-1]
        self.post_quant_conv = _conv(token_dim, z_channels, 1, rngs, dtype=dtype)
        self.conv_in = _conv(z_channels, cin, 3, rngs, dtype=dtype)
        self.mid = MidBlock(cin, groups, attention, dtype=dtype, rngs=rngs)
        layers = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            cout = channels * mult
            for _ in range(num_res_blocks + 1):
                layers.append(ResBlock(cin, cout, groups, dtype=dtype, rngs=rngs))
                cin = cout
            if level > 0:
                layers.append(Upsample(cin, dtype=dtype, rngs=rngs))
        self.layers = nnx.List(layers)
        self.norm_out = nnx.GroupNorm(cin, num_groups=min(groups, cin), epsilon=1e-6, rngs=rngs)
        self.conv_out = _conv(cin, 3, 3, rngs, dtype=dtype)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = self.post_quant_conv(z.astype(self.dtype))
        h = self.mid(self.conv_in(h).astype(jnp.float32))
        for layer in self.layers:
            h = layer(h)
        return self.conv_out(nnx.silu(self.norm_out(h)).astype(self.dtype)).astype(jnp.float32)
