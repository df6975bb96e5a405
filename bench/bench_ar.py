r"""AR sampling benchmark: generated tokens/s with the KV cache and with full recomputation.

  python -m bench.bench_ar [--quick] [--sizes tiny,B] [--batches 1,8] [--cfg 1,4]
      [--modes cache,nocache] [--repeats 3] [--nocache-steps K] [--train] [--json out.json]

Measures, on whatever backend JAX sees (the table says which):
  - `visgen.sampling.sample` (KV cache) and `sample_no_cache` (the full
    sequence recomputed every step) for
      tiny: `AR_SIZES["tiny"]` (width 96, depth 4, 4 heads), 1024 codes,
            32 tokens (the tiny TiTok's), 10 classes;
      B:    LlamaGen GPT-B, 12 x 768, 16384 codes, 16 x 16 = 256 tokens,
            1000 classes (its parameter count: docs/results.md, "Decode speed");
    `ARGenerator`s with the categorical head, class-conditional, float32,
    random weights (a non-zero classifier, `head.zero_init=False`, so draws
    are not uniform), temperature 1, no top-k/top-p, at each batch size and
    CFG scale (scale != 1 doubles the rows; only the conditional rows count as
    generated tokens);
  - a plain memory-copy bandwidth: numpy copies a 1 GiB float32 array, counted
    as bytes read + bytes written per second (the STREAM "copy" convention);
  - a plain memory-read bandwidth: one numpy sum per CPU core over its slice
    of the same array, in threads (numpy releases the GIL), bytes read per
    second;
  - the batch-1 weight-read bound: each decode step reads every parameter
    once, so tokens/s <= bandwidth / parameter bytes (KV-cache reads, small
    beside the weights at 256 tokens, are ignored). It is given for both
    bandwidths: the copy figure is the yardstick the issue names, the read
    figure what a weight stream can actually reach on this machine;
  - with `--train`, the generator's training step for each size: the
    training loop's own jitted step (loss, gradients, AdamW, EMA; donated
    state) with `configs/ar.py`'s generator and optimizer settings for that
    size (`tiny`: its batch 32, no dropout; B: dropout 0.1, batch `--train-batch-b`)
    on random token ids, as a generator reads them from a token cache (so the
    frozen tokenizer's encode is not included): `visgen.tasks.generator.TokenBatchTask`.

Each timing is the median of `--repeats` calls after a compile-and-warm-up
call (`compile_s` is that first call). `--quick` runs only `tiny` with one
repeat. Without the cache every step runs the transformer over the whole
sequence (static shapes), so all steps cost the same: `--nocache-steps K`
times only the loop's first K steps and rates tokens/s from them (the B rows
without the cache would otherwise take minutes each on a CPU; docs/results.md,
"Decode speed"). Pick rows with `--sizes/--batches/--cfg/--modes`.
"""

import argparse
import functools
import json
import math
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.timing import time_task_step
from visgen.generators import AR_SIZES, ARGenerator
from visgen.sampling import SampleOptions, sample, sample_no_cache
from visgen.sampling import ar as ar_sampling
from visgen.tasks.generator import TokenBatchTask
from visgen.token_spec import TokenSpec

# The sampled models' head: categorical with a random (not zero-initialised) classifier.
HEAD = {"name": "categorical", "zero_init": False}
SHAPES = {
    "tiny": dict(size="tiny", vocab_size=1024, layout=(32,), num_classes=10),
    "B": dict(size="B", vocab_size=16384, layout=(16, 16), num_classes=1000),
}


def copy_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Best-of-`repeats` numpy copy bandwidth in bytes/s, counting read + write."""
    src = np.ones(int(gib * 2**30) // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch of dst's pages
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Best-of-`repeats` bytes/s of one numpy sum per CPU core, each over its slice."""
    data = np.ones(int(gib * 2**30) // 4, np.float32)
    slices = np.array_split(data, os.cpu_count() or 1)
    best = math.inf
    with ThreadPoolExecutor(len(slices)) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, slices))
            best = min(best, time.perf_counter() - t)
    return data.nbytes / best


