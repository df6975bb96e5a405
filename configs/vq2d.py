r"""VQ2D: a 2D grid VQ tokenizer (VQGAN / LlamaGen VQ-16 style), `(h, w)` tokens.

Train (LlamaGen's VQ-16 shape at 256 px: 16 x 16 tokens, 16384 x 8 codes;
`tiny` is the 32 px CPU demo, 8 x 8 tokens):

  python -m launch.train --config configs/vq2d.py:tiny --workdir outputs/vq2d_tiny
  python -m launch.train --config configs/vq2d.py:res=256,data=imagenet2012 \
      --workdir gs://bucket/vq16 --config.data.data_dir=/data/tfds

Variants (comma separated): `tiny`; `res=R`; `codes=V`; `data=<tfds name or
folder>`; `video=T` (frames, tokenized frame by frame into `(T, h, w)`).

`tiny` uses the patch-ViT backbone (patch 4, width 64, depth 2): on a 2-core
CPU its train step measured 0.39 s against 2.56 s for a small conv model
(with huge pages today, the demo's tokenizer stage runs its 1,800 steps in
3 min 17 s). It trains 1,800 steps: test PSNR 25.1 dB against 22.05 dB
after 600, which took the demo's FID from 41.6 to 23.7 (BENCHMARKS.md, "The
demo's step budget"). Its 128 codes (not 1024) give the
generator fewer synonyms to learn: with 1024 the corner token of a plain
background took 99 different codes over the test split (10 background
colours) and the demo's samples were scattered single-token fragments; with
128 (51 codes at that corner) test PSNR was 22.05 dB instead of 22.51 after
600 steps, and the samples became colour-coherent blobs (FID 41.6 instead of
44.5 under the `shapes` features; see BENCHMARKS.md). The full config
keeps LlamaGen's VQ-16 recipe: conv backbone, AdamW 1e-4, beta (0.9, 0.95),
weight decay 0.05, grad clip 1 (batch 128 there), L2 reconstruction,
perceptual and GAN terms enabled through `config.loss` when their weights
are available locally.
"""

import ml_collections

from visgen.config import base_config, parse_variant, section
from visgen.tasks.tokenizer import TokenizerLossConfig
from visgen.tokenizers.vq2d import VQ16


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(arg, dict(tiny=False, res=256, codes=0, data="", video=0))
    config = base_config("tokenizer")
    if v["tiny"]:
        res = 32
        tokenizer = dict(
            backbone="vit", patch_size=4, width=64, depth=2, heads=4,
            codebook_size=v["codes"] or 128, token_dim=8,
        )  # fmt: skip
        config.data.update(name=v["data"] or "shapes", image_size=res, batch_size=32)
        config.optim.update(lr=2e-3, warmup_steps=50, weight_decay=1e-4, end_lr_ratio=0.05)
        config.train.update(
            steps=1800, log_every=100, eval_every=1800, checkpoint_every=600, ema_decay=0.99,
            eval_examples=0,
        )  # fmt: skip
    else:
        res = v["res"]
        tokenizer = dict(backbone="conv", **VQ16, codebook_size=v["codes"] or 16384, token_dim=8)
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
    config.tokenizer = ml_collections.ConfigDict(
        dict(name="vq2d", image_size=res, l2_norm=True, commitment=0.25, **tokenizer)
    )
    config.loss = section(TokenizerLossConfig)
    return config
