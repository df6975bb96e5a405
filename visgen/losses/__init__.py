"""Tokenizer training losses: pixel reconstruction, LPIPS perceptual, GAN.

The TiTok recipe (Yu et al. 2024) combines an L2 `reconstruction_loss`, a
perceptual term (`LPIPS`, Zhang et al. 2018, weights from a local `.npz`), a
hinge GAN with a `PatchDiscriminator` switched on by `gan_weight`, and LeCam
regularisation (`LeCamEMA`, Tseng et al. 2021) on the discriminator.
"""

from visgen.losses.gan import (
    LeCamEMA,
    LeCamStat,
    PatchDiscriminator,
    gan_weight,
    hinge_d_loss,
    hinge_g_loss,
)
from visgen.losses.perceptual import LPIPS, load_lpips, lpips_npz_keys
from visgen.losses.reconstruction import RECONSTRUCTION_KINDS, reconstruction_loss
from visgen.nn.frozen import Frozen

__all__ = [
    "LPIPS",
    "RECONSTRUCTION_KINDS",
    "Frozen",
    "LeCamEMA",
    "LeCamStat",
    "PatchDiscriminator",
    "gan_weight",
    "hinge_d_loss",
    "hinge_g_loss",
    "load_lpips",
    "lpips_npz_keys",
    "reconstruction_loss",
]
