r"""Sample images from a trained generator workdir.

  python -m launch.sample --workdir GEN --num 64 [--class 3 | --classes 0,1,2] \
      [--cfg 4 --cfg-schedule linear --top-k 0 --top-p 1 --temperature 1 --seed 0] \
      [--batch-size 32] [--png] --out DIR

Writes into `DIR`: `samples.png` (a grid; one row per class when classes
cycle), `samples.npz` (`images` uint8 `[N, H, W, 3]` as `python -m evals.fid`
reads them, and `labels`), `stats.json` (seconds and images/s, both including the
first batch's compilation; forward passes; tokens) and, with `--png`, one
PNG per sample. Without a class option the samples cycle through every
class. Every input is checked before anything is sampled or written, so a
bad call leaves no partial output.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from visgen.sampling.guidance import SCHEDULES


class UsageError(Exception):
    """Bad input: printed as `error: ...` with exit status 2."""


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--png", action="store_true", help="also write one PNG per sample")
    return p.parse_args(argv)


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


def _grid_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`[N, H, W, 3]` -> `[R, C, H, W, 3]`: one row per class when classes cycle, else rows of 8."""
    distinct = len(np.unique(labels))
    per_row = math.ceil(len(images) / distinct) if distinct > 1 else min(8, len(images))
    rows = math.ceil(len(images) / per_row)
    blank = np.full((rows * per_row - len(images), *images.shape[1:]), 255, np.uint8)
    return np.concatenate([images, blank]).reshape(rows, per_row, *images.shape[1:])


def _options(args, config):
    from visgen.sampling import SampleOptions
    from visgen.tasks.generator import sample_settings

    values = sample_settings(config)
    for key, given in (
        ("cfg_scale", args.cfg),
        ("cfg_schedule", args.cfg_schedule),
        ("top_k", args.top_k),
        ("top_p", args.top_p),
        ("temperature", args.temperature),
    ):
        if given is not None:
            values[key] = given
    try:
        return SampleOptions(**values)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run(argv=None) -> dict:
    args = _parse(argv)
    if args.num <= 0:
        raise UsageError(f"--num must be positive, got {args.num}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
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
    if args.prompt is not None and num_classes:
        raise UsageError(
            "--prompt needs a text-conditional generator; this one is class-conditional "
            f"({num_classes} classes): use --class or --classes"
        )
    if not num_classes:
        raise UsageError(
            "this generator is text-conditional: --class/--classes do not apply, and "
            "sampling from a prompt needs a text encoder, which its config does not name"
        )
    labels = _labels(args, num_classes)
    options = _options(args, config)

    import jax
    from flax import nnx

    from visgen.data import to_uint8
    from visgen.runtime import enable_compilation_cache
    from visgen.sampling import sample
    from visgen.train.progress import progress_bar
    from visgen.train.workdir import load_trained
    from visgen.train.writer import image_grid, save_png

    enable_compilation_cache()
    try:
        _, task, model, step = load_trained(args.workdir)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None

    decode = nnx.jit(lambda m, t: task.decode(m, t))
    batch = min(args.batch_size, args.num)
    batches = math.ceil(args.num / batch)
    padded = np.resize(labels, batches * batch)  # the last batch is padded: one compile
    images, forward_passes, t0 = [], 0, time.perf_counter()
    key = jax.random.key(args.seed)
    steps = range(batches)
    if batches > 1:
        steps = progress_bar(steps, total=batches, desc="sampling")
    for i in steps:
        cond = padded[i * batch : (i + 1) * batch]
        tokens, stats = sample(model.generator, cond, jax.random.fold_in(key, i), options)
        images.append(np.asarray(to_uint8(decode(model, tokens))))
        forward_passes += int(stats["forward_passes"])
    seconds = time.perf_counter() - t0
    images = np.concatenate(images)[: args.num]

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "samples.npz"), images=images, labels=labels)
    save_png(os.path.join(out, "samples.png"), image_grid(_grid_rows(images, labels)), upscale=2)
    if args.png:
        for n, img in enumerate(images):
            save_png(os.path.join(out, f"sample_{n:05d}_class{labels[n]}.png"), img)
    result = {
        "workdir": os.path.abspath(args.workdir),
        "step": int(step),
        "num": int(args.num),
        "seconds": seconds,
        "images_per_s": args.num / seconds,
        "forward_passes": forward_passes,
        "tokens_generated": int(args.num * model.generator.num_tokens),
        "options": {k: getattr(options, k) for k in options.__dataclass_fields__},
        "seed": args.seed,
    }
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv=None) -> int:
    try:
        result = run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{result['num']} samples in {result['seconds']:.1f} s "
        f"({result['images_per_s']:.1f} images/s, {result['forward_passes']} forward passes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
