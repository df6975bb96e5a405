r"""SJD benchmark: step compression and wall-clock speedup of speculative Jacobi decoding.

  python -m bench.bench_sjd --workdir GEN [--batches 1,16] [--windows 8,16,32]
      [--inits random,repeat_horizontal,repeat_vertical] [--cfg 4] [--top-k 0,100]
      [--calls 16] [--json out.json]

Loads a trained generator workdir as `launch.sample` does (EMA weights; only
reads it) and, at each batch size and top-k, times plain AR sampling
(`visgen.sampling.sample`, KV cache) and `sample_sjd` for every draft
initialisation valid for the model's step layout (its tokens, or its
Token-Shuffle windows) and every window, with the workdir's sampling options
(`config.sample` through `visgen.tasks.generator.config_sample_options`;
`--cfg`, `--top-k` and `--temperature` override them). A config default of
the head's options that SJD cannot use (coupled Token-Shuffle windows) falls
back to the head's default, as in `launch.sample`; a head without exact
per-token probabilities (a causal window head) is refused. Labels cycle
through the classes.

Timing follows `bench.bench_ar` (one compile-and-warm-up call, then the
median of `--calls` calls), with two changes for SJD on a shared machine:
every call draws with its own key, since SJD's work depends on the draw, and
AR and SJD calls alternate with the same key, so both see the same load. Per
row:

- `compression`: steps per sample (tokens, or Token-Shuffle windows) over the
  mean forward passes of the timed calls (the batch waits for its slowest
  row; plain AR: 1);
- `row compression`: the same over the rows' own pass counts, i.e. what batch
  1 gets on average (`row_step_compression`);
- `accepted/pass`: drafts accepted per verification pass of a row;
- `AR ms`, `SJD ms`: median seconds per call;
- `pass cost`: SJD's seconds per forward pass over AR's (a window of `L`
  steps against one step);
- `speedup`: the median over rounds of AR's time over SJD's.
"""

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.generators import EXACT_PROBS
from visgen.sampling import SampleOptions, check_sjd_args, inits_for, require, sample, sample_sjd


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def load_generator(workdir: str):
    """(graphdef, state) of a trained generator, its config and class count."""
    from visgen.tasks.restore import load_trained

    config, _, model, _ = load_trained(workdir)
    return nnx.split(model.generator), config, int(config.generator.num_classes)


def sjd_options(config, head, **overrides) -> SampleOptions:
    """`config.sample` with the non-None `overrides` for `head`, as SJD can run them: a
    head option left at a config default that denies exact per-token probabilities is
    reset to the head's default (as `launch.sample` does); `require` refuses the rest."""
    from visgen.tasks.generator import config_sample_options

    options = config_sample_options(config, **overrides)
    if EXACT_PROBS not in head.capabilities(options.head_options(head)):
        given = {k for k, v in overrides.items() if v is not None}
        defaults = head.Options()
        for field in dataclasses.fields(defaults):
            if field.name in given:
                continue
            trial = dataclasses.replace(options.head, **{field.name: getattr(defaults, field.name)})
            if EXACT_PROBS in head.capabilities(trial):
                options = dataclasses.replace(options, head=trial)
                break
    require(head, options, EXACT_PROBS, "SJD")
    return options


def _timed(fn, key: jax.Array) -> tuple[float, dict]:
    t = time.perf_counter()
    tokens, stats = fn(key)
    jax.block_until_ready(tokens)
    return time.perf_counter() - t, stats


def compare(ar, sjd, calls: int, num_steps: int) -> dict:
    """Interleaved timing of two samplers `fn(key) -> (tokens, stats)`.

    One compile-and-warm-up call each, then `calls` rounds of an AR call and an
    SJD call with the same fresh key, back to back, so both see the same
    machine load (this CPU is shared); the speedup is the median of the
    rounds' time ratios.
    """
    first_ar, _ = _timed(ar, jax.random.key(0))
    first_sjd, _ = _timed(sjd, jax.random.key(0))
    ar_s, sjd_s, stats = [], [], []
    for i in range(1, calls + 1):
        ar_s.append(_timed(ar, jax.random.key(i))[0])
        seconds, st = _timed(sjd, jax.random.key(i))
        sjd_s.append(seconds)
        stats.append(st)
    passes = statistics.fmean(s["forward_passes"] for s in stats)
    return {
        "ar_seconds": statistics.median(ar_s),
        "seconds": statistics.median(sjd_s),
        "ar_compile_s": first_ar - statistics.median(ar_s),
        "compile_s": first_sjd - statistics.median(sjd_s),
        "forward_passes": passes,
        "step_compression": num_steps / passes,
        "row_step_compression": statistics.fmean(s["row_step_compression"] for s in stats),
        "accepted_per_pass": statistics.fmean(s["accepted_per_pass"] for s in stats),
        "speedup": statistics.median(a / b for a, b in zip(ar_s, sjd_s, strict=True)),
    }


