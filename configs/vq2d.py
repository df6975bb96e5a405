r"""VQ2D: a 2D grid VQ tokenizer (VQGAN / LlamaGen VQ-16 style), `(h, w)` tokens.

Train (LlamaGen's VQ-16 shape at 256 px: 16 x 16 tokens, 16384 x 8 codes;
`tiny` is the 32 px CPU demo, 16 x 16 tokens):

  python -m launch.train --config configs/vq2d.py:tiny --workdir outputs/vq2d_tiny
  python -m launch.train --config configs/vq2d.py:res=256,data=imagenet2012 \
      --workdir gs://bucket/vq16 --config.data.data_dir=/data/tfds

Variants (comma separated): `tiny`; `res=R`; `codes=V`; `data=<tfds name or
folder>`; `video=T` (frames, tokenized frame by frame into `(T, h, w)`);
`latent=vq|vae` (the `tokenizer.quantizer` section, as in `configs/titok.py`:
`vq` codes, or a `gaussian` posterior whose continuous latents feed the
diffusion head, `configs/ar.py:tokenizer=vq2d,tiny,diffusion`).

`latent=vae` is a KL bottleneck of 16 channels (MAR's KL-16 shape) with
LDM's KL weight 1e-6; generators read the posterior mean. At `tiny` its
patches are 4 x 4 (an 8 x 8 grid: 64 tokens of 16 channels, 28.4 dB, and the
`shapes` classifier recognises 59% of its reconstructions), not the VQ's
2 x 2: a masked generator over 256 nearly-pixel tokens drew scattered tokens
with no shapes (docs/notes/2026-12-06-mar-tiny.md). Its latents are not
normalised here: the diffusion head's `scale` brings them to about unit
variance for generation.

The codebook is the nested section `tokenizer.quantizer` (a registered
quantizer's name and arguments, e.g. `--config.tokenizer.quantizer.codebook_size=256`);
`tokenizer.token_dim` is its code dimension.

`tiny` (the CPU demo's tokenizer) is the patch-ViT backbone cut to its
ends: 2 x 2 patches (a 16 x 16 grid), a linear patch embedding, LayerNorm
and a linear projection to the code space, and the mirror image to decode;
no transformer blocks (depth 0), so each token codes its own 2 x 2 pixels.
128 codes, batch 32, 1,500 steps: on a 2-core CPU it trains in ~40 s to test
PSNR 26.5 dB, and the `shapes` classifier recognises the main shape in 67.3%
of its reconstructions. The previous `tiny` (4 x 4 patches, two transformer
blocks each side, 1,800 steps, 3 min 17 s) reached 25.1 dB with only 34.7%,
as 4 x 4 patches coded by 128 codes blur the outlines that tell a circle
from a diamond; 4 x 4 patches with 1,024 codes and no blocks gave 25.6 dB
and 43.8% (BENCHMARKS.md, "A 2 x 2 patch tokenizer for the demo"). The 256
tokens per image are meant for a Token-Shuffle generator (`configs/ar.py`'s
`shuffle=2`: 64 positions of 2 x 2 tokens). 128 codes rather than 1,024
give the generator fewer synonyms to learn (measured with the earlier
backbone: with 1,024 the corner token of a plain background took 99
different codes over the test split, and the samples were scattered
fragments). A deviation from the paper's design, for the CPU budget.
The full config
keeps LlamaGen's VQ-16 recipe: conv backbone, AdamW 1e-4, beta (0.9, 0.95),
weight decay 0.05, grad clip 1 (batch 128 there), L2 reconstruction,
perceptual and GAN terms enabled through `config.loss` when their weights
are available locally.
"""

import ml_collections

from visgen.config import base_config, parse_variant, section
from visgen.tasks.tokenizer import TokenizerLossConfig
from visgen.tokenizers.vq2d import VQ16

LATENTS = ("vq", "vae")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(arg, dict(tiny=False, res=256, codes=0, data="", video=0, latent="vq"))
    if v["latent"] not in LATENTS:
        raise ValueError(f"latent must be one of {', '.join(LATENTS)}, got {v['latent']!r}")
    if v["latent"] == "vae" and v["codes"]:
        raise ValueError("codes=V sets a codebook: it applies to latent=vq, not latent=vae")
    config = base_config("tokenizer")
    if v["tiny"]:
        res = 32
        tokenizer = dict(backbone="vit", patch_size=2, width=64, depth=0, heads=4, token_dim=8)
        codebook_size = v["codes"] or 128
        config.data.update(name=v["data"] or "shapes", image_size=res, batch_size=32)
        config.optim.update(lr=2e-3, warmup_steps=50, weight_decay=1e-4, end_lr_ratio=0.05)
        config.train.update(
            steps=1500, log_every=100, eval_every=1500, checkpoint_every=500, ema_decay=0.99,
            eval_examples=0,
        )  # fmt: skip
    else:
        res = v["res"]
        tokenizer = dict(backbone="conv", **VQ16, token_dim=8)
        codebook_size = v["codes"] or 16384
        config.data.update(name=v["data"] or "imagenet2012", image_size=res, batch_size=128)
        config.optim.update(lr=1e-4, b2=0.95, weight_decay=0.05, warmup_steps=0, end_lr_ratio=1.0)
        config.train.update(
            steps=400_000, log_every=100, eval_every=10_000, checkpoint_every=5_000,
            eval_examples=10_000, ema_decay=0.9999,
        )  # fmt: skip
    if v["video"]:
        config.data.num_frames = v["video"]
        if config.data.name == "shapes":
            config.data.name = "shapes_video"
        tokenizer.update(num_frames=v["video"])
    if v["latent"] == "vq":
        quantizer = dict(name="vq", codebook_size=codebook_size, l2_norm=True, commitment=0.25)
    else:
        quantizer = dict(name="gaussian", kl_weight=1e-6)
        tokenizer.update(token_dim=16)
        if v["tiny"]:
            # 4 x 4 patches: an 8 x 8 grid of 16 channels (the generator's sequence is 64
            # tokens, as the demo's Token-Shuffle positions; docs/notes/2026-12-06-mar-tiny.md).
            tokenizer.update(patch_size=4)
    config.tokenizer = ml_collections.ConfigDict(
        dict(name="vq2d", image_size=res, quantizer=quantizer, **tokenizer)
    )
    config.loss = section(TokenizerLossConfig)
    return config
