r"""MAR: a masked random-order generator on a continuous tokenizer's latents.

Li et al. 2024, "Autoregressive Image Generation without Vector Quantization"
(`visgen.generators.mar`, sampled by `visgen.sampling.mar`). Train a
Gaussian-bottleneck tokenizer, then the generator on its latents, then sample
(`--num-iter` backbone passes; `--disa` DiSA's step annealing):

  python -m launch.train --config configs/vq2d.py:tiny,latent=vae --workdir outputs/vae_tiny
  python -m launch.train --config configs/mar.py:tiny --workdir outputs/mar_tiny \
      --config.tokenizer_workdir=outputs/vae_tiny
  python -m launch.sample --workdir outputs/mar_tiny --method mar --num-iter 16 \
      --disa linear:50:5 --num 64 --out outputs/mar_tiny/samples

Variants (comma separated): `tiny` (32 px `shapes`, on the 8 x 8 x 16 latents
of `configs/vq2d.py:tiny,latent=vae`); `size=B|L|H` (MAR-B/L/H: 768/12,
1024/16, 1280/20 blocks, 64 buffer tokens, diffusion heads 6x1024, 8x1280,
12x1536, on ImageNet 256 with a 16-channel KL latent); `data=<tfds name or
folder>`; `classes=C`.

`config.generator` is `name: mar` (`visgen.generators.GENERATORS`) with its
size, `buffer_tokens` (MAR: 64; `tiny`: 4), `cond_dropout` (0.1),
`mask_ratio_min` (0.7: the truncated normal's lower bound) and the diffusion
head's section `head` (`visgen.generators.diffusion_head`; `scale`: latents
are modelled as `scale * latent`, `TINY_LATENT_SCALE` from `configs/ar.py`
for `tiny`, MAR's 0.2325 for its KL-16 VAE at full size). `config.sample`:
temperature, guidance (MAR's `linear` schedule) and the head's
`diffusion_steps`, `disa`, `clip`.

Full sizes keep MAR's recipe where it fits this launcher: AdamW lr 8e-4
(MAR's blr 1e-4 x batch 2048 / 256), betas (0.9, 0.95), weight decay 0.02,
grad clip 3, EMA 0.9999, 800 epochs of ImageNet at batch 2048 with 100
warm-up epochs (500,000 and 62,500 steps). `tiny` is sized for minutes on a
2-core CPU, on the 8 x 8 x 16 latents of `configs/vq2d.py:tiny,latent=vae`:
width 96, 4 blocks, 4 buffer tokens, a 3 x 128 head (the backbone and head of
`configs/ar.py:tokenizer=vq2d,tiny,diffusion`, so the two backbones compare
at equal size), batch 16, lr 2e-3, grad clip 3, 2,000 steps; its sampling
defaults clamp timesteps to 950 (`clip`), as `configs/ar.py:...,diffusion`
does. docs/notes/2026-12-06-mar-tiny.md has what it reaches.
"""

import importlib.util
import os

import ml_collections

from visgen.config import base_config, parse_variant
from visgen.generators.mar import HEAD_SIZES, SIZES


def _ar_config():
    """`configs/ar.py` beside this file (the datasets' classes and the tiny latent scale)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ar.py")
    spec = importlib.util.spec_from_file_location("_visgen_ar_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_AR = _ar_config()
DATASET_CLASSES, TINY_LATENT_SCALE = _AR.DATASET_CLASSES, _AR.TINY_LATENT_SCALE

# MAR scales its KL-16 VAE's latents by 0.2325 (to about unit std).
MAR_KL16_SCALE = 0.2325
TINY_STEPS, TINY_BATCH = 2000, 16


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(arg, dict(tiny=False, size="B", data="", classes=0))
    if v["size"] not in SIZES or v["size"] == "tiny":
        sizes = ", ".join(s for s in SIZES if s != "tiny")
        raise ValueError(f"size must be one of {sizes} (or the variant tiny), got {v['size']!r}")
    size = "tiny" if v["tiny"] else v["size"]
    config = base_config("generator")
    config.tokenizer_workdir = ""
    config.tokenizer_step = -1
    config.tokenizer_fingerprint = ""
    if v["tiny"]:
        config.data.update(name=v["data"] or "shapes", image_size=32, batch_size=TINY_BATCH)
        config.optim.update(lr=2e-3, b2=0.95, weight_decay=0.02, warmup_steps=100)
        config.optim.update(end_lr_ratio=0.1, grad_clip=3.0)
        config.train.update(
            steps=TINY_STEPS, log_every=100, eval_every=TINY_STEPS,
            checkpoint_every=TINY_STEPS // 4, ema_decay=0.99, eval_examples=0,
        )  # fmt: skip
    else:
        config.data.update(name=v["data"] or "imagenet2012", image_size=256, batch_size=2048)
        config.optim.update(lr=8e-4, b2=0.95, weight_decay=0.02, warmup_steps=62_500)
        config.optim.update(end_lr_ratio=1.0, grad_clip=3.0)
        config.train.update(
            steps=500_000, log_every=100, eval_every=10_000, checkpoint_every=5_000,
            eval_examples=10_000, ema_decay=0.9999,
        )  # fmt: skip
    classes = v["classes"] or DATASET_CLASSES.get(config.data.name, 0)
    if not classes:
        raise ValueError(
            f"number of classes of dataset {config.data.name!r} unknown: give the variant classes=C"
        )
    width, depth, heads = SIZES[size]
    head_depth, head_width = HEAD_SIZES[size]
    config.generator = ml_collections.ConfigDict(
        dict(
            name="mar", width=width, depth=depth, heads=heads, num_classes=classes,
            buffer_tokens=4 if v["tiny"] else 64, cond_dropout=0.1, mask_ratio_min=0.7,
        )
    )  # fmt: skip
    config.generator.head = ml_collections.ConfigDict(
        dict(
            name="diffusion", depth=head_depth, mlp_width=head_width, diffusion_batch_mul=4,
            learn_sigma=True, scale=TINY_LATENT_SCALE if v["tiny"] else MAR_KL16_SCALE,
        )
    )  # fmt: skip
    # MAR: linear CFG (MAR-B's 2.9), 100 diffusion steps; DiSA off (`disa`, e.g. linear:50:5).
    config.sample = ml_collections.ConfigDict(
        dict(
            temperature=1.0, cfg_scale=3.0 if v["tiny"] else 2.9, cfg_schedule="linear",
            diffusion_steps=100, disa="", clip=950 if v["tiny"] else 0,
        )
    )  # fmt: skip
    config.preview_per_class = 8
    return config