def token_spec(shape: str) -> TokenSpec:
    """The discrete token spec of `SHAPES[shape]`."""
    return TokenSpec.discrete(SHAPES[shape]["layout"], SHAPES[shape]["vocab_size"])


def build(shape: str) -> tuple[nnx.GraphDef, nnx.State, int, int]:
    """(graphdef, state, parameter count, tokens per sample) of a random-weight model."""
    width, depth, heads = AR_SIZES[SHAPES[shape]["size"]]
    model = nnx.jit(
        lambda: ARGenerator(
            spec=token_spec(shape),
            head=HEAD,
            width=width,
            depth=depth,
            heads=heads,
            num_classes=SHAPES[shape]["num_classes"],
            rngs=nnx.Rngs(0),
        )
    )()
    graphdef, state = nnx.split(model)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return graphdef, state, int(params), model.num_tokens


def bench_train(shape: str, batch: int | None, repeats: int) -> dict:
    """The generator train step of `shape` at `batch` (None: the config's batch size):
    `bench.timing.time_task_step`'s fields."""
    from visgen.config import load_config_file
    from visgen.train.optim import OptimConfig

    spec = SHAPES[shape]
    config = load_config_file(
        "configs/ar.py:tiny" if shape == "tiny" else f"configs/ar.py:size={shape}"
    )
    generator = dict(config.generator.to_dict(), num_classes=spec["num_classes"])
    batch = batch or config.data.batch_size
    task = TokenBatchTask(generator, token_spec(shape))
    rng = np.random.default_rng(0)
    num_tokens = math.prod(spec["layout"])
    arrays = {
        "tokens": jnp.asarray(rng.integers(0, spec["vocab_size"], (batch, num_tokens)), jnp.int32),
        "label": jnp.asarray(rng.integers(0, spec["num_classes"], (batch,)), jnp.int32),
    }
    timing = time_task_step(task, OptimConfig(**config.optim), arrays, repeats)
    return {"model": shape, "batch": batch, "tokens": num_tokens, **timing}


def time_sampler(fn, repeats: int) -> tuple[float, float, dict]:
    """`fn() -> (tokens, stats)`: (first call s, median of `repeats` later calls, stats)."""
    t = time.perf_counter()
    jax.block_until_ready(fn()[0])
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tokens, stats = fn()
        jax.block_until_ready(tokens)
        times.append(time.perf_counter() - t)
    return first, statistics.median(times), stats


def first_steps_no_cache(graphdef, state, labels, options, steps: int):
    """The no-cache decode loop cut to its first `steps` steps: (tokens, stats)."""
    tokens = ar_sampling._decode_loop_jit(
        graphdef, state, labels, jax.random.key(0), options=options, use_cache=False,
        nocache_steps=steps,
    )  # fmt: skip
    return tokens, {"forward_passes": steps}


