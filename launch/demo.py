r"""`make demo`: the end-to-end CPU pipeline on the embedded `shapes` dataset.

  python -m launch.demo --out outputs/demo [--recipe NAME] \
      [--tokenizer-steps N] [--generator-steps N]

A recipe (`launch/recipes.py`) names the tiny tokenizer and the generator
trained on its tokens; the default, `vq2d`, is `make demo`'s. The stages:

1. builds `shapes` (32 px) into `<out>/../data` if missing;
2. trains the recipe's tiny tokenizer in `<out>/tokenizer`, evaluates its EMA
   weights on the whole test split and writes `<out>/reconstructions.png`
   (originals above reconstructions). `vq2d`'s is the 2D grid tokenizer
   (`configs/vq2d.py:tiny`, 16 x 16 tokens of 2 x 2 pixels, 128 codes, 1,500
   steps), which keeps the whole demo under 10 minutes on a 2-core CPU;
3. trains the recipe's tiny class-conditional generator on those tokens in
   `<out>/generator` (for `vq2d`: `configs/ar.py:tokenizer=vq2d,tiny,shuffle=2,causal`,
   Token-Shuffle 2 x 2 windows over the 16 x 16 grid with a causal window
   head, from a token cache in `<out>/tokens`) and reports its test loss
   beside a baseline (cross-entropy against the frequency-only one);
4. samples one row per class with classifier-free guidance into
   `<out>/samples.png` with the generator config's options, then the same
   conditions with speculative Jacobi decoding (coupled drafts, the
   default coupling) into `<out>/samples_sjd.png` (plain AR's distribution
   in fewer forward passes; it prints the step compression it got, or why a
   generator's head cannot use SJD);
5. evaluates under the `shapes` feature network (`evals/weights/shapes.npz`):
   the FID of 500 guided samples against the test split, and the rFID and,
   for discrete tokens, pFID (RobusTok token perturbation at alpha 0.1, 0.2,
   0.3) of the tokenizer; for a recipe with `prefix_ks` (FlexTok), also the
   FID of samples drawn in k AR steps and decoded from those k tokens, at each
   prefix length k (`<out>/samples_k<k>/`).

Every stage resumes if interrupted and a finished one is reused. All
numbers go to `<out>/metrics.json`.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

from absl import logging

from launch.recipes import DEFAULT_RECIPE, RECIPES, Recipe

RECIPE_FILE = "recipe.json"  # in <out>: which recipe the run is, so a resume cannot mix two


def _train(
    spec: str, workdir: str, data_dir: str, steps: int, token_cache: str = "", **overrides
) -> bool:
    """Trains `spec` (`configs/x.py:arg`) in `workdir`; False if interrupted."""
    from visgen.config import load_config_file
    from visgen.tasks.run import train_config

    config = load_config_file(spec)
    with config.unlocked():
        config.data.data_dir = data_dir
        if token_cache:
            config.data.token_cache = token_cache
        if steps:
            config.train.steps = steps
        config.update(overrides)
    result = train_config(config, workdir)
    if result.stopped_by:
        print(f"demo interrupted ({result.stopped_by}); run it again to resume")
        return False
    return True


def _final_eval(workdir: str, png_path: str, task: str) -> dict:
    """The training run's last evaluation (EMA weights, whole test split) and its
    preview, re-run only if the run did not leave them."""
    from PIL import Image

    from visgen.evaluation import evaluate_workdir
    from visgen.train.workdir import load_config

    step = load_config(workdir).train.steps
    metrics_path = os.path.join(workdir, "eval", f"step_{step:07d}.json")
    preview_path = os.path.join(workdir, "images", f"preview_{step:07d}.png")
    if not (os.path.isfile(metrics_path) and os.path.isfile(preview_path)):
        return evaluate_workdir(workdir, png_path, task=task)
    img = Image.open(preview_path)
    img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(png_path)
    with open(metrics_path) as f:
        return json.load(f)


def _earlier_recipe(out: str, recipe: Recipe) -> str | None:
    """The recipe of an earlier demo run in `out` if it is not `recipe`, else None.

    Runs from before recipes were recorded are told apart by their tokenizer family."""
    from visgen.config import load_config_file
    from visgen.train.workdir import load_config

    path = os.path.join(out, RECIPE_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
        same = (earlier["tokenizer"], earlier["generator"]) == (recipe.tokenizer, recipe.generator)
        return None if same else earlier["name"]
    try:
        name = load_config(os.path.join(out, "tokenizer")).tokenizer.name
    except FileNotFoundError:
        return None
    if name == load_config_file(recipe.tokenizer).tokenizer.name:
        return None
    return next(
        (r for r, x in RECIPES.items() if x.tokenizer.startswith(f"configs/{name}.py")), name
    )


def _sample_sjd(sample_cli, argv: list[str]) -> dict | None:
    """Samples `argv`'s conditions with SJD and prints its step compression; None
    (and why) when the generator's head cannot use SJD."""
    try:
        sjd = sample_cli.run([*argv, "--method", "sjd"])
    except sample_cli.UsageError as e:
        print(f"      (no SJD: {e})")
        return None
    steps = sjd["steps_per_sample"]
    per_step = sjd["tokens_generated"] // sjd["num"] // steps  # tokens per AR step
    settings = sjd["sjd"]
    print(
        f"      SJD ({settings['coupling']} coupling, window {settings['window']}) step "
        f"compression {sjd['step_compression']:.2f}: "
        f"{sjd['forward_passes']} forward passes for {steps} steps of {per_step} "
        f"token(s) per sample (plain AR: one pass per step); "
        f"{sjd['row_step_compression']:.2f} per sample alone"
    )
    return sjd


