r"""`make demo`: the end-to-end CPU pipeline on the embedded `shapes` dataset.

  python -m launch.demo --out outputs/demo [--steps 2500]

1. builds `shapes` (32 px) into `<out>/../data` if missing;
2. trains tiny TiTok (`configs/titok.py:tiny`) in `<out>/tokenizer` (resumes if
   interrupted; a finished run is reused);
3. evaluates the EMA tokenizer on the whole test split and writes
   `<out>/metrics.json` and `<out>/reconstructions.png` (originals above
   reconstructions), printing PSNR, SSIM, codebook usage and the mean-colour
   baseline.
"""

import argparse
import json
import os
import sys
import time

from absl import logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--steps", type=int, default=0, help="0 = the tiny config's steps")
    parser.add_argument("--data-dir", default="", help="default: <out>/../data")
    args = parser.parse_args(argv)

    from evals.recon import evaluate_workdir
    from visgen.config import load_config_file
    from visgen.data import DataConfig, ensure_built
    from visgen.runtime import enable_compilation_cache
    from visgen.tasks import make_task
    from visgen.train.loop import TrainConfig, train
    from visgen.train.optim import OptimConfig
    from visgen.train.workdir import save_config

    t0 = time.perf_counter()
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    enable_compilation_cache()
    out = os.path.abspath(args.out)
    data_dir = os.path.abspath(args.data_dir or os.path.join(out, "..", "data"))
    config = load_config_file("configs/titok.py:tiny")
    with config.unlocked():
        config.data.data_dir = data_dir
        if args.steps:
            config.train.steps = args.steps
    print(f"[1/3] dataset shapes/32 in {data_dir}")
    ensure_built("shapes", "", data_dir)

    workdir = os.path.join(out, "tokenizer")
    print(f"[2/3] training tiny TiTok for {config.train.steps} steps in {workdir}")
    save_config(workdir, config)
    task = make_task(config)
    result = train(
        task,
        workdir,
        TrainConfig(**config.train),
        DataConfig(**config.data),
        OptimConfig(**config.optim),
    )
    if result.stopped_by:
        print(f"demo interrupted ({result.stopped_by}); run it again to resume")
        return 1

    print("[3/3] evaluating the EMA tokenizer on the whole test split")
    metrics = evaluate_workdir(workdir, os.path.join(out, "reconstructions.png"))
    metrics["demo_seconds"] = time.perf_counter() - t0
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(
        f"test PSNR {metrics['psnr']:.2f} dB (mean-colour baseline "
        f"{metrics['mean_colour_psnr']:.2f} dB), SSIM {metrics['ssim']:.3f}, codebook usage "
        f"{100 * metrics['codebook_usage']:.1f}%, perplexity {metrics['perplexity']:.1f}"
    )
    print(f"wrote {out}/reconstructions.png and metrics.json in {metrics['demo_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
