"""Tokenizer training: the tokenizer's own loss terms, plus pixel losses where it asks.

The task asks the tokenizer for its training output (`Tokenizer.training_step`:
reconstruction `x_hat`, weighted loss terms, statistics). A pixel-regression
tokenizer (`regress_pixels`) is trained on (per step, images or videos `x` in [-1, 1])

    L = w_rec * rec(x_hat, x) + its losses (quantizer / KL)
        + w_lpips * LPIPS(x_hat, x)                         (if a weights file is given)
        + gan_weight(step) * hinge_G(D(x_hat))              (D's params held fixed)
        + [step >= gan_start] * (hinge_D(D(x), D(sg(x_hat))) + w_lecam * LeCam)

and a tokenizer that owns its objective (a flow decoder, TiTok's two-stage
proxy-code cross-entropy) on its losses alone: `rec` and PSNR of its `x_hat`,
if it returns one, are logged but not optimised, and GAN or perceptual weights
are refused. A tokenizer whose spec needs text gets the batch's `"text"`
(captions `[B, L, D]`, encoded on the host by the config's `text_encoder`
with `visgen.text.encode_batch_captions`, as the generator task does) in
training, evaluation and previews.

The generator and discriminator terms are differentiated in one backward pass
with stop-gradients separating them, so one optimizer updates both at the same
learning rate in the same step. This simplifies the official two-optimizer,
alternating schedule (same learning rates as TiTok's decoder fine-tuning).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.losses import (
    LeCamEMA,
    PatchDiscriminator,
    gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    load_lpips,
    reconstruction_loss,
)
from visgen.metrics import codebook, image
from visgen.tasks import TASKS
from visgen.text import TextEncoder, config_text_encoder, encode_batch_captions
from visgen.tokenizers import Tokenizer, TokenizerOutput, make_tokenizer
from visgen.train.task import Batch


@dataclasses.dataclass(frozen=True)
class TokenizerLossConfig:
    """Typed loss settings (`config.loss`).

    Attributes:
      recon: `l1`, `l2` or `l1+l2`; recon_weight its weight (pixel-regression
        tokenizers; one that owns its objective only logs `recon_loss`).
      perceptual_weight: LPIPS weight; needs `perceptual_weights` (a local `.npz`,
        see `visgen.losses.perceptual`).
      gan_weight: generator hinge weight from step `gan_start` (0 = no GAN).
      lecam_weight, lecam_decay: LeCam regulariser of the discriminator.
      disc_channels, disc_layers: PatchGAN width and depth.
      revive_every: dead-code revival period in steps (0 = off; only for
        tokenizers whose quantizer is `revivable`, e.g. VQ).
    """

    recon: str = "l2"
    recon_weight: float = 1.0
    perceptual_weight: float = 0.0
    perceptual_weights: str = ""
    gan_weight: float = 0.0
    gan_start: int = 0
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999
    disc_channels: int = 64
    disc_layers: int = 3
    revive_every: int = 10


class TokenizerModel(nnx.Module):
    """The tokenizer plus what trains it: a discriminator, LeCam EMAs, a frozen LPIPS."""

    def __init__(self, tokenizer, discriminator=None, lecam=None, perceptual=None):
        self.tokenizer = tokenizer
        self.discriminator = discriminator
        self.lecam = lecam
        self.perceptual = perceptual


def _fold_time(x: jax.Array) -> jax.Array:
    """`[B, T, H, W, C]` -> `[B*T, H, W, C]`; images pass through."""
    return x.reshape((-1, *x.shape[-3:])) if x.ndim == 5 else x


def _text(tokenizer: Tokenizer, batch: Batch) -> jax.Array | None:
    """The batch's encoded captions `"text"` `[B, L, D]` if the tokenizer's spec
    needs text, else None."""
    if not tokenizer.spec.needs_text:
        return None
    if "text" not in batch:
        raise ValueError(
            f"the tokenizer is text-conditioned ({tokenizer.spec.describe()}) but the batch "
            "has no 'text' (encoded captions): read captions (data.with_captions) and "
            "encode them with a visgen.text encoder"
        )
    return batch["text"]


@TASKS.register("tokenizer")
class TokenizerTask:
    """Trains any tokenizer in `visgen.tokenizers` on images or videos.

    Args:
      tokenizer: keyword arguments of `make_tokenizer` (`name` included; a
        two-stage TiTok's `proxy_workdir`).
      loss: pixel-loss settings.
      dtype: compute dtype.
      text_encoder: encodes the batches' captions for a text-conditioned tokenizer.
    """

    def __init__(
        self,
        tokenizer: dict[str, Any],
        loss: TokenizerLossConfig,
        dtype: str,
        text_encoder: TextEncoder | None = None,
    ):
        self.tokenizer_args = dict(tokenizer)
        self.text_encoder = text_encoder
        # A two-stage TiTok's proxy: a trained tokenizer workdir, embedded frozen.
        takes_proxy = "proxy_workdir" in self.tokenizer_args
        proxy_workdir = self.tokenizer_args.pop("proxy_workdir", "")
        self.proxy = None
        if proxy_workdir:
            # Imported here: restoring pulls in checkpointing, and `restore` imports this package.
            from visgen.tasks.restore import load_frozen

            self.proxy = load_frozen(proxy_workdir)
        elif takes_proxy and not (loss.recon_weight or loss.perceptual_weight or loss.gan_weight):
            # Nothing would train the decoder: a two-stage config without its proxy. (A
            # tokenizer that owns its objective, such as FlexTok's flow decoder, takes no
            # proxy and needs no pixel loss.)
            raise ValueError(
                "the tokenizer has no pixel loss (loss.recon_weight, perceptual_weight and "
                "gan_weight are 0) and no proxy: a two_stage TiTok needs "
                "--config.tokenizer.proxy_workdir=DIR (a trained vq2d workdir)"
            )
        self.loss_cfg = loss
        self.dtype = jnp.dtype(dtype)

    @classmethod
    def from_config(cls, config) -> "TokenizerTask":
        return cls(
            tokenizer=config.tokenizer.to_dict(),
            loss=TokenizerLossConfig(**config.loss),
            dtype=config.dtype,
            text_encoder=config_text_encoder(config),
        )

    UNPINNED: dict[str, Any] = {}

    def pins(self) -> dict[str, Any]:
        return {}

    def prepare_data(self, data_cfg) -> None:
        if data_cfg.token_cache:
            raise ValueError(
                f"data.token_cache={data_cfg.token_cache!r} is for generator training; "
                "a tokenizer trains on images (leave it empty)"
            )

    def host_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """With a text encoder (`config.text_encoder`, for text-conditioned tokenizers): adds
        `"text"` `[b, L, D]`, the batch's captions encoded; otherwise the batch as is."""
        if self.text_encoder is None:
            return batch
        return encode_batch_captions(batch, self.text_encoder)

    def build(self, rngs: nnx.Rngs) -> TokenizerModel:
        cfg = self.loss_cfg
        args = dict(self.tokenizer_args)
        if self.proxy is not None:
            args["proxy"] = self.proxy.build().tokenizer
        tokenizer = make_tokenizer(**args, dtype=self.dtype, rngs=rngs)
        disc = lecam = perceptual = None
        if cfg.gan_weight > 0:
            disc = PatchDiscriminator(
                3, cfg.disc_channels, cfg.disc_layers, dtype=self.dtype, rngs=rngs
            )
            lecam = LeCamEMA(cfg.lecam_decay)
        if cfg.perceptual_weight > 0:
            perceptual = load_lpips(cfg.perceptual_weights, dtype=self.dtype)
        return TokenizerModel(tokenizer, disc, lecam, perceptual)

    def loss(self, model: TokenizerModel, batch: Batch, rng: jax.Array, step: jax.Array):
        cfg = self.loss_cfg
        x = batch["image"]
        text = _text(model.tokenizer, batch)
        out = model.tokenizer.training_step(x, text=text, rng=rng)
        aux = {"x": x, "text": text, "step": step}
        if not out.regress_pixels:
            loss, metrics = self._own_objective(model, x, out)
            return loss, metrics, aux
        recon = out.recon
        rec = reconstruction_loss(recon, x, cfg.recon)
        loss = cfg.recon_weight * rec + sum(out.losses.values())
        metrics = {"recon_loss": rec, **out.losses, **out.stats}
        if model.perceptual is not None:
            p = jnp.mean(model.perceptual(recon, x))
            loss += cfg.perceptual_weight * p
            metrics["perceptual_loss"] = p
        if model.discriminator is not None:
            loss += self._gan_terms(model, x, recon, step, metrics)
        metrics["psnr"] = jnp.mean(image.psnr(image.to_255(recon), image.to_255(x)))
        return loss, metrics, aux

    def _own_objective(self, model: TokenizerModel, x, out: TokenizerOutput):
        """(loss, metrics) of a tokenizer that owns its objective: its losses alone;
        the reconstruction loss and PSNR of its `recon` (if any) are only logged."""
        if model.perceptual is not None or model.discriminator is not None:
            raise ValueError(
                "the tokenizer trains with its own objective (its training_step asks for no "
                "pixel regression), so loss.perceptual_weight and loss.gan_weight must be 0"
            )
        loss = sum(out.losses.values())
        metrics = {**out.losses, **out.stats}
        if out.recon is not None:
            metrics["recon_loss"] = reconstruction_loss(out.recon, x, self.loss_cfg.recon)
            metrics["psnr"] = jnp.mean(image.psnr(image.to_255(out.recon), image.to_255(x)))
        return loss, metrics

    def _gan_terms(self, model: TokenizerModel, x, recon, step, metrics) -> jax.Array:
        cfg = self.loss_cfg
        graphdef, d_state = nnx.split(model.discriminator)
        fixed_d = nnx.merge(graphdef, jax.lax.stop_gradient(d_state))
        g_loss = hinge_g_loss(fixed_d(recon))
        real, fake = model.discriminator(x), model.discriminator(jax.lax.stop_gradient(recon))
        d_loss = hinge_d_loss(real, fake) + cfg.lecam_weight * model.lecam.loss(real, fake)
        active = (step >= cfg.gan_start).astype(jnp.float32)
        model.lecam.update(real, fake)
        metrics.update(gan_g_loss=g_loss, gan_d_loss=d_loss)
        return gan_weight(step, cfg.gan_start, cfg.gan_weight) * g_loss + active * d_loss

    def after_update(self, model: TokenizerModel, aux, rng: jax.Array) -> None:
        every = self.loss_cfg.revive_every
        if every <= 0 or not model.tokenizer.revivable:
            return

        def revive(m):
            m.tokenizer.revive(aux["x"], text=aux["text"], rng=rng)

        # Revival costs an encoder forward pass, so it runs every `revive_every` steps.
        nnx.cond(aux["step"] % every == every - 1, revive, lambda m: None, model)

    def eval_batch(self, model: TokenizerModel, batch: Batch) -> dict[str, jax.Array]:
        x = batch["image"]
        mask = batch["mask"]
        recon, enc = model.tokenizer(x, text=_text(model.tokenizer, batch), train=False)
        frames = x.shape[1] if x.ndim == 5 else 1
        fmask = jnp.repeat(mask, frames).astype(jnp.float32)
        ref, rec = image.to_255(_fold_time(x)), image.to_255(_fold_time(recon))
        mean_colour = jnp.broadcast_to(
            jnp.round(jnp.mean(ref, axis=(1, 2), keepdims=True)), ref.shape
        )
        sums = {
            "frames": jnp.sum(fmask),
            "pixels": jnp.sum(fmask) * np.prod(ref.shape[1:]),
            "squared_error": jnp.sum(fmask * image.squared_error(rec, ref)),
            "mean_colour_squared_error": jnp.sum(fmask * image.squared_error(mean_colour, ref)),
            "psnr_sum": jnp.sum(fmask * image.psnr(rec, ref)),
            "ssim_sum": jnp.sum(fmask * image.ssim(rec, ref)),
        }
        if enc.tokens is not None:
            spec = model.tokenizer.spec
            sums["code_histogram"] = codebook.code_histogram(enc.tokens, spec.vocab_size, mask)
        return sums

    def eval_summary(self, sums: dict[str, Any]) -> dict[str, float]:
        frames = float(sums["frames"])
        out = {
            "psnr": float(image.psnr_from_mse(sums["squared_error"] / sums["pixels"])),
            "psnr_per_image": float(sums["psnr_sum"]) / frames,
            "ssim": float(sums["ssim_sum"]) / frames,
            "mean_colour_psnr": float(
                image.psnr_from_mse(sums["mean_colour_squared_error"] / sums["pixels"])
            ),
            "frames": frames,  # images, or video frames (clips x T)
        }
        if "code_histogram" in sums:
            usage, perplexity = codebook.usage_and_perplexity(sums["code_histogram"])
            out.update(codebook_usage=usage, perplexity=perplexity)
        return out

    def preview(self, model: TokenizerModel, batch: Batch, max_columns: int = 16) -> jax.Array:
        """Originals above reconstructions: `[2, N, H, W, 3]` (videos: one row pair per clip)."""
        x = batch["image"]
        recon, _ = model.tokenizer(x, text=_text(model.tokenizer, batch), train=False)
        if x.ndim == 5:
            n = min(4, x.shape[0])
            pairs = jnp.stack([x[:n], recon[:n]], axis=1)  # [n, 2, T, H, W, 3]
            return pairs.reshape((2 * n, *x.shape[1:]))
        n = min(max_columns, x.shape[0])
        return jnp.stack([x[:n], jnp.clip(recon[:n], -1.0, 1.0)])