def _prefix_metrics(sample_cli, argv, ks, done: dict, features, out: str, data_dir: str):
    """Per prefix length k: gFID and class accuracy of samples drawn in k AR steps and
    decoded from those k tokens (`<out>/samples_k<k>/`). `done` maps a k already
    sampled (the demo's own `--num-tokens`) to its row (`ar_steps_per_sample`,
    `gfid`, `class_accuracy`), reused. The per-k reconstructions are
    `bench/flextok_prefix.py`'s (they would not fit in the demo's 10 minutes)."""
    from visgen.evaluation import generation_fid, load_labels, load_samples

    argv = list(argv)
    if "--num-tokens" in argv:
        at = argv.index("--num-tokens")
        del argv[at : at + 2]
    rows = []
    for k in ks:
        row = done.get(k)
        if row is None:
            folder = os.path.join(out, f"samples_k{k}")
            args = [*argv, "--num-tokens", str(k)]
            args[args.index("--out") + 1] = folder
            stats = sample_cli.run(args)
            npz = os.path.join(folder, "samples.npz")
            images = load_samples(npz)
            gen = generation_fid(
                images, features, samples_name=npz, labels=load_labels(npz, len(images)),
                ref_dataset="shapes", ref_split="test", data_dir=data_dir,
            )  # fmt: skip
            row = dict(
                ar_steps_per_sample=stats["steps_per_sample"], gfid=gen["fid"],
                class_accuracy=gen["class_accuracy"],
            )  # fmt: skip
        row = dict(k=k, **row)
        rows.append(row)
        print(
            f"      k = {k:2d} tokens ({row['ar_steps_per_sample']} AR steps): samples FID "
            f"{row['gfid']:.1f}, the requested class in {100 * row['class_accuracy']:.0f}%"
        )
    return rows


