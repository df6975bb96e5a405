r"""Token-Shuffle benchmark: windows 1, 2 and 4 on `shapes` at 128 px (16 x 16 vq2d tokens).

  python -m bench.bench_shuffle [--out outputs/bench_shuffle] [--windows 1,2,4] \
      [--budget-s 300] [--tokenizer-steps 400] [--fid-samples 500] [--equal-steps-of 2] \
      [--json results.json]

What it tests: Token-Shuffle's claim (Ma et al. 2025) that a window `s = 2`
gives ~4x fewer positions and training FLOPs with little loss in quality,
at equal model size and equal training time. Stages, each cached under
`--out` (a rerun skips what is done and resumes an interrupted training):

1. data: `shapes` at 128 px (`visgen.data.ensure_built`, builder config "128").
2. tokenizer: `configs/vq2d.py:tiny` with 128 px inputs and patch 8 (ViT
   backbone, 16 x 16 = 256 tokens, 1024 x 8 codes, batch `--tokenizer-batch`)
   through `launch.train` for `--tokenizer-steps`; its rFID on
   `--rfid-examples` test images.
3. timing, in this process, for every window: the real generator train step
   (the frozen tokenizer tokenizes the batch, loss, gradients, AdamW, EMA;
   donated state; batch 32 of real images) after compilation: median step
   time and examples/s, XLA's FLOP count of the generator's forward +
   backward per example, parameters, and the time to fetch a batch.
4. training: each window trains `configs/ar.py:tokenizer=vq2d,tiny` (width
   128, depth 4, 4 heads: the same trunk) through `launch.train` for
   `budget / (step + batch fetch)` steps, i.e. the same training time: window
   1 with the categorical head, a window `s > 1` with the variant `shuffle=s`
   (`generator.head`: `token_shuffle` with `window=s`), whose sampling
   defaults are reset to window 1's (`sample.top_k=0`, `sample.coupled=False`:
   independent window draws); batch, steps and optimizer are set alike for
   every window. The table gives the wall time the launcher logged (it
   includes compilation). The warm-up is a tenth of the steps for every window
   (the tiny config's fixed 50 steps would leave the slowest window in warm-up
   for its whole budget).
5. sampling speed, in this process: forward passes and seconds per image at
   batch 1 and at `--sample-batch`, classifier-free guidance 4, KV cache,
   median of `--repeats` after a compile call.
6. quality: `--fid-samples` samples per window and CFG schedule
   (`constant` and `half-linear`, guidance 4) through `launch.sample`, and
   their FID under the `shapes` feature network (`visgen.evaluation`; 128-d
   classifier features, a FID-like number comparable only with itself)
   against the 1,000-image test split; test cross-entropy from the
   launcher's final evaluation.
7. with `--equal-steps-of W`: every window also trains for the step count
   window W's budget gave (the same examples seen) and gets FIDs, to
   separate shuffling's quality cost from its speed.

Prints a markdown table (and writes `<out>/table.md` and `<out>/results.json`).
Timings are wall-clock on whatever machine runs it; under CPU contention
compare only rows measured in the same run.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.bench_ar import time_sampler
from bench.timing import time_train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES, PATCH = 128, 8
GUIDANCE = 4.0


# ------------------------------------------------------------------ configs and the launcher


def tokenizer_overrides(args) -> dict:
    return {
        "data.data_dir": args.data_dir,
        "data.builder_config": str(RES),
        "data.image_size": RES,
        "data.batch_size": args.tokenizer_batch,
        "tokenizer.image_size": RES,
        "tokenizer.patch_size": PATCH,
        "train.steps": args.tokenizer_steps,
        "train.log_every": max(1, args.tokenizer_steps // 10),
        "train.eval_every": args.tokenizer_steps,
        "train.checkpoint_every": args.tokenizer_steps,
        "train.eval_examples": args.eval_examples,
    }


def generator_spec(window: int) -> str:
    """The config of window `window`: `GENERATOR_SPEC` (the categorical head) for 1, else
    its variant `shuffle=window` (the `token_shuffle` head, independent window draws)."""
    return GENERATOR_SPEC if window == 1 else f"{GENERATOR_SPEC},shuffle={window}"


def generator_overrides(args, window: int, steps: int) -> dict:
    """Overrides of `generator_spec(window)`: the same data, trunk, optimizer and steps for
    every window; the `shuffle=S` variant's tiny sampling defaults (top-k 3, coupled
    windows) go back to window 1's (top-k 0, independent window draws)."""
    head = {}
    if window > 1:
        head = {"generator.head.window": window, "sample.top_k": 0, "sample.coupled": False}
    return {
        "tokenizer_workdir": tokenizer_dir(args),
        "data.data_dir": args.data_dir,
        "data.builder_config": str(RES),
        "data.image_size": RES,
        "data.batch_size": args.batch_size,
        **head,
        # As measured in docs/results.md (before `tiny` dropped its dropout and
        # went from width 128 at lr 1e-3 to width 96 at lr 2e-3).
        "generator.resid_dropout": 0.1,
        "generator.token_dropout": 0.1,
        "generator.width": 128,
        "optim.lr": 1e-3,
        "optim.warmup_steps": max(1, steps // 10),
        "train.steps": steps,
        "train.log_every": max(1, steps // 10),
        "train.eval_every": steps,
        "train.checkpoint_every": steps,
        "train.eval_examples": args.eval_examples,
    }


# 1024 codes as measured in docs/results.md (`tiny`'s default is now 128).
TOKENIZER_SPEC = "configs/vq2d.py:tiny,codes=1024"
GENERATOR_SPEC = "configs/ar.py:tokenizer=vq2d,tiny"


def tokenizer_dir(args) -> str:
    return os.path.join(args.out, "tokenizer")


def generator_dir(args, name: str) -> str:
    return os.path.join(args.out, f"generator_{name}")


def load_config(spec: str, overrides: dict):
    """Config file `spec` with dotted-key `overrides`, as `--config.k=v` flags set them."""
    from visgen.config import load_config_file

    config = load_config_file(os.path.join(REPO, spec))
    with config.unlocked():
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            node[leaf] = value
    return config


def final_eval(workdir: str, steps: int) -> dict | None:
    """The launcher's evaluation at `steps` (written once training is done), or None."""
    path = os.path.join(workdir, "eval", f"step_{steps:07d}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def train_with_launcher(spec: str, workdir: str, overrides: dict) -> dict:
    """Trains through `python -m launch.train` (resuming) unless done; returns its final eval."""
    steps = overrides["train.steps"]
    if (done := final_eval(workdir, steps)) is not None:
        print(f"reusing {workdir} (trained {steps} steps)", flush=True)
        return done
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    cmd = [sys.executable, "-m", "launch.train", f"--config={spec}", f"--workdir={workdir}"]
    print("$ " + " ".join(cmd + flags), flush=True)
    subprocess.run(cmd + flags, cwd=REPO, check=True)
    return final_eval(workdir, steps)


def train_seconds(workdir: str, steps: int) -> float:
    """The launcher's `elapsed_s` at its last train log line (after the final step, before
    the final evaluation; it includes compilation)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    last = [r for r in rows if r.get("step") == steps and "train/elapsed_s" in r]
    return float(last[-1]["train/elapsed_s"]) if last else math.nan


# ------------------------------------------------------------------ measurements


def generator_flops(generator: nnx.Module, tokens: jax.Array, labels: jax.Array) -> float:
    """XLA's FLOP count of the generator's loss forward + backward on `tokens` (no dropout)."""
    graphdef, params, rest = nnx.split(generator, nnx.Param, ...)

    def loss(p):
        return nnx.merge(graphdef, p, rest).loss(tokens, labels)

    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return float(compiled.cost_analysis()["flops"])


def fusion_params(generator: nnx.Module) -> int:
    """Parameters Token-Shuffle adds: the input fusion (the step embedding's
    `TokenShuffle`) and the window head apart from its classifier (`categorical`)."""
    from visgen.generators.token_shuffle import TokenShuffle

    if generator.tokens_per_step == 1:
        return 0

    def count(module: nnx.Module) -> int:
        return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

    fusion = [node for _, node in nnx.iter_graph(generator) if isinstance(node, TokenShuffle)]
    head = generator.head
    return sum(count(m) for m in fusion) + count(head) - count(head.categorical)


def time_generator(args, window: int) -> dict:
    """Train-step timing, FLOPs and sizes of the window-`window` generator (no training)."""
    from visgen.data import DataConfig, make_train_iterator
    from visgen.tasks import make_task

    config = load_config(generator_spec(window), generator_overrides(args, window, 1000))
    data = make_train_iterator(DataConfig(**config.data))
    fetch = []
    for _ in range(args.repeats + 1):
        t = time.perf_counter()
        batch = next(data)
        fetch.append(time.perf_counter() - t)
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    timing = time_train_step(config, batch, args.repeats)
    model = make_task(config).build(nnx.Rngs(0))
    generator = model.generator
    tokens = model.tokenizer.encode(batch["image"]).tokens.reshape(args.batch_size, -1)
    flops = generator_flops(generator, tokens, batch["label"])
    fusion = fusion_params(generator)
    return {
        **timing,
        "window": window,
        "tokens": generator.num_tokens,
        "positions": generator.num_steps,
        "generator_params": int(timing["params"]),
        "params_without_fusion": int(timing["params"] - fusion),
        "generator_flops_per_example": flops / args.batch_size,
        "fetch_seconds": float(np.median(fetch[1:])),
    }


def time_sampling(args, workdir: str) -> dict:
    """Seconds and forward passes per image with the KV cache at batch 1 and `--sample-batch`."""
    from visgen.sampling import SampleOptions, sample
    from visgen.tasks.restore import load_trained

    _, task, model, _ = load_trained(workdir)
    split = nnx.split(model.generator)
    options = SampleOptions(cfg_scale=GUIDANCE, cfg_schedule="half-linear")
    out = {}
    for batch in (1, args.sample_batch):
        labels = jnp.arange(batch, dtype=jnp.int32) % task.num_classes
        run = lambda: sample(split, labels, jax.random.key(0), options)  # noqa: B023
        first, seconds, stats = time_sampler(run, args.repeats)
        out[f"batch{batch}"] = {
            "batch": batch,
            "seconds_per_image": seconds / batch,
            "compile_seconds": first - seconds,
            "forward_passes": stats["forward_passes"],
        }
    return out


def sample_fid(args, name: str, schedule: str) -> dict:
    """`--fid-samples` samples of generator `name` through `launch.sample` and their FID
    against the test split."""
    from launch import sample as sample_cli
    from visgen.evaluation import generation_fid, load_features, load_samples

    out = os.path.join(args.out, f"samples_{name}_{schedule}")
    result_path = os.path.join(out, "fid.json")
    if os.path.isfile(result_path):
        with open(result_path) as f:
            return json.load(f)
    argv = ["--workdir", generator_dir(args, name), "--out", out, "--num", str(args.fid_samples)]
    argv += ["--batch-size", str(args.sample_batch), "--cfg", str(GUIDANCE)]
    if sample_cli.main([*argv, "--cfg-schedule", schedule, "--seed", "1"]) != 0:
        raise RuntimeError(f"launch.sample failed for {name}")
    images = load_samples(os.path.join(out, "samples.npz"))
    result = generation_fid(
        images,
        load_features("shapes"),
        samples_name=out,
        ref_dataset="shapes",
        ref_split="test",
        ref_config=str(RES),
        data_dir=args.data_dir,
    )
    with open(os.path.join(out, "stats.json")) as f:
        result["sampling"] = json.load(f)
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)
    return result


def cached(args, name: str, compute):
    """`compute()` once, kept as JSON at `<out>/<name>.json`."""
    path = os.path.join(args.out, f"{name}.json")
    if not os.path.isfile(path):
        value = compute()
        with open(path, "w") as f:
            json.dump(value, f, indent=2)
    with open(path) as f:
        return json.load(f)


def tokenizer_rfid(args) -> dict:
    from visgen.evaluation import load_features, workdir_fid

    features = load_features("shapes")
    return workdir_fid(
        tokenizer_dir(args), features, data_dir=args.data_dir, max_examples=args.rfid_examples
    )


def budget_steps(args, timing: dict) -> int:
    """Steps that fill the training budget at the measured step and batch-fetch time."""
    return max(1, round(args.budget_s / (timing["step_seconds"] + timing["fetch_seconds"])))


def train_and_score(args, window: int, steps: int, name: str) -> dict:
    """Trains generator `name` (window `window`) for `steps`, then its FID per schedule."""
    print(f"[train] {name}: window {window}, {steps} steps", flush=True)
    workdir = generator_dir(args, name)
    gen_eval = train_with_launcher(
        generator_spec(window), workdir, generator_overrides(args, window, steps)
    )
    return {
        "window": window,
        "steps": steps,
        "train_seconds": train_seconds(workdir, steps),
        "test_cross_entropy": gen_eval["cross_entropy"],
        "frequency_baseline_cross_entropy": gen_eval["frequency_baseline_cross_entropy"],
        "fid": {s: sample_fid(args, name, s)["fid"] for s in ("constant", "half-linear")},
    }


def bench_window(args, window: int, timing: dict) -> dict:
    """Window `window` trained for the budget: its FID, and its sampling speed."""
    row = train_and_score(args, window, budget_steps(args, timing), f"s{window}")
    print(f"[sample] window {window}", flush=True)
    workdir = generator_dir(args, f"s{window}")
    sampling = cached(args, f"sampling_s{window}", lambda: time_sampling(args, workdir))
    return {**row, "timing": timing, "sampling": sampling}


def bench_equal_steps(args, window: int, steps: int, timing: dict) -> dict:
    """Window `window` trained for `steps` (reusing the budget run when it had as many)."""
    same = budget_steps(args, timing) == steps
    return train_and_score(args, window, steps, f"s{window}" if same else f"s{window}_n{steps}")


# ------------------------------------------------------------------ report


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(results: dict) -> str:
    tok, rows, big = results["tokenizer"], results["windows"], results["sample_batch"]
    intro = (
        f"backend: {results['backend']}; tokenizer: vq2d ViT, patch {PATCH}, {RES} px -> "
        f"16 x 16 tokens, {tok['steps']} steps, test PSNR {tok['psnr']:.2f} dB, "
        f"rFID {tok['rfid']:.2f} on {tok['rfid_examples']} test images (shapes features); "
        f"generators: width 128, depth 4, 4 heads, batch 32, {results['budget_s']:.0f} s "
        "of training each"
    )
    training = table(
        ["window s", "positions / image", "params (fusion MLPs)", "fwd+bwd GFLOP / example",
         "train step s", "examples/s", "steps in budget", "launcher train wall s",
         "test CE nats/token"],
        [
            [str(r["window"]), str(t["positions"]),
             f"{t['generator_params'] / 1e6:.2f}M "
             f"({(t['generator_params'] - t['params_without_fusion']) / 1e6:.2f}M)",
             f"{t['generator_flops_per_example'] / 1e9:.2f}", f"{t['step_seconds']:.3f}",
             f"{t['examples_per_s']:.1f}", str(r["steps"]), f"{r['train_seconds']:.0f}",
             f"{r['test_cross_entropy']:.3f}"]
            for r in rows
            for t in [r["timing"]]
        ],
    )  # fmt: skip
    sampling = table(
        ["window s", "forward passes / image", "s / image, batch 1", f"s / image, batch {big}",
         f"FID, constant CFG {GUIDANCE:g}", f"FID, half-linear CFG {GUIDANCE:g}"],
        [
            [str(r["window"]), str(s["batch1"]["forward_passes"]),
             f"{s['batch1']['seconds_per_image']:.3f}",
             f"{s[f'batch{big}']['seconds_per_image']:.4f}",
             f"{r['fid']['constant']:.2f}", f"{r['fid']['half-linear']:.2f}"]
            for r in rows
            for s in [r["sampling"]]
        ],
    )  # fmt: skip
    lines = [intro, "", *training, "", *sampling]
    if results.get("equal_steps"):
        lines += ["", *table(
            ["window s", "steps", "launcher train wall s", "test CE nats/token",
             f"FID, constant CFG {GUIDANCE:g}", f"FID, half-linear CFG {GUIDANCE:g}"],
            [
                [str(r["window"]), str(r["steps"]), f"{r['train_seconds']:.0f}",
                 f"{r['test_cross_entropy']:.3f}", f"{r['fid']['constant']:.2f}",
                 f"{r['fid']['half-linear']:.2f}"]
                for r in results["equal_steps"]
            ],
        )]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/bench_shuffle")
    parser.add_argument("--data-dir", default="", help="TFDS data dir (default <out>/../data)")
    parser.add_argument("--windows", default="1,2,4")
    parser.add_argument("--budget-s", type=float, default=300.0, help="training s per window")
    parser.add_argument("--tokenizer-steps", type=int, default=400)
    parser.add_argument("--tokenizer-batch", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--rfid-examples", type=int, default=1000)
    parser.add_argument("--fid-samples", type=int, default=500)
    parser.add_argument("--sample-batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--equal-steps-of",
        type=int,
        default=0,
        help="also train every window for as many steps as this window's budget gave",
    )
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    args.data_dir = os.path.abspath(args.data_dir or os.path.join(args.out, "..", "data"))
    windows = [int(w) for w in args.windows.split(",")]
    os.makedirs(args.out, exist_ok=True)

    from visgen.data import ensure_built
    from visgen.runtime import enable_compilation_cache

    enable_compilation_cache()
    t0 = time.perf_counter()
    ensure_built("shapes", str(RES), args.data_dir)
    print(f"[tokenizer] {TOKENIZER_SPEC} at {RES} px, patch {PATCH}", flush=True)
    tok_eval = train_with_launcher(TOKENIZER_SPEC, tokenizer_dir(args), tokenizer_overrides(args))
    rfid = cached(args, "tokenizer_rfid", lambda: tokenizer_rfid(args))

    timings = {}
    for w in windows:
        print(f"[timing] window {w}", flush=True)
        timings[w] = cached(args, f"timing_s{w}", lambda: time_generator(args, w))  # noqa: B023
    rows = [bench_window(args, w, timings[w]) for w in windows]
    equal = []
    if args.equal_steps_of:
        steps = budget_steps(args, timings[args.equal_steps_of])
        equal = [bench_equal_steps(args, w, steps, timings[w]) for w in windows]

    results = {
        "backend": jax.default_backend(),
        "devices": str(jax.devices()),
        "budget_s": args.budget_s,
        "sample_batch": args.sample_batch,
        "fid_samples": args.fid_samples,
        "tokenizer": {
            "steps": args.tokenizer_steps,
            "psnr": tok_eval["psnr"],
            "ssim": tok_eval["ssim"],
            "codebook_usage": tok_eval["codebook_usage"],
            "rfid": rfid["rfid"],
            "rfid_examples": args.rfid_examples,
        },
        "windows": rows,
        "equal_steps": equal,
        "bench_seconds_this_run": time.perf_counter() - t0,
    }
    text = markdown(results)
    print(text)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    for path in (os.path.join(args.out, "results.json"), args.json):
        if path:
            with open(path, "w") as f:
                json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    raise SystemExit(main())
