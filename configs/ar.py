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

Text-conditional (`text`: trains on the dataset's captions, then samples a
prompt):

  python -m launch.train --config configs/ar.py:tokenizer=titok,tiny,text \
      --workdir outputs/ar_text --config.tokenizer_workdir=outputs/titok_tiny
  python -m launch.sample --workdir outputs/ar_text --num 16 --cfg 4 \
      --prompt "a large red circle in the centre, on a black background" \
      --out outputs/ar_text/samples

Variants (comma separated): `tiny`; `tokenizer=titok|vq2d` (which tokenizer
family the data settings follow; the weights come from
`config.tokenizer_workdir`); `size=B|L|XL`; `data=<tfds name or folder>`;
`classes=C` (number of classes; default from the dataset); `shuffle=S` (the
Token-Shuffle window, the same as `--config.generator.shuffle_window=S`);
`causal` (with `shuffle=S`: a causal window head predicts a window's tokens
one after another from the window's one pass, `generator.causal_window`; not
in the paper); `text` (condition on captions instead of classes).

`text` adds `config.text_encoder` (a `visgen.text` encoder: `name` and its
arguments; `random_words` is a frozen random-word-embedding stand-in for a
pretrained encoder such as LlamaGen's FLAN-T5-XL), turns on
`data.with_captions` and gives the generator no classes: its `text_dim` and
`cls_token_num` (the prefix length) are the encoder's `dim` and `length`,
set by the task, so `--config.text_encoder.length=L` changes both. `length`
defaults to a bound on the dataset's caption words (a longer caption is an
error unless `text_encoder.truncate`). Token caches store no captions, so
`data.token_cache` is refused with `text`.

`config.sample.cfg_schedule` defaults to `auto`: Token-Shuffle's
`half-linear` when `generator.shuffle_window > 1`, else LlamaGen's
`constant` (resolved by `visgen.tasks.generator.sample_settings`, so it
follows a window set on the command line); naming a schedule overrides it.

The full sizes keep LlamaGen's recipe: AdamW 1e-4, beta (0.9, 0.95), weight
decay 0.05, grad clip 1, batch 256, dropout 0.1 (residual, token and class),
constant CFG 4. `tiny` (width 96, depth 4, 4 heads, batch 32, lr 2e-3, 1,200 steps,
no residual or token dropout) is sized to train in minutes on a 2-core CPU:
width 96 trains at 7.3 steps/s there against 3.3 for width 128 (on the demo's
vq2d tokens), and a GPU sweep of the demo's stages (`evals/demo_sweep.sh`,
BENCHMARKS.md) found more steps of the narrower model better than fewer of
the wider one. `tiny,shuffle=2,causal` is the demo's generator, on the
16 x 16 tokens of `configs/vq2d.py:tiny`: batch 8, 7,200 steps, a causal
window head, and top-k 5 by default; `tiny,shuffle=2` (the paper's
independent window draws) samples with top-k 3 and coupled windows
(`sample.coupled_windows`: a window's four tokens share one Gumbel vector;
not in the paper). On this CPU the shuffled tiny model trains at ~15-21
steps/s with a token cache (batch 16: ~9-10.5; batch 32: 5-5.6; the plain
model on 256 positions at batch 32: ~1.1): the examples per second are
about the same at every batch, so a smaller batch buys more updates in the
same time. Measured on the demo's tokenizer (CFG 4, `shapes` features),
FID / the classifier's class accuracy: at batch 32 with top-k 5 (500
samples), after 1,200 steps 20.2 / 35% (29.2 / 28% with full sampling),
after 2,000 steps 18.2 / 38%, after 3,000 steps 13.3 / 49% (10 minutes,
over the demo's budget). Over 1,500 samples (3 seeds), at about the time
of 2,000 steps at batch 32: batch 16, 3,600 steps 13.8 / 46%; batch 8,
7,200 steps 14.5 / 50%; batch 8, 8,400 steps (70 s more) 13.4 / 49%; the
batch-8 model with coupled windows 12.0 / 54%, and with top-k 3 too
12.8 / 58%; with the causal window head (top-k 5) 10.1 / 69% (BENCHMARKS.md,
"A 2 x 2 patch tokenizer for the demo", "The demo generator's batch,
learning rate and guidance" and "Coupled windows, a causal window head").
"""

import ml_collections

from visgen.config import base_config, parse_variant, section
from visgen.generators.ar import SIZES
from visgen.sampling import SampleOptions
from visgen.tasks.generator import AUTO_SCHEDULE

# Batch and train steps of `tiny,shuffle=S` (the demo's generator adds `causal`).
TINY_SHUFFLE_BATCH, TINY_SHUFFLE_STEPS = 8, 7200
DATASET_CLASSES = {"shapes": 5, "shapes_video": 5, "digits": 10, "imagenet2012": 1000}
# Text slots for a dataset's captions (shapes: at most 29 words; with motion 41).
CAPTION_WORDS = {"shapes": 32, "shapes_video": 48}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    defaults = dict(tiny=False, tokenizer="titok", size="B", data="", classes=0, shuffle=1)
    v = parse_variant(arg, dict(defaults, text=False, causal=False))
    if v["causal"] and v["shuffle"] < 2:
        raise ValueError("the variant causal orders a window's tokens: it needs shuffle=S > 1")
    if v["tokenizer"] not in ("titok", "vq2d"):
        raise ValueError(f"tokenizer must be titok or vq2d, got {v['tokenizer']!r}")
    config = base_config("generator")
    config.tokenizer_workdir = ""
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
            cond_dropout=0.1, shuffle_window=v["shuffle"], causal_window=v["causal"],
        )
    )  # fmt: skip
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
    # (`coupled_windows`, `visgen.sampling.sample_window`; not in the paper); with a causal
    # window head (the demo's), top-k 5. Over 1,500 samples, class accuracy / FID: 49.5% /
    # 14.5 with independent top-k 5, 58.3% / 12.8 coupled with top-k 3, 68.9% / 10.1 causal
    # with top-k 5 (BENCHMARKS.md, "Coupled windows, a causal window head").
    tiny_shuffle = v["tiny"] and v["shuffle"] > 1
    top_k = (5 if v["causal"] else 3) if tiny_shuffle else 0
    config.sample = section(
        SampleOptions, cfg_scale=4.0, cfg_schedule=AUTO_SCHEDULE, top_k=top_k,
        coupled_windows=tiny_shuffle and not v["causal"],
    )  # fmt: skip
    del config.sample["cfg_interval"]  # None is not a settable ConfigDict type
    config.preview_per_class = 8
    return config