def bench(args) -> dict:
    graph, config, num_classes = load_generator(args.workdir)
    model = nnx.merge(*graph)
    # SJD's drafts and passes are per step (a token, or a Token-Shuffle window).
    layout, num_steps = model.step_layout, model.num_steps
    inits = args.inits or list(inits_for(layout))
    for init in inits:
        for window in args.windows:
            check_sjd_args(layout, window, init)
    results = {
        "workdir": os.path.abspath(args.workdir),
        "layout": list(model.spec.layout),
        "step_layout": list(layout),
        "backend": jax.default_backend(),
        "devices": str(jax.devices()),
        "cpu_count": os.cpu_count(),
        "num_tokens": model.num_tokens,
        "num_steps": num_steps,
        "load_average_start": os.getloadavg(),
        "rows": [],
    }
    for top_k in args.top_k or [None]:
        options = sjd_options(
            config, model.head, top_k=top_k, cfg_scale=args.cfg, temperature=args.temperature
        )
        top_k = options.head_options(model.head).top_k
        for batch in args.batches:
            labels = jnp.arange(batch, dtype=jnp.int32) % num_classes
            ar = functools.partial(sample, graph, labels, options=options)
            for init in inits:
                for window in args.windows:
                    sjd = functools.partial(
                        sample_sjd, graph, labels, options=options, window=window, init=init
                    )
                    row = dict(batch=batch, cfg=options.cfg_scale, top_k=top_k, init=init)
                    row.update(window=window, **compare(ar, sjd, args.calls, num_steps))
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
    results["load_average_end"] = os.getloadavg()
    return results


def markdown(results: dict) -> str:
    load = ", ".join(
        f"{a:.1f}" for a in (*results["load_average_start"], *results["load_average_end"])
    )
    lines = [
        f"backend: {results['backend']} ({results['cpu_count']} CPUs); step layout "
        f"{tuple(results['step_layout'])}; load average (1, 5, 15 min) at start and end: {load}",
        "",
        "| batch | cfg | top-k | init | window | forward passes | compression "
        "| row compression | accepted/pass | AR ms | SJD ms | pass cost | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    num_steps = results["num_steps"]
    for r in results["rows"]:
        pass_cost = (r["seconds"] / r["forward_passes"]) / (r["ar_seconds"] / num_steps)
        cells = [
            r["batch"],
            f"{r['cfg']:g}",
            r["top_k"],
            r["init"],
            r["window"],
            f"{r['forward_passes']:.1f}",
            *(f"{r[k]:.2f}" for k in ("step_compression", "row_step_compression")),
            f"{r['accepted_per_pass']:.2f}",
            *(f"{1e3 * r[k]:.1f}" for k in ("ar_seconds", "seconds")),
            f"{pass_cost:.2f}",
            f"{r['speedup']:.2f}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained generator workdir")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--windows", default="8,16,32")
    parser.add_argument("--inits", default="", help="default: every init valid for the step layout")
    parser.add_argument("--cfg", type=float, default=None, help="default: the config's")
    parser.add_argument("--top-k", default="", help="comma-separated; default: the config's")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--calls", type=int, default=16, help="timed calls per row")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    args.batches, args.windows, args.top_k = (
        _ints(args.batches),
        _ints(args.windows),
        _ints(args.top_k),
    )
    args.inits = [i for i in args.inits.split(",") if i]
    if args.calls < 1:
        parser.error(f"--calls must be >= 1, got {args.calls}")
    try:
        results = bench(args)
    except ValueError as e:
        parser.error(str(e))
    print(markdown(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    raise SystemExit(main())
