r"""AR generator (LlamaGen-style) on the tokens of a trained tokenizer.

Train (first a tokenizer, e.g. `configs/titok.py:tiny`, then the generator on
its tokens; `tiny` is the 32 px CPU demo, `size=B|L|XL` LlamaGen's GPT sizes):

  python -m launch.train --config configs/ar.py:tokenizer=titok,tiny --workdir outputs/ar_tiny \
      --config.tokenizer_workdir=outputs/titok_tiny
  python -m launch.sample --workdir outputs/ar_tiny --num 64 --cfg 4 --out outputs/ar_tiny/samples

Token-Shuffle (fuse each 2 x 2 window of a grid tokenizer's tokens into one
position; needs a 2D/3D token grid such as vq2d's):

  python -m launch.train --config configs/ar.py:tokenizer=vq2d,tiny,shuffle=2 \
      --workdir outputs/ar_shuffle --config.tokenizer_workdir=outputs/vq2d_tiny

Continuous tokens with MAR's diffusion head (`diffusion`: a Gaussian-bottleneck
grid tokenizer's latents, each drawn by a small denoiser; DiSA by a flag):

  python -m launch.train --config configs/vq2d.py:tiny,latent=vae --workdir outputs/vae_tiny
  python -m launch.train --config configs/ar.py:tokenizer=vq2d,tiny,diffusion \
      --workdir outputs/ar_diffusion --config.tokenizer_workdir=outputs/vae_tiny
  python -m launch.sample --workdir outputs/ar_diffusion --num 16 --disa linear:50:5 \
      --out outputs/ar_diffusion/samples

Text-conditional (`text`: trains on the dataset's captions, then samples a
prompt):

  python -m launch.train --config configs/ar.py:tokenizer=titok,tiny,text \
      --workdir outputs/ar_text --config.tokenizer_workdir=outputs/titok_tiny
  python -m launch.sample --workdir outputs/ar_text --num 16 --cfg 4 \
      --prompt "a large red circle in the centre, on a black background" \
      --out outputs/ar_text/samples

Variants (comma separated): `tiny`; `tokenizer=titok|vq2d|flextok` (which tokenizer
family the data settings follow; the weights come from
`config.tokenizer_workdir`); `size=B|L|XL`; `data=<tfds name or folder>`;
`classes=C` (number of classes; default from the dataset); `shuffle=S` (the
Token-Shuffle window: `generator.head` becomes `token_shuffle` with
`window=S`); `causal` (with `shuffle=S`: a causal window head predicts a
window's tokens one after another from the window's one pass,
`generator.head.causal`; not in the paper); `diffusion` (continuous latents:
`generator.head` becomes `diffusion`, MAR's denoiser, on a tokenizer with a
`gaussian` bottleneck); `text` (condition on captions instead of classes).

`config.generator.head` names the head (`visgen.generators.HEADS`:
`categorical`, `token_shuffle`, `diffusion`) and holds its arguments;
`config.sample` holds the sampling defaults: the shared ones (temperature,
`cfg_scale`, `cfg_schedule`) and the head's own (`top_k`, `top_p`, and for
`token_shuffle` `coupled`: one shared Gumbel vector per window; for
`diffusion` `diffusion_steps`, `disa`, a DiSA schedule such as
`linear:50:5`, empty for none, and `clip`, the timestep clamp, 0 for the
sampler's own).

`text` adds `config.text_encoder` (a `visgen.text` encoder: `name` and its
arguments; `random_words` is a frozen random-word-embedding stand-in for a
pretrained encoder such as LlamaGen's FLAN-T5-XL), turns on
`data.with_captions` and gives the generator no classes: its `text_dim` and
`cls_token_num` (the prefix length) are the encoder's `dim` and `length`,
set by the task, so `--config.text_encoder.length=L` changes both. `length`
defaults to a bound on the dataset's caption words (a longer caption is an
error unless `text_encoder.truncate`). Token caches store no captions, so
`data.token_cache` is refused with `text`.

`config.sample.cfg_schedule` is Token-Shuffle's `half-linear` with
`shuffle=S`, else LlamaGen's `constant`.

The full sizes keep LlamaGen's recipe: AdamW 1e-4, beta (0.9, 0.95), weight
decay 0.05, grad clip 1, batch 256, dropout 0.1 (residual, token and class),
constant CFG 4. `tiny` (width 96, depth 4, 4 heads, batch 32, lr 2e-3, 1,200
steps, no residual or token dropout) is sized to train in minutes on a 2-core
CPU: more steps of a narrower model beat fewer of a wider one there.
`tiny,shuffle=2,causal` is the demo's generator, on the 16 x 16 tokens of
`configs/vq2d.py:tiny`: batch 8 (the step is compute-bound, so a smaller batch
buys more updates in the same time), 7,200 steps, a causal window head, and
top-k 5; `tiny,shuffle=2` (the paper's independent window draws) samples with
top-k 3 and coupled windows (`sample.coupled`: a window's four tokens share
one Gumbel vector; not in the paper). The measurements behind these choices
are on docs/results.md (the demo generator's table and its notes).
"""