def _print_generator_loss(gen: dict) -> None:
    if "frequency_baseline_cross_entropy" in gen:
        print(
            f"      test cross-entropy {gen['cross_entropy']:.3f} nats/token; frequency-only "
            f"baseline {gen['frequency_baseline_cross_entropy']:.3f}"
        )
    else:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in gen.items() if isinstance(v, float))
        print(f"      test metrics: {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--tokenizer-steps", type=int, default=0, help="0 = the config's")
    parser.add_argument("--generator-steps", type=int, default=0, help="0 = the config's")
    parser.add_argument("--samples-per-class", type=int, default=8)
    parser.add_argument("--fid-samples", type=int, default=500)
    parser.add_argument("--data-dir", default="", help="default: <out>/../data")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=DEFAULT_RECIPE,
        help="the tokenizer and generator to run (launch/recipes.py): "
        + "; ".join(f"{k}: {r.summary}" for k, r in sorted(RECIPES.items())),
    )
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]

    from launch import sample as sample_cli
    from visgen.data import ensure_built
    from visgen.data.shapes import SHAPE_KINDS
    from visgen.evaluation import (
        DEFAULT_ALPHAS,
        generation_fid,
        load_features,
        load_labels,
        load_samples,
        workdir_fid,
    )
    from visgen.runtime import enable_compilation_cache
    from visgen.train.workdir import load_config

    t0 = time.perf_counter()
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    enable_compilation_cache()
    out = os.path.abspath(args.out)
    data_dir = os.path.abspath(args.data_dir or os.path.join(out, "..", "data"))
    tokenizer = os.path.join(out, "tokenizer")
    earlier = _earlier_recipe(out, recipe)
    if earlier is not None:
        print(
            f"{out} holds a demo run of the recipe {earlier}; pass --recipe {earlier} "
            "to resume it, or another --out",
            file=sys.stderr,
        )
        return 2
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, RECIPE_FILE), "w") as f:
        json.dump(dict(name=args.recipe, **dataclasses.asdict(recipe)), f, indent=2)
    print(f"[1/5] dataset shapes/32 in {data_dir}")
    ensure_built("shapes", "", data_dir)

    print(
        f"[2/5] training the {args.recipe} recipe's tokenizer ({recipe.tokenizer}) in {tokenizer}"
    )
    if not _train(recipe.tokenizer, tokenizer, data_dir, args.tokenizer_steps):
        return 1
    png = os.path.join(out, "reconstructions.png")
    metrics = {"tokenizer": _final_eval(tokenizer, png, "tokenizer")}
    tok = metrics["tokenizer"]
    usage = (
        f", codebook usage {100 * tok['codebook_usage']:.1f}%" if "codebook_usage" in tok else ""
    )
    print(
        f"      test PSNR {tok['psnr']:.2f} dB (mean-colour baseline "
        f"{tok['mean_colour_psnr']:.2f} dB), SSIM {tok['ssim']:.3f}{usage}"
    )

    generator = os.path.join(out, "generator")
    print(f"[3/5] training the generator ({recipe.generator}) on its tokens in {generator}")
    if not _train(
        recipe.generator,
        generator,
        data_dir,
        args.generator_steps,
        # The tokenizer's train-split tokens, computed once (seconds) instead of every step.
        token_cache=os.path.join(out, "tokens") if recipe.token_cache else "",
        tokenizer_workdir=tokenizer,
    ):
        return 1
    gen = _final_eval(generator, os.path.join(generator, "eval", "preview.png"), "generator")
    metrics["generator"] = gen
    _print_generator_loss(gen)

    print("[4/5] sampling one row per class with guidance")
    samples = os.path.join(out, "samples")
    generator_config = load_config(generator).generator
    classes = generator_config.num_classes
    batch = str(classes * args.samples_per_class)
    argv = ["--workdir", generator, "--out", samples, "--num", batch, "--batch-size", batch]
    argv += recipe.sample_args
    # The grid with the config's options; then SJD on the same conditions, where it applies.
    if sample_cli.main(argv) != 0:
        return 1
    os.replace(os.path.join(samples, "samples.png"), os.path.join(out, "samples.png"))
    if not recipe.sjd:
        print(f"      (no SJD: the {args.recipe} recipe skips it)")
    elif (sjd := _sample_sjd(sample_cli, argv)) is not None:
        os.replace(os.path.join(samples, "samples.png"), os.path.join(out, "samples_sjd.png"))
        metrics["sjd_sampling"] = sjd

    print(f"[5/5] FID-family metrics under the shapes feature network ({args.fid_samples} samples)")
    argv[argv.index("--num") + 1] = str(args.fid_samples)
    if sample_cli.main(argv) != 0:
        return 1
    with open(os.path.join(samples, "stats.json")) as f:
        metrics["sampling"] = json.load(f)
    gfid, pfid = os.path.join(out, "fid.json"), os.path.join(out, "pfid.json")
    features = load_features("shapes")
    npz = os.path.join(samples, "samples.npz")
    images = load_samples(npz)
    metrics["fid"] = generation_fid(
        images,
        features,
        samples_name=npz,
        labels=load_labels(npz, len(images)),
        ref_dataset="shapes",
        ref_split="test",
        data_dir=data_dir,
    )
    alphas = DEFAULT_ALPHAS if recipe.pfid else ()
    metrics["pfid"] = workdir_fid(tokenizer, features, data_dir=data_dir, alphas=alphas)
    for name, path in (("fid", gfid), ("pfid", pfid)):
        with open(path, "w") as f:
            f.write(json.dumps(metrics[name], indent=2) + "\n")
    rec = metrics["pfid"]
    # Keyed by alpha with pFID's alphas; a plain fraction without them (`pfid=False` recipes).
    recon_accuracy = rec["class_accuracy"]
    if isinstance(recon_accuracy, dict):
        recon_accuracy = recon_accuracy["0"]
    print(
        f"      samples: FID {metrics['fid']['fid']:.1f}, the requested class in "
        f"{100 * metrics['fid']['class_accuracy']:.0f}% of them (the classifier finds the "
        f"class of {100 * rec['class_accuracy_originals']:.0f}% of the test images and of "
        f"{100 * recon_accuracy:.0f}% of their reconstructions); rFID "
        f"{rec['rfid']:.1f}"
    )
    per_class = zip(SHAPE_KINDS, metrics["fid"]["class_accuracy_per_class"], strict=True)
    print(
        "      by requested class: "
        + ", ".join(f"{k} {'-' if a is None else f'{100 * a:.0f}%'}" for k, a in per_class)
    )

    if recipe.prefix_ks:
        done = {}
        if "--num-tokens" in argv:  # the samples just scored: that k's row
            done[int(argv[argv.index("--num-tokens") + 1])] = dict(
                ar_steps_per_sample=metrics["sampling"]["steps_per_sample"],
                gfid=metrics["fid"]["fid"],
                class_accuracy=metrics["fid"]["class_accuracy"],
            )
        metrics["by_k"] = _prefix_metrics(
            sample_cli, argv, recipe.prefix_ks, done, features, out, data_dir
        )
    metrics["demo_seconds"] = time.perf_counter() - t0
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {out}/reconstructions.png, samples.png and metrics.json in "
          f"{metrics['demo_seconds']:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
