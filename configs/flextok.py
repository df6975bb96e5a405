r"""FlexTok: a 1D tokenizer whose every prefix decodes (Bachmann et al. 2025).

Train (`tiny` is the 32 px CPU model; the paper's d12-d12 and d18-d18 at 256 px):

  python -m launch.train --config configs/flextok.py:tiny --workdir outputs/flextok_tiny
  python -m launch.train --config configs/flextok.py:size=d18,data=imagenet2012 \
      --workdir gs://bucket/flextok_d18 --config.data.data_dir=/data/tfds

Evaluate a prefix of k tokens, and the per-k claim script:

  python -m evals.recon --workdir outputs/flextok_tiny --num-tokens 4
  python -m bench.flextok_prefix --workdir outputs/flextok_tiny --out outputs/flextok_prefix

Variants (comma separated): `tiny`; `size=d12|d18` (encoder-decoder depth, width
64 * depth, FlexTok's rule); `registers=K`; `res=R`; `keep=uniform|pow2` (the
nested-dropout distribution of kept registers); `data=<tfds name or folder>`;
`repa=<FeatureNet .npz or shipped name>|none` (REPA's frozen encoder,
`visgen.tokenizers.repa`; default `shapes_repa` for `tiny` on `shapes`, none
otherwise: the paper's DINOv2-L is not available offline).

The objective is the tokenizer's own (rectified flow, `FlexTok.training_step`),
so the task adds no pixel loss (GAN and perceptual weights must stay 0).

The paper sizes patch pixels (16 x 16 at 256 px, the same 256 patches as the
paper's 2 x 2 patches of an f8 VAE latent) because this tree has no frozen
SDXL-style VAE to train on; that is the main simplification (see the module
docstring of `visgen/tokenizers/flextok.py` for the rest: REPA only against a local feature
net, no APG).

`tiny` is sized for a 2-core CPU, not for quality (1,000 steps of batch 32, the
demo's; the per-k claim runs use 3,000; docs/results.md#flextok has what they
reach: quality rising with k only with REPA, and no class in any k's
reconstructions at this budget): 4 x 4 pixel patches (64),
32 registers, width 96, depth 2 + 3, FSQ levels `[8, 5, 5, 5]` (1,000 codes, so
a tiny AR generator's head stays small; the paper's `[8, 8, 8, 5, 5, 5]` is
64,000), power-of-two nested dropout, 12 Euler steps to decode. Its
hyperparameters depart from the paper's to leave the plateau on which a tiny
transformer autoencoder's tokens hold only the background colour
(docs/notes/2026-12-06-flextok-tiny.md): block init std 0.2 (TiTok-tiny's
fix; the register head keeps 0.02 so FSQ does not saturate), lr 2e-3,
logit-normal times with mean 1 (more training at high noise, where only the
registers tell the decoder the image), FSQ `drop_quant_p=0.5`; REPA at decoder
block 1 with weight 0.5 against `evals/weights/shapes_repa.npz`.
"""

import ml_collections

from visgen.config import base_config, parse_variant, section
from visgen.tasks.tokenizer import TokenizerLossConfig

# The paper's sizes as (depth, heads); width is 64 * depth (d12-d12, d18-d18).
SIZES = {"d12": (12, 12), "d18": (18, 18)}
KEEPS = ("uniform", "pow2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(
        arg, dict(tiny=False, size="d12", registers=0, res=256, keep="", data="", repa="")
    )
    if v["size"] not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {v['size']!r}")
    if v["keep"] and v["keep"] not in KEEPS:
        raise ValueError(f"keep must be one of {', '.join(KEEPS)}, got {v['keep']!r}")
    config = base_config("tokenizer")
    if v["tiny"]:
        res = 32
        tokenizer = dict(
            image_size=res, patch_size=4, width=96, depth=2, decoder_depth=3, heads=4,
            num_registers=v["registers"] or 32, token_dim=4,
            quantizer=dict(name="fsq", levels=(8, 5, 5, 5), drop_quant_p=0.5),
            nested_dropout=v["keep"] or "pow2", decode_steps=12, init_std=0.2,
            time_mean=1.0, time_std=1.0, cfg_dropout=0.1, pos_embed="sincos", head_init_std=0.02,
        )  # fmt: skip
        config.data.update(name=v["data"] or "shapes", image_size=res, batch_size=32)
        config.optim.update(lr=2e-3, warmup_steps=100, weight_decay=1e-4, end_lr_ratio=0.05)
        config.train.update(
            steps=1000, log_every=100, eval_every=500, checkpoint_every=500, ema_decay=0.99,
            eval_examples=256,
        )  # fmt: skip
    else:
        res = v["res"]
        depth, heads = SIZES[v["size"]]
        tokenizer = dict(
            image_size=res, patch_size=16, width=64 * depth, depth=depth, decoder_depth=depth,
            heads=heads, num_registers=v["registers"] or 256, token_dim=6,
            quantizer=dict(name="fsq", levels=(8, 8, 8, 5, 5, 5)),
            nested_dropout=v["keep"] or "uniform", decode_steps=25, init_std=0.02,
        )  # fmt: skip
        config.data.update(name=v["data"] or "imagenet2012", image_size=res, batch_size=256)
        config.optim.update(lr=1e-4, warmup_steps=10_000, end_lr_ratio=0.1)
        config.train.update(
            steps=1_000_000, log_every=100, eval_every=10_000, checkpoint_every=5_000,
            eval_examples=10_000, ema_decay=0.9999,
        )  # fmt: skip
    # REPA (the paper's, against DINOv2-L) against a local feature net: on by default only
    # where one exists, the tiny model on `shapes`; `repa=none` turns it off.
    repa = v["repa"] or ("shapes_repa" if v["tiny"] and config.data.name == "shapes" else "")
    tokenizer.update(
        repa_features="" if repa == "none" else repa, repa_layer=1 if v["tiny"] else 4,
        repa_weight=0.5,
    )  # fmt: skip
    config.tokenizer = ml_collections.ConfigDict(dict(name="flextok", **tokenizer))
    # The rectified-flow loss is FlexTok's own (`regress_pixels=False`): the task
    # applies no pixel loss whatever `recon_weight` says, so it keeps its default.
    config.loss = section(TokenizerLossConfig, revive_every=0)
    return config