def bench(args) -> dict:
    bandwidth, read = copy_bandwidth(args.copy_gib), read_bandwidth(args.copy_gib)
    print(
        f"memory bandwidth: copy {bandwidth / 1e9:.1f} GB/s (read + write), "
        f"read {read / 1e9:.1f} GB/s",
        flush=True,
    )
    results = {
        "backend": jax.default_backend(),
        "devices": str(jax.devices()),
        "copy_bandwidth_bytes_per_s": bandwidth,
        "read_bandwidth_bytes_per_s": read,
        "models": {},
        "rows": [],
    }
    samplers = {"cache": sample, "nocache": sample_no_cache}
    for shape in args.sizes:
        graphdef, state, params, num_tokens = build(shape)
        param_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
        bound, read_bound = bandwidth / param_bytes, read / param_bytes
        results["models"][shape] = {
            "params": params,
            "param_bytes": param_bytes,
            "tokens": num_tokens,
            "batch1_weight_read_bound_tokens_per_s": bound,
            "batch1_read_bandwidth_bound_tokens_per_s": read_bound,
        }
        print(
            f"{shape}: {params / 1e6:.1f}M params, {param_bytes / 1e6:.0f} MB, "
            f"batch-1 weight-read bound {bound:.1f} tokens/s at the copy bandwidth, "
            f"{read_bound:.1f} at the read bandwidth",
            flush=True,
        )
        num_classes = SHAPES[shape]["num_classes"]
        for batch in args.batches:
            labels = jnp.arange(batch, dtype=jnp.int32) % num_classes
            for cfg in args.cfg:
                options = SampleOptions(cfg_scale=cfg)
                for mode in args.modes:
                    steps = num_tokens
                    run = functools.partial(
                        samplers[mode], (graphdef, state), labels, jax.random.key(0), options
                    )
                    if mode == "nocache" and 0 < args.nocache_steps < num_tokens:
                        steps = args.nocache_steps
                        run = functools.partial(first_steps_no_cache, graphdef, state, labels,
                                                options, steps)  # fmt: skip
                    first, seconds, stats = time_sampler(run, args.repeats)
                    row = {
                        "model": shape,
                        "batch": batch,
                        "cfg": cfg,
                        "mode": mode,
                        "tokens_per_s": batch * steps / seconds,
                        "ms_per_step": 1e3 * seconds / steps,
                        "seconds": seconds,
                        "compile_s": first - seconds,
                        "forward_passes": stats["forward_passes"],
                    }
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
    if args.train:
        results["train"] = []
        for shape in args.sizes:
            batch = None if shape == "tiny" else args.train_batch_b
            row = bench_train(shape, batch, args.repeats)
            results["train"].append(row)
            print(json.dumps(row), flush=True)
    return results


def markdown(results: dict) -> str:
    lines = [
        f"backend: {results['backend']}; memory copy bandwidth "
        f"{results['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (read + write), read "
        f"{results['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s",
        "",
        "| model | params | batch | cfg | mode | tokens/s | ms/step | forward passes "
        "| compile s | batch-1 bound tokens/s (copy / read) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        m = results["models"][r["model"]]
        lines.append(
            f"| {r['model']} | {m['params'] / 1e6:.1f}M | {r['batch']} | {r['cfg']:g} "
            f"| {r['mode']} | {r['tokens_per_s']:.1f} | {r['ms_per_step']:.2f} "
            f"| {r['forward_passes']} | {r['compile_s']:.1f} "
            f"| {m['batch1_weight_read_bound_tokens_per_s']:.1f} "
            f"/ {m['batch1_read_bandwidth_bound_tokens_per_s']:.1f} |"
        )
    if results.get("train"):
        lines += [
            "",
            "| generator train step | params | batch x tokens | s/step | examples/s "
            "| GFLOP/step (XLA) | XLA peak MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["train"]:
            peak = f"{r['xla_peak_bytes'] / 1e6:.0f}" if r["xla_peak_bytes"] else "n/a"
            lines.append(
                f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['batch']} x {r['tokens']} "
                f"| {r['step_seconds']:.3f} | {r['examples_per_s']:.1f} "
                f"| {r['step_flops'] / 1e9:.1f} | {peak} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny only, one repeat")
    parser.add_argument("--sizes", default="tiny,B")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--cfg", default="1,4")
    parser.add_argument("--modes", default="cache,nocache")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--nocache-steps",
        type=int,
        default=0,
        help="time only this many steps of the no-cache loop (0: all); each costs the same",
    )
    parser.add_argument("--copy-gib", type=float, default=1.0)
    parser.add_argument("--train", action="store_true", help="also time the train step")
    parser.add_argument("--train-batch-b", type=int, default=8, help="train batch of B")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    args.sizes = ["tiny"] if args.quick else args.sizes.split(",")
    args.repeats = 1 if args.quick else args.repeats
    args.batches = [int(b) for b in args.batches.split(",")]
    args.cfg = [float(c) for c in args.cfg.split(",")]
    args.modes = args.modes.split(",")
    for name, valid, given in (
        ("sizes", SHAPES, args.sizes),
        ("modes", ("cache", "nocache"), args.modes),
    ):
        if unknown := set(given) - set(valid):
            parser.error(f"unknown {name} {sorted(unknown)}; valid: {', '.join(valid)}")
    results = bench(args)
    print(markdown(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    raise SystemExit(main())