import ml_collections

from visgen.config import base_config, parse_variant
from visgen.generators.ar import SIZES

# Batch and train steps of `tiny,shuffle=S` (the demo's generator adds `causal`).
TINY_SHUFFLE_BATCH, TINY_SHUFFLE_STEPS = 8, 7200
DATASET_CLASSES = {"shapes": 5, "shapes_video": 5, "digits": 10, "imagenet2012": 1000}
# Text slots for a dataset's captions (shapes: at most 29 words; with motion 41).
CAPTION_WORDS = {"shapes": 32, "shapes_video": 48}
# The diffusion head's denoiser at full size (MAR-B: 6 blocks of width 1024).
MAR_B_HEAD = dict(depth=6, mlp_width=1024)
# `diffusion`: latents are modelled as `scale * latent` (MAR: 0.2325 for its KL-16 VAE), one
# factor per tokenizer config, 1 / (the std of its latents). `configs/vq2d.py:tiny,latent=vae`
# (8 x 8 x 16) trained 1,500 steps on `shapes`: test latents' std 0.5115, measured by
# `python -m bench.disa_claim latent-std --tokenizer WORKDIR` (docs/results.md, MAR/DiSA).
# At full size, set `generator.head.scale` for the tokenizer used.
TINY_LATENT_SCALE = 1.955


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    defaults = dict(tiny=False, tokenizer="titok", size="B", data="", classes=0, shuffle=1)
    v = parse_variant(arg, dict(defaults, text=False, causal=False, diffusion=False))
    if v["diffusion"] and v["shuffle"] > 1:
        raise ValueError("the variants diffusion and shuffle=S exclude each other")
    if v["causal"] and v["shuffle"] < 2:
        raise ValueError("the variant causal orders a window's tokens: it needs shuffle=S > 1")
    if v["tokenizer"] not in ("titok", "vq2d", "flextok"):
        raise ValueError(f"tokenizer must be titok, vq2d or flextok, got {v['tokenizer']!r}")
    config = base_config("generator")
    config.tokenizer_workdir = ""
    # The tokenizer checkpoint and weights the generator trains on: resolved (latest step)
    # and recorded in the workdir's config.json on first training; sampling, resuming and
    # evaluation use exactly that checkpoint and refuse changed weights.
    config.tokenizer_step = -1
    config.tokenizer_fingerprint = ""
    if v["tiny"]:
        width, depth, heads = SIZES["tiny"]
        batch = TINY_SHUFFLE_BATCH if v["shuffle"] > 1 else 32
        config.data.update(name=v["data"] or "shapes", image_size=32, batch_size=batch)
        config.optim.update(lr=2e-3, b2=0.95, weight_decay=0.05, warmup_steps=50)
        config.optim.update(end_lr_ratio=0.1)
        steps = TINY_SHUFFLE_STEPS if v["shuffle"] > 1 else 1200
        config.train.update(
            steps=steps, log_every=100, eval_every=steps, checkpoint_every=steps // 4,
            ema_decay=0.99, eval_examples=0,
        )  # fmt: skip
    else:
        width, depth, heads = SIZES[v["size"]]
        config.data.update(name=v["data"] or "imagenet2012", image_size=256, batch_size=256)
        config.optim.update(lr=1e-4, b2=0.95, weight_decay=0.05, warmup_steps=0, end_lr_ratio=1.0)
        config.train.update(
            steps=1_500_000, log_every=100, eval_every=10_000, checkpoint_every=5_000,
            eval_examples=10_000, ema_decay=0.9999,
        )  # fmt: skip
    if v["text"] and v["classes"]:
        raise ValueError("the variants text and classes=C exclude each other")
    classes = 0 if v["text"] else v["classes"] or DATASET_CLASSES.get(config.data.name, 0)
    if not classes and not v["text"]:
        raise ValueError(
            f"number of classes of dataset {config.data.name!r} unknown: give the variant classes=C"
        )
    # `tiny` trains far too briefly to overfit: no residual or token dropout
    # (measured on the demo: test cross-entropy 1.273 without, 1.383 with 0.1).
    dropout = 0.0 if v["tiny"] else 0.1
    config.generator = ml_collections.ConfigDict(
        dict(
            name="ar", width=width, depth=depth, heads=heads, num_classes=classes,
            cls_token_num=1, qk_norm=False, resid_dropout=dropout, token_dropout=dropout,
            cond_dropout=0.1,
        )
    )  # fmt: skip
    if v["shuffle"] > 1:
        config.generator.head = ml_collections.ConfigDict(
            dict(name="token_shuffle", window=v["shuffle"], blocks=2, causal=v["causal"])
        )
    elif v["diffusion"]:
        size = dict(depth=3, mlp_width=128) if v["tiny"] else MAR_B_HEAD
        config.generator.head = ml_collections.ConfigDict(
            dict(
                name="diffusion", **size, diffusion_batch_mul=4, learn_sigma=True,
                scale=TINY_LATENT_SCALE if v["tiny"] else 1.0,
            )
        )  # fmt: skip
    else:
        config.generator.head = ml_collections.ConfigDict(dict(name="categorical"))
    if v["text"]:
        del config.generator["cls_token_num"]  # the encoder's length
        config.data.with_captions = True
        config.text_encoder = ml_collections.ConfigDict(
            dict(
                name="random_words", length=CAPTION_WORDS.get(config.data.name, 64),
                dim=64 if v["tiny"] else 256, seed=0, positions=True, truncate=False,
            )
        )  # fmt: skip
    # Tiny Token-Shuffle models sample with top-k: unlikely tokens scatter stray pixels. With
    # the paper's independent window draws, top-k 3 and one shared Gumbel vector per window
    # (`coupled`, `visgen.generators.categorical.draw_step`; not in the paper); with a causal
    # window head (the demo's), top-k 5 (docs/results.md, the demo generator).
    tiny_shuffle = v["tiny"] and v["shuffle"] > 1
    top_k = (5 if v["causal"] else 3) if tiny_shuffle else 0
    if v["diffusion"]:
        # MAR: the linear CFG schedule (MAR-B's scale 2.9), 100 steps per token; `disa`
        # empty (DiSA off; e.g. "linear:50:5"). `tiny` clamps timesteps to 950 (`clip`, DiSA's
        # clamp, not MAR's sampler): a briefly trained head's noise error at t = 999 is
        # amplified ~2e4-fold by the unclamped first step (tests/test_diffusion_head.py).
        config.sample = ml_collections.ConfigDict(
            dict(
                temperature=1.0, cfg_scale=3.0 if v["tiny"] else 2.9, cfg_schedule="linear",
                diffusion_steps=100, disa="", clip=950 if v["tiny"] else 0,
            )
        )  # fmt: skip
    else:
        config.sample = ml_collections.ConfigDict(
            dict(
                temperature=1.0, cfg_scale=4.0, top_k=top_k, top_p=1.0,
                cfg_schedule="half-linear" if v["shuffle"] > 1 else "constant",
            )
        )  # fmt: skip
    if v["shuffle"] > 1:
        config.sample.coupled = tiny_shuffle and not v["causal"]
    config.preview_per_class = 8
    return config
