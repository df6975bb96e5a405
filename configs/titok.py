r"""TiTok: a 1D tokenizer, K latent tokens read out of a ViT (Yu et al. 2024).

Train (paper sizes at 256 px: S-128, B-64, L-32; `tiny` is the 32 px CPU demo):

  python -m launch.train --config configs/titok.py:tiny --workdir outputs/titok_tiny
  python -m launch.train --config configs/titok.py:size=S,tokens=128,res=256,data=imagenet2012 \
      --workdir gs://bucket/titok_s128 --config.data.data_dir=/data/tfds

Two-stage training (the paper's main recipe): train a 2D grid tokenizer whose
grid equals TiTok's patch grid, then TiTok on its codes:

  python -m launch.train --config configs/vq2d.py:tiny --workdir outputs/vq2d_tiny
  python -m launch.train --config configs/titok.py:tiny,two_stage --workdir outputs/titok_tiny \
      --config.tokenizer.proxy_workdir=outputs/vq2d_tiny

Variants (comma separated): `tiny`; `size=S|B|L`; `tokens=K`; `res=R`;
`latent=vq|vae` (the `tokenizer.quantizer` section: `vq` codes or a `gaussian`
posterior); `data=<tfds name or folder>`; `video=T` (frames; tubelet 2);
`two_stage` (proxy-code cross-entropy only; set `tokenizer.proxy_workdir`).

The bottleneck is the nested section `tokenizer.quantizer`: a registered
quantizer's name and its arguments (`--config.tokenizer.quantizer.codebook_size=64`);
`tokenizer.token_dim` is its latent width. A chain is a config too, e.g. a
Gaussian latent then a codebook:
`dict(name="chain", stages=[dict(name="gaussian"), dict(name="vq", codebook_size=4096)])`.

`tiny` is tuned for fast convergence on a 2-core CPU, not for quality: width
64, depth 2, patch 4, 32 tokens, 1024 codes, batch 32, lr 2e-3, 2,400 steps,
and two changes that TiTok does not have: QK-norm and a block init std of 0.2
(TiTok: 0.02). Without both, this small model sits on a mean-colour plateau
for thousands of steps; with them it leaves it between steps 800 and 1,200 and
reaches ~22.8 dB (BENCHMARKS.md, "QK-norm and a larger block init"). The paper sizes keep the
official recipe's codebook (4096 x 12, L2-normalised), patch 16, AdamW 1e-4,
beta2 0.99, weight decay 1e-4, grad clip 1.0, EMA 0.999 (batch 256 there).
"""

import ml_collections

from visgen.config import base_config, parse_variant, section
from visgen.tasks.tokenizer import TokenizerLossConfig
from visgen.tokenizers.titok import SIZES

PAPER_TOKENS = {"S": 128, "B": 64, "L": 32}
LATENTS = ("vq", "vae")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = dict(
        tiny=False, size="S", tokens=0, res=256, latent="vq", data="", video=0, two_stage=False
    )
    v = parse_variant(arg, variants)
    if v["latent"] not in LATENTS:
        raise ValueError(f"latent must be one of {', '.join(LATENTS)}, got {v['latent']!r}")
    config = base_config("tokenizer")
    if v["tiny"]:
        res = 32
        tokenizer = dict(
            image_size=res, patch_size=4, width=64, depth=2, heads=4,
            num_tokens=v["tokens"] or 32, token_dim=12, qk_norm=True, init_std=0.2,
        )  # fmt: skip
        codebook_size = 1024
        config.data.update(name=v["data"] or "shapes", image_size=res, batch_size=32)
        config.optim.update(lr=2e-3, warmup_steps=50, weight_decay=1e-4, end_lr_ratio=0.05)
        config.train.update(
            steps=2400, log_every=100, eval_every=600, checkpoint_every=600, ema_decay=0.99,
            eval_examples=0,
        )  # fmt: skip
    else:
        res = v["res"]
        width, depth, heads = SIZES[v["size"]]
        tokenizer = dict(
            image_size=res, patch_size=16, width=width, depth=depth, heads=heads,
            num_tokens=v["tokens"] or PAPER_TOKENS[v["size"]], token_dim=12,
            qk_norm=False, init_std=0.02,
        )  # fmt: skip
        codebook_size = 4096
        config.data.update(name=v["data"] or "imagenet2012", image_size=res, batch_size=256)
        config.optim.update(lr=1e-4, warmup_steps=10_000, end_lr_ratio=0.1)
        config.train.update(
            steps=1_000_000, log_every=100, eval_every=10_000, checkpoint_every=5_000,
            eval_examples=10_000, ema_decay=0.999,
        )  # fmt: skip
    if v["video"]:
        config.data.num_frames = v["video"]
        if config.data.name == "shapes":
            config.data.name = "shapes_video"
        tokenizer.update(num_frames=v["video"], tubelet=2)
    if v["latent"] == "vq":
        quantizer = dict(name="vq", codebook_size=codebook_size, l2_norm=True, commitment=0.25)
    else:
        quantizer = dict(name="gaussian", kl_weight=1e-6)
    config.tokenizer = ml_collections.ConfigDict(
        dict(name="titok", quantizer=quantizer, proxy_workdir="", **tokenizer)
    )
    config.loss = section(TokenizerLossConfig)
    if v["two_stage"]:
        # Stage 1: proxy-code cross-entropy and the quantizer loss only. TiTok's
        # training_step owns that objective (no pixel regression); the weight
        # is zeroed so the config reads as what is optimised.
        config.loss.recon_weight = 0.0
    return config
