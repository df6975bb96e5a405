r"""`make demo`: the end-to-end CPU pipeline on the embedded `shapes` dataset.

  python -m launch.demo --out outputs/demo [--tokenizer-steps N] [--generator-steps N]

1. builds `shapes` (32 px) into `<out>/../data` if missing;
2. trains the tiny 2D grid tokenizer (`configs/vq2d.py:tiny`, 8 x 8 tokens) in
   `<out>/tokenizer`, evaluates its EMA weights on the whole test split and
   writes `<out>/reconstructions.png` (originals above reconstructions);
3. trains a tiny class-conditional AR generator (`configs/ar.py:tokenizer=vq2d,tiny`)
   on those tokens in `<out>/generator` and reports its test cross-entropy
   beside the frequency-only baseline;
4. samples one row per class with classifier-free guidance into
   `<out>/samples.png` (and `samples/samples.npz` for FID).

Every stage resumes if interrupted and a finished one is reused. All
numbers go to `<out>/metrics.json`.
"""

import argparse
import json
import os
import sys
import time

from absl import logging


def _train(spec: str, workdir: str, data_dir: str, steps: int, **overrides) -> bool:
    """Trains `spec` (`configs/x.py:arg`) in `workdir`; False if interrupted."""
    from visgen.config import load_config_file
    from visgen.data import DataConfig
    from visgen.tasks import make_task
    from visgen.train.loop import TrainConfig, train
    from visgen.train.optim import OptimConfig
    from visgen.train.workdir import save_config

    config = load_config_file(spec)
    with config.unlocked():
        config.data.data_dir = data_dir
        if steps:
            config.train.steps = steps
        config.update(overrides)
    save_config(workdir, config)
    result = train(
        make_task(config),
        workdir,
        TrainConfig(**config.train),
        DataConfig(**config.data),
        OptimConfig(**config.optim),
    )
    if result.stopped_by:
        print(f"demo interrupted ({result.stopped_by}); run it again to resume")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--tokenizer-steps", type=int, default=0, help="0 = the config's")
    parser.add_argument("--generator-steps", type=int, default=0, help="0 = the config's")
    parser.add_argument("--samples-per-class", type=int, default=8)
    parser.add_argument("--data-dir", default="", help="default: <out>/../data")
    args = parser.parse_args(argv)

    from evals.recon import evaluate_workdir
    from launch import sample as sample_cli
    from visgen.data import ensure_built
    from visgen.runtime import enable_compilation_cache
    from visgen.train.workdir import load_config

    t0 = time.perf_counter()
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    enable_compilation_cache()
    out = os.path.abspath(args.out)
    data_dir = os.path.abspath(args.data_dir or os.path.join(out, "..", "data"))
    print(f"[1/4] dataset shapes/32 in {data_dir}")
    ensure_built("shapes", "", data_dir)

    tokenizer = os.path.join(out, "tokenizer")
    print(f"[2/4] training the tiny vq2d tokenizer in {tokenizer}")
    if not _train("configs/vq2d.py:tiny", tokenizer, data_dir, args.tokenizer_steps):
        return 1
    print("      evaluating its EMA weights on the whole test split")
    metrics = {"tokenizer": evaluate_workdir(tokenizer, os.path.join(out, "reconstructions.png"))}
    tok = metrics["tokenizer"]
    print(
        f"      test PSNR {tok['psnr']:.2f} dB (mean-colour baseline "
        f"{tok['mean_colour_psnr']:.2f} dB), SSIM {tok['ssim']:.3f}, codebook usage "
        f"{100 * tok['codebook_usage']:.1f}%"
    )

    generator = os.path.join(out, "generator")
    print(f"[3/4] training the tiny AR generator on its tokens in {generator}")
    if not _train(
        "configs/ar.py:tokenizer=vq2d,tiny",
        generator,
        data_dir,
        args.generator_steps,
        tokenizer_workdir=tokenizer,
    ):
        return 1
    gen = evaluate_workdir(
        generator, os.path.join(generator, "eval", "preview.png"), task="generator"
    )
    metrics["generator"] = gen
    print(
        f"      test cross-entropy {gen['cross_entropy']:.3f} nats/token; frequency-only "
        f"baseline {gen['frequency_baseline_cross_entropy']:.3f}"
    )

    print("[4/4] sampling one row per class with guidance")
    samples = os.path.join(out, "samples")
    classes = load_config(generator).generator.num_classes
    argv = [
        "--workdir",
        generator,
        "--out",
        samples,
        "--num",
        str(classes * args.samples_per_class),
    ]
    if sample_cli.main(argv) != 0:
        return 1
    os.replace(os.path.join(samples, "samples.png"), os.path.join(out, "samples.png"))
    with open(os.path.join(samples, "stats.json")) as f:
        metrics["sampling"] = json.load(f)

    metrics["demo_seconds"] = time.perf_counter() - t0
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {out}/reconstructions.png, samples.png and metrics.json in "
          f"{metrics['demo_seconds']:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
