r"""Sample images from a trained generator workdir.

  python -m launch.sample --workdir GEN --num 64 [--class 3 | --classes 0,1,2 | --prompt TEXT] \
      [--cfg 4 --cfg-schedule linear --top-k 0 --top-p 1 --temperature 1 --seed 0] \
      [--coupled-windows | --no-coupled-windows] [--diffusion-steps 100 | --disa linear:50:5] \
      [--method ar | --method sjd --sjd-window 16 --sjd-init repeat_horizontal \
       --sjd-coupling maximal | --method mar --num-iter 64] \
      [--batch-size 32] [--png] --out DIR

Writes into `DIR`: `samples.png` (a grid; one row per class when classes
cycle), `samples.npz` (`images` uint8 `[N, H, W, 3]` as `python -m evals.fid`
reads them, and `labels`, or for text the `prompt`), `stats.json` (seconds
and images/s, both including the first batch's compilation; forward passes;
tokens; the step compression: plain AR's forward passes, one per step (a
token, or a Token-Shuffle window), over this run's) and, with `--png`, one
PNG per sample. `--method mar` (a masked generator's sampler, `configs/mar.py`,
and its default) reveals the tokens in a random order over `--num-iter`
backbone passes (`visgen.sampling.mar`; `stats.json` adds `num_iter` and
`denoiser_calls`, the head network's batched calls). `--method sjd` samples
with speculative Jacobi decoding
(`visgen.sampling.sjd`: the same distribution in fewer forward passes);
`stats.json` then also reports the accepted drafts per pass, the step
compression a sample alone gets (`row_step_compression`, batch 1), draft
acceptance by position in the SJD window, by Jacobi iteration and by token
of a window (`acceptance`: rates, and the `counts` behind them), and the
window, draft initialisation and coupling used (`--sjd-init` defaults to the
layout's best, `--sjd-coupling` to `visgen.sampling.DEFAULT_COUPLING`:
`none` is SJD, `maximal` and `gumbel` MC-SJD's coupled drafts).
A method refuses a head that lacks what it needs (`visgen.sampling.require`:
SJD needs per-token probabilities, each token of a window drawn on its own
or in order).
Sampling defaults come from the generator's config (`config.sample`); the
flags override them, and `--top-k`, `--top-p`, `--coupled-windows`,
`--diffusion-steps` and `--disa` are the head's own options
(`--coupled-windows`, Token-Shuffle heads only: one shared Gumbel vector per
window; the last two, the diffusion head only: denoising steps per token, or
a DiSA schedule; its `stats.json` adds `head_evaluations`, the denoiser's
passes summed over the batches). A config default the method cannot use
(a coupled-window default under SJD) falls back to the head's default; a
flag it cannot use is refused.
Without a class option the samples cycle through every class. A
text-conditional generator (`configs/ar.py:...,text`) takes `--prompt`
instead: the caption is encoded by the text encoder its config names
(`visgen.text`) and all `--num` samples show it. Every input is checked
before anything is sampled or written, so a bad call leaves no partial
output: the flags (finite `--cfg`, `--temperature`, `--top-p`; an `--out`
that is not a file; the SJD flags) before the model loads, and what depends
on the generator (classes, the SJD init for its layout) before sampling. A
bad input is one `error:` line with exit status 2 (`visgen.cli`); `--debug`
or `VISGEN_DEBUG=1` shows its traceback.
"""

import argparse
import functools
import json
import math
import os
import sys
import time

import numpy as np

from visgen.cli import UsageError, user_errors

METHODS = ("ar", "sjd", "mar")  # the keys of `visgen.sampling.METHODS`
SJD_COUPLINGS = ("none", "maximal", "gumbel")  # `visgen.sampling.COUPLINGS`


# Names spelled out here, not imported, so that checking the flags imports no JAX (a bad
# flag is refused in a fraction of a second); tests/test_bad_inputs.py keeps them equal.
SCHEDULES = ("constant", "linear", "half-linear")  # `visgen.sampling.guidance.SCHEDULES`
# The draft initialisations of every layout (`visgen.sampling.sjd_drafts`: INITS_1D and
# INITS_GRID); which ones a generator takes depends on its layout, checked once it is loaded.
SJD_INITS = ("random", "repeat_prev", "repeat_horizontal", "repeat_vertical")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a generator workdir (launch.train)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num", type=int, default=64, help="number of samples")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--class", dest="single_class", type=int, help="one class for all")
    group.add_argument("--classes", help="comma-separated classes, cycled")
    group.add_argument("--prompt", help="a caption (text-conditional generators only)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: config)")
    p.add_argument("--cfg-schedule", choices=SCHEDULES, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument(
        "--coupled-windows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Token-Shuffle: one shared Gumbel vector per window (default: config)",
    )
    p.add_argument("--diffusion-steps", type=int, default=None, help="diffusion head: steps")
    p.add_argument("--disa", default=None, help="diffusion head: DiSA schedule, e.g. linear:50:5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="ar, sjd (speculative) or mar (masked); default: the generator's (ar, or mar)",
    )
    p.add_argument("--num-iter", type=int, default=None, help="mar: backbone passes (64)")
    p.add_argument("--sjd-window", type=int, default=None, help="SJD tokens per pass (16)")
    p.add_argument(
        "--sjd-init", choices=SJD_INITS, default=None, help="SJD draft init (default: the layout's)"
    )
    p.add_argument("--sjd-coupling", choices=SJD_COUPLINGS, default=None, help="SJD draft coupling")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--num-tokens",
        type=int,
        default=None,
        help="decode only the first k tokens of a 1D tokenizer (FlexTok); default: all",
    )
    p.add_argument("--png", action="store_true", help="also write one PNG per sample")
    p.add_argument("--debug", action="store_true", help="full tracebacks for bad input")
    return p.parse_args(argv)


