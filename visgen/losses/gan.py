"""Adversarial losses for tokenizer training: PatchGAN, hinge loss, LeCam.

The recipe is the one TiTok's decoder fine-tuning and single-stage training use
(Yu et al. 2024, after VQGAN, Esser et al. 2021): a PatchGAN discriminator
(Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial
Networks") scores overlapping patches, trained with the hinge loss (Lim & Ye
2017); the generator term switches on after a warm-up step (`gan_weight`); and
LeCam regularisation (Tseng et al. 2021, "Regularizing Generative Adversarial
Networks under Limited Data", eq. 3) keeps the discriminator's predictions near
EMAs of its own past predictions, which stabilises training on small data.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

# pix2pix / taming initialise every conv kernel from N(0, 0.02).
_CONV_INIT = nnx.initializers.normal(stddev=0.02)


def _num_groups(channels: int) -> int:
    # 32 groups as in the usual GroupNorm setting, fewer when tiny test widths
    # are not divisible by 32.
    return math.gcd(32, channels)


class PatchDiscriminator(nnx.Module):
    """PatchGAN discriminator (pix2pix / taming `NLayerDiscriminator` layout).

    `num_layers` 4x4 stride-2 convolutions halve the resolution while the width
    doubles (capped at 8x `base_channels`), then one 4x4 stride-1 conv and a
    4x4 stride-1 conv to one logit per patch. LeakyReLU(0.2) everywhere. Each
    conv after the first is followed by GroupNorm rather than the original
    BatchNorm: batch statistics would be mutable state threaded through a pure
    train step and would couple real and fake batches, while GroupNorm is
    stateless and per-example. Those convs have no bias since the norm's shift
    replaces it.

    For 256x256 inputs and `num_layers=3` the output is 30x30 logits, each
    seeing a 70x70 receptive field.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        num_layers: int = 3,
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers

        def conv(cin: int, cout: int, stride: int, use_bias: bool) -> nnx.Conv:
            # Explicit padding 1 with a 4x4 kernel reproduces torch's output sizes
            # (H/2 for stride 2, H-1 for stride 1); "SAME" would not.
            return nnx.Conv(
                cin,
                cout,
                kernel_size=(4, 4),
                strides=(stride, stride),
                padding=((1, 1), (1, 1)),
                use_bias=use_bias,
                kernel_init=_CONV_INIT,
                dtype=dtype,
                rngs=rngs,
            )

        self.stem = conv(in_channels, base_channels, stride=2, use_bias=True)
        convs, norms = [], []
        width = base_channels
        for n in range(1, num_layers + 1):
            out = base_channels * min(2**n, 8)
            # The last block keeps the resolution (stride 1), as in pix2pix.
            convs.append(conv(width, out, stride=2 if n < num_layers else 1, use_bias=False))
            norms.append(nnx.GroupNorm(out, num_groups=_num_groups(out), dtype=dtype, rngs=rngs))
            width = out
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.head = conv(width, 1, stride=1, use_bias=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Patch logits for `x` in [-1, 1].

        Args:
          x: images `[B, H, W, C]` or videos `[B, T, H, W, C]`; video frames are
            scored independently.

        Returns:
          float32 logits `[B, h, w]` (`[B, T, h, w]` for video), one per patch.
        """
        if x.ndim not in (4, 5):
            raise ValueError(f"expected [B, H, W, C] or [B, T, H, W, C], got shape {x.shape}")
        lead = x.shape[:-3]
        h = x.reshape((-1, *x.shape[-3:]))
        h = nnx.leaky_relu(self.stem(h), negative_slope=0.2)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = nnx.leaky_relu(norm(conv(h)), negative_slope=0.2)
        logits = self.head(h)[..., 0].astype(jnp.float32)
        return logits.reshape((*lead, *logits.shape[1:]))


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Discriminator hinge loss `0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))`.

    The 0.5 follows taming / TiTok so GAN weights carry over from their configs.
    Logits may have any shape (e.g. `[B, h, w]`); fakes should already be
    stop-gradiented by the caller when only the discriminator is updated.
    """
    loss_real = jnp.mean(jax.nn.relu(1.0 - real_logits.astype(jnp.float32)))
    loss_fake = jnp.mean(jax.nn.relu(1.0 + fake_logits.astype(jnp.float32)))
    return 0.5 * (loss_real + loss_fake)


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
    """Generator hinge loss `-mean(fake_logits)`."""
    return -jnp.mean(fake_logits.astype(jnp.float32))


def gan_weight(step: jax.Array | int, start_step: int, weight: float) -> jax.Array:
    """`weight` from `start_step` on, 0 before; jit-safe for a traced int `step`.

    The generator's adversarial term is switched on late (TiTok: 20k or 200k
    steps) so the reconstruction is reasonable before the discriminator shapes it.
    """
    on = jnp.asarray(step) >= start_step
    return jnp.where(on, jnp.float32(weight), jnp.float32(0.0))


class LeCamStat(nnx.Variable):
    """A running statistic of the discriminator, not a trainable parameter.

    Being a plain `nnx.Variable` subclass (not `nnx.Param`), it is left out of
    `nnx.state(model, nnx.Param)` and so never reaches the optimizer.
    """


class LeCamEMA(nnx.Module):
    """LeCam regulariser (Tseng et al. 2021) with its EMA anchors.

    Keeps `ema_real` / `ema_fake`, exponential moving averages (decay 0.999 in
    TiTok) of the discriminator's mean logits on real and fake batches, both
    starting at 0 as in TiTok. The penalty

        mean(relu(real - ema_fake)^2) + mean(relu(ema_real - fake)^2)

    is added to the discriminator loss (TiTok weight 0.001). TiTok evaluates the
    loss with the EMAs from before the current batch, then updates them: call
    `loss` before `update` to match.

    `update` only mutates while training: `model.eval()` sets
    `use_running_average=True` (the attribute BatchNorm uses), which freezes it.
    """

    def __init__(self, decay: float = 0.999, *, use_running_average: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.use_running_average = use_running_average
        self.ema_real = LeCamStat(jnp.zeros((), jnp.float32))
        self.ema_fake = LeCamStat(jnp.zeros((), jnp.float32))

    def update(self, real_logits: jax.Array, fake_logits: jax.Array) -> None:
        """Moves the EMAs toward this batch's mean logits (no-op in eval mode)."""
        if self.use_running_average:
            return
        real = jax.lax.stop_gradient(jnp.mean(real_logits.astype(jnp.float32)))
        fake = jax.lax.stop_gradient(jnp.mean(fake_logits.astype(jnp.float32)))
        self.ema_real[...] = self.decay * self.ema_real[...] + (1.0 - self.decay) * real
        self.ema_fake[...] = self.decay * self.ema_fake[...] + (1.0 - self.decay) * fake

    def loss(self, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
        """The LeCam penalty for discriminator logits of any (matching) shape."""
        ema_real = jax.lax.stop_gradient(self.ema_real[...])
        ema_fake = jax.lax.stop_gradient(self.ema_fake[...])
        real = real_logits.astype(jnp.float32)
        fake = fake_logits.astype(jnp.float32)
        return jnp.mean(jnp.square(jax.nn.relu(real - ema_fake))) + jnp.mean(
            jnp.square(jax.nn.relu(ema_real - fake))
        )