def _check_out(out: str) -> None:
    """Refuses an `--out` that is a file, or under one, before anything is sampled."""
    path = os.path.abspath(out)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        what = "is a file" if path == os.path.abspath(out) else f"is under the file {path}"
        raise UsageError(f"--out {out} {what}: give a directory (created if missing)")


def _labels(args, num_classes: int) -> np.ndarray:
    if args.single_class is not None:
        classes = [args.single_class]
    elif args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",") if c.strip()]
        except ValueError as e:
            raise UsageError(f"--classes must be comma-separated integers: {e}") from None
        if not classes:
            raise UsageError("--classes is empty")
    else:
        classes = list(range(num_classes))
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(
            f"class {bad[0]} is out of range: this generator has classes 0..{num_classes - 1}"
        )
    # Class-major order, so a grid with one column per repeat shows one class per row.
    per = math.ceil(args.num / len(classes))
    return np.repeat(np.asarray(classes, np.int32), per)[: args.num]


def _prompt_embedding(args, config) -> np.ndarray:
    """`--prompt` encoded by the workdir's text encoder: float32 `[1, L, D]`."""
    from visgen.text import config_text_encoder, split_words

    if args.prompt is None:
        raise UsageError(
            "this generator is text-conditional: give --prompt TEXT (--class and --classes "
            "apply to class-conditional generators)"
        )
    if not split_words(args.prompt):
        raise UsageError(f"--prompt {args.prompt!r} has no words")
    encoder = config_text_encoder(config)
    try:
        return encoder.encode([args.prompt]).embeddings
    except ValueError as e:
        raise UsageError(f"--prompt: {e}") from None


def _grid_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`[N, H, W, 3]` -> `[R, C, H, W, 3]`: one row per class when classes cycle, else rows of 8."""
    distinct = len(np.unique(labels))
    per_row = math.ceil(len(images) / distinct) if distinct > 1 else min(8, len(images))
    rows = math.ceil(len(images) / per_row)
    blank = np.full((rows * per_row - len(images), *images.shape[1:]), 255, np.uint8)
    return np.concatenate([images, blank]).reshape(rows, per_row, *images.shape[1:])


# Flags that override `config.sample`, and the option each sets.
OPTION_FLAGS = {
    "cfg": "cfg_scale",
    "cfg_schedule": "cfg_schedule",
    "top_k": "top_k",
    "top_p": "top_p",
    "temperature": "temperature",
    "coupled_windows": "coupled",
    "diffusion_steps": "diffusion_steps",
    "disa": "disa",
}


def _options(args, config):
    """`SampleOptions` from the config's defaults and the flags; a bad value is a UsageError."""
    from visgen.tasks.generator import config_sample_options

    flags = {option: getattr(args, flag) for flag, option in OPTION_FLAGS.items()}
    try:
        return config_sample_options(config, **flags)
    except ValueError as e:
        raise UsageError(str(e)) from None


# Per-batch sampler stats that `stats.json` sums over batches (SJD's only for SJD;
# `head_evaluations` only from a head that counts them).
COUNTS = (
    "forward_passes",
    "accepted_drafts",
    "verify_passes",
    "head_evaluations",
    "denoiser_calls",
)


def _sampler(args, layout: tuple[int, ...]):
    """`(model, cond, rng, options) -> (tokens, stats)` for `--method`, and the SJD
    settings (`{}` for plain AR); a bad SJD init for `layout` (the generator's
    `step_layout`) is a UsageError."""
    import functools

    from visgen.sampling import (
        DEFAULT_COUPLING,
        DEFAULT_WINDOW,
        METHODS,
        check_sjd_args,
        default_init,
    )

    sampler = METHODS[args.method][0]
    if args.method == "ar":
        return sampler, {}
    if args.method == "mar":
        return functools.partial(sampler, num_iter=args.num_iter), {}
    settings = {
        "window": DEFAULT_WINDOW if args.sjd_window is None else args.sjd_window,
        "init": args.sjd_init or default_init(layout),
        "coupling": args.sjd_coupling or DEFAULT_COUPLING,
    }
    try:
        check_sjd_args(layout, **settings)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return functools.partial(sampler, **settings), settings


def _pass_stats(totals: dict, batches: int, batch: int, num_steps: int, sjd: bool) -> dict:
    """Forward passes and step compression over all batches (padding rows included).

    `num_steps` is plain AR's passes per batch: one per token, or per window of a
    Token-Shuffle model, so plain AR's step compression is 1.
    """
    stats = {
        "forward_passes": int(totals["forward_passes"]),
        "step_compression": batches * num_steps / totals["forward_passes"],
    }
    if sjd:
        from visgen.sampling import acceptance_rates

        accepted, verify = totals["accepted_drafts"], totals["verify_passes"]
        counts = {
            name: int(c) if np.ndim(c) == 0 else [int(x) for x in c]
            for name, c in totals["acceptance"].items()
        }
        stats.update(
            accepted_drafts=int(accepted),
            accepted_per_pass=accepted / max(verify, 1),
            row_step_compression=batches * batch * num_steps / (batches * batch + verify),
            acceptance={**acceptance_rates(counts), "counts": counts},
        )
    return stats


def run(argv=None) -> dict:
    args = _parse(argv)
    if args.num <= 0:
        raise UsageError(f"--num must be positive, got {args.num}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    sjd_flags = (args.sjd_window, args.sjd_init, args.sjd_coupling)
    if args.method != "sjd" and any(flag is not None for flag in sjd_flags):
        raise UsageError("--sjd-window, --sjd-init and --sjd-coupling apply only with --method sjd")
    if args.sjd_window is not None and args.sjd_window < 1:
        raise UsageError(f"the SJD window must be >= 1, got {args.sjd_window}")
    if args.num_iter is not None and args.method not in (None, "mar"):
        raise UsageError("--num-iter applies only with --method mar")
    for flag in ("cfg", "temperature", "top_p"):
        value = getattr(args, flag)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"--{flag.replace('_', '-')} must be a finite number, got {value}")
    _check_out(args.out)
    from visgen.train.workdir import load_config

    try:
        config = load_config(args.workdir)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if config.get("task") != "generator":
        raise UsageError(
            f"{args.workdir} is a {config.get('task')!r} workdir, not a generator's "
            "(train one with configs/ar.py)"
        )
    num_classes = int(config.generator.get("num_classes", 0))
    text = "text_encoder" in config
    if args.prompt is not None and not text:
        raise UsageError(
            "--prompt needs a text-conditional generator; this one is class-conditional "
            f"({num_classes} classes): use --class or --classes"
        )
    if text:
        # `labels` only lay out the grid (rows of 8); every sample shows the prompt.
        conds = np.repeat(_prompt_embedding(args, config), args.num, axis=0)
        labels = np.zeros(args.num, np.int32)
    else:
        conds = labels = _labels(args, num_classes)
    options = _options(args, config)

    from visgen.distributed import initialize, is_multiprocess_job

    if is_multiprocess_job():
        initialize()  # the processes split the batches (`visgen.distributed.split`)
    import jax
    from flax import nnx

    from visgen.data import to_uint8
    from visgen.distributed import gather_in_order, split
    from visgen.runtime import enable_compilation_cache
    from visgen.sampling import METHODS, UnsupportedHead, fit_to, require
    from visgen.tasks.restore import load_trained
    from visgen.train.progress import progress_bar
    from visgen.train.writer import image_grid, save_png

    enable_compilation_cache()
    try:
        _, task, model, step = load_trained(args.workdir)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None

    generator = model.generator
    if args.num_tokens is not None and (
        len(task.spec.layout) != 1 or not 1 <= args.num_tokens <= generator.num_tokens
    ):
        raise UsageError(
            f"--num-tokens decodes a prefix of a 1D tokenizer's tokens: 1..{generator.num_tokens} "
            f"for layout {tuple(task.spec.layout)}, got {args.num_tokens}"
        )
    own_method = generator.method
    args.method = args.method or own_method
    if own_method == "mar" and args.method != "mar":
        raise UsageError(
            f"--method {args.method} decodes causally; this generator is masked "
            "(configs/mar.py): use --method mar"
        )
    if args.method == "mar":
        from visgen.sampling import DEFAULT_NUM_ITER, reveal_counts

        args.num_iter = DEFAULT_NUM_ITER if args.num_iter is None else args.num_iter
        try:
            reveal_counts(generator.num_tokens, args.num_iter)
        except ValueError as e:
            raise UsageError(f"--num-iter: {e}") from None
    capability = METHODS[args.method][1]
    # Config defaults the method cannot use fall back to the head's; flags never do.
    given = {option for flag, option in OPTION_FLAGS.items() if getattr(args, flag) is not None}
    options = fit_to(options, generator.head, capability, given)
    if capability is not None:
        try:
            require(generator.head, options, capability, f"--method {args.method}")
        except UnsupportedHead as e:
            raise UsageError(f"{e}: use --method ar") from None
    sampler, sjd = _sampler(args, generator.step_layout)
    # A causal generator's first k tokens are a k-step sample's: plain AR stops after the
    # steps that draw them (the same tokens as the full draw's first k); SJD and MAR draw
    # every token and the prefix is decoded.
    steps_run, tokens_drawn = generator.num_steps, generator.num_tokens
    if args.num_tokens is not None and args.method == "ar":
        per_step = generator.num_tokens // generator.num_steps
        steps_run = -(-args.num_tokens // per_step)
        tokens_drawn = steps_run * per_step
        sampler = functools.partial(sampler, num_steps=steps_run)
    decode = nnx.jit(lambda m, t: task.decode(m, t, num_tokens=args.num_tokens))
    batch = min(args.batch_size, args.num)
    batches = math.ceil(args.num / batch)
    # The last batch is padded (repeating conditions): one compile.
    padded = conds[np.arange(batches * batch) % len(conds)]
    images, totals, t0 = [], {}, time.perf_counter()
    key = jax.random.key(args.seed)
    # This process's share of the batches (all of them in a one-process run); batch i's
    # samples depend only on i, and every process gets every batch back in order.
    steps = range(*split(batches))
    per_batch = []
    if len(steps) > 1:
        steps = progress_bar(steps, total=len(steps), desc="sampling")
    for i in steps:
        cond = padded[i * batch : (i + 1) * batch]
        tokens, stats = sampler(model.generator, cond, jax.random.fold_in(key, i), options)
        images.append(np.asarray(to_uint8(decode(model, tokens))))
        per_batch.append(jax.device_get(stats))
    images = gather_in_order(images)
    for stats in gather_in_order(per_batch):
        for name in COUNTS:
            totals[name] = totals.get(name, 0) + stats.get(name, 0)
        for name, c in stats.get("acceptance", {}).items():  # SJD's, summed like COUNTS
            acceptance = totals.setdefault("acceptance", {})
            acceptance[name] = np.add(acceptance.get(name, 0), c)
        counts_head = "head_evaluations" in stats
    seconds = time.perf_counter() - t0
    images = np.concatenate(images)[: args.num]

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    main_process = jax.process_index() == 0  # writes the job's files
    cond_arrays = {"prompt": np.str_(args.prompt)} if text else {"labels": labels}
    if main_process:
        np.savez(os.path.join(out, "samples.npz"), images=images, **cond_arrays)
        save_png(os.path.join(out, "samples.png"), image_grid(_grid_rows(images, labels)), 2)
    if args.png and main_process:
        for n, img in enumerate(images):
            name = f"sample_{n:05d}.png" if text else f"sample_{n:05d}_class{labels[n]}.png"
            save_png(os.path.join(out, name), img)
    result = {
        "workdir": os.path.abspath(args.workdir),
        "step": int(step),
        "tokenizer_step": int(task.frozen_tokenizer.step),
        "num": int(args.num),
        "seconds": seconds,
        "images_per_s": args.num / seconds,
        # Per sample, the tokens of the steps run (a k-token prefix stops plain AR early).
        "tokens_generated": int(args.num * tokens_drawn),
        "steps_per_sample": int(steps_run),
        **_pass_stats(totals, batches, batch, steps_run, bool(sjd)),
        "method": args.method,
        "options": options.to_dict(),
        "seed": args.seed,
    }
    if text:
        result["prompt"] = args.prompt
    if args.num_tokens is not None:
        result["num_tokens"] = args.num_tokens
    if sjd:
        result["sjd"] = sjd
    if counts_head:
        result["head_evaluations"] = int(totals["head_evaluations"])
    if args.method == "mar":
        result.update(num_iter=args.num_iter, denoiser_calls=int(totals["denoiser_calls"]))
    if main_process:
        with open(os.path.join(out, "stats.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with user_errors(argv):  # one `error:` line (exit 2), or the traceback with --debug
            result = run(argv)
    except SystemExit as e:
        return e.code
    sjd = (
        f", step compression {result['step_compression']:.2f} "
        f"({result['row_step_compression']:.2f} per sample alone; "
        f"{result['accepted_per_pass']:.2f} drafts accepted per pass)"
        if "accepted_per_pass" in result
        else ""
    )
    print(
        f"{result['num']} samples in {result['seconds']:.1f} s ({result['images_per_s']:.1f} "
        f"images/s, {result['forward_passes']} forward passes{sjd})"
    )
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
