r"""SJD benchmark: step compression of speculative Jacobi decoding, without and with coupling.

  python -m bench.bench_sjd --workdir GEN | --random VOCAB,TOKENS,STD
      [--batches 1,16] [--windows 8,16,32]
      [--couplings none,maximal,gumbel] [--inits repeat_horizontal] [--cfg 4]
      [--top-k 5] [--calls 16] [--time] [--json out.json]

Loads a trained generator workdir as `launch.sample` does (EMA weights; only
reads it) and, at each batch size and top-k, runs `sample_sjd` for every
draft initialisation (default: the layout's default), coupling and window
with the workdir's sampling options (`config.sample` through
`visgen.tasks.generator.config_sample_options`; `--cfg`, `--top-k` and
`--temperature` override them). A config default of the head's options that
SJD cannot use (coupled Token-Shuffle windows) falls back to the head's
default, as in `launch.sample`; any head with per-token probabilities runs
(the categorical head, independent or causal Token-Shuffle windows).
`--random VOCAB,TOKENS,STD` instead runs an untrained categorical generator
over `TOKENS` tokens in a row whose weights are drawn with standard
deviation `STD` (2 classes; temperature 1, no top-k, no guidance unless
given): conditionals of high entropy whose dependence on earlier tokens
grows with `STD`, the regime in which coupled drafts pay off.

Every row makes `--calls` calls with the same keys `1 .. calls` and the
same labels (cycling through the classes across calls and rows), so rows
compare on the same seeds. Counts, not time, unless `--time`:

- `compression`: steps per sample (tokens, or Token-Shuffle windows) over the
  mean forward passes of the calls (the batch waits for its slowest row;
  plain AR: 1);
- `row compression`: the same over the rows' own pass counts, i.e. what batch
  1 gets on average (`row_step_compression`);
- `vs none`: compression over the uncoupled row's with the same batch, init
  and window;
- `accepted/pass`: draft steps accepted per verification pass of a row;
- `accept 1st / redrawn`: the acceptance rate of draft steps tested in the
  window's first slot, and of drafts the model has redrawn at least once
  (Jacobi iteration >= 1; initialised drafts excluded);
- `changed`: the fraction of drafts redrawn past the first rejection that
  changed (the flicker coupling removes).

`--time` also times plain AR (`visgen.sampling.sample`) and SJD as
`bench.bench_ar` does (one compile-and-warm-up call, then per key an AR call
and an SJD call back to back, so both see the same load): `AR ms`, `SJD ms`
(medians) and `speedup` (the median of the calls' time ratios).
"""

import argparse
import functools
import json
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.sampling import (
    COUPLINGS,
    METHODS,
    SampleOptions,
    check_sjd_args,
    default_init,
    fit_to,
    require,
    sample,
    sample_sjd,
)

NEEDS = METHODS["sjd"][1]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def load_generator(workdir: str):
    """(graphdef, state) of a trained generator, its config and class count."""
    from visgen.tasks.restore import load_trained

    config, _, model, _ = load_trained(workdir)
    return nnx.split(model.generator), config, int(config.generator.num_classes)


def random_generator(spec: str):
    """(graphdef, state) of the `--random VOCAB,TOKENS,STD` generator, no config, 2 classes.

    A small trunk (width 32, depth 2); every weight `N(0, STD)`, norm scales `N(1, 0.1)`."""
    from visgen.generators import ARGenerator
    from visgen.token_spec import TokenSpec

    vocab, tokens, std = spec.split(",")
    token_spec = TokenSpec(kind="discrete", layout=(int(tokens),), vocab_size=int(vocab))
    trunk = dict(width=32, depth=2, heads=2, mlp_multiple_of=16, num_classes=2)
    abstract = nnx.eval_shape(lambda: ARGenerator(spec=token_spec, rngs=nnx.Rngs(0), **trunk))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)

    def fill(path, x):
        scale = "weight" in jax.tree_util.keystr(path)  # RMSNorm scales
        values = rng.normal(1.0 if scale else 0.0, 0.1 if scale else float(std), x.shape)
        return jnp.asarray(values, jnp.float32)

    return (graphdef, jax.tree_util.tree_map_with_path(fill, state)), None, 2


def sjd_options(config, head, **overrides) -> SampleOptions:
    """`config.sample` with the non-None `overrides` for `head`, as SJD can run them: a
    head option left at a config default that SJD cannot use is reset to the head's
    default (as `launch.sample` does); `require` refuses the rest."""
    from visgen.tasks.generator import config_sample_options

    options = config_sample_options(config, **overrides)
    given = {k for k, v in overrides.items() if v is not None}
    options = fit_to(options, head, NEEDS, given)
    require(head, options, NEEDS, "SJD")
    return options


def _timed(fn, *args) -> tuple[float, dict]:
    t = time.perf_counter()
    tokens, stats = fn(*args)
    jax.block_until_ready(tokens)
    return time.perf_counter() - t, stats


def measure(sjd, ar, labels, calls: int, num_steps: int) -> dict:
    """`calls` SJD calls `sjd(labels[i], key(i + 1))`: their mean counts; with `ar`, also
    interleaved timings (see the module doc)."""
    row: dict = {}
    if ar is not None:
        first_ar, _ = _timed(ar, labels[0], jax.random.key(0))
        first_sjd, _ = _timed(sjd, labels[0], jax.random.key(0))
    ar_s, sjd_s, stats = [], [], []
    for i in range(calls):
        k = jax.random.key(i + 1)
        if ar is not None:
            ar_s.append(_timed(ar, labels[i], k)[0])
        seconds, st = _timed(sjd, labels[i], k)
        sjd_s.append(seconds)
        stats.append(st)
    passes = statistics.fmean(s["forward_passes"] for s in stats)
    counts = {
        name: np.sum([s["acceptance"][name] for s in stats], axis=0).tolist()
        for name in stats[0]["acceptance"]
    }
    first, redrawn = (
        (counts[f"{kind}_accepted"][lo:hi], counts[f"{kind}_tested"][lo:hi])
        for kind, lo, hi in (("slot", 0, 1), ("iteration", 1, None))
    )
    row.update(
        forward_passes=passes,
        step_compression=num_steps / passes,
        row_step_compression=statistics.fmean(s["row_step_compression"] for s in stats),
        accepted_per_pass=statistics.fmean(s["accepted_per_pass"] for s in stats),
        accept_first=sum(first[0]) / max(sum(first[1]), 1),
        accept_redrawn=sum(redrawn[0]) / max(sum(redrawn[1]), 1),
        changed=counts["changed"] / max(counts["redrawn"], 1),
        acceptance=counts,
    )
    if ar is not None:
        row.update(
            ar_seconds=statistics.median(ar_s),
            seconds=statistics.median(sjd_s),
            ar_compile_s=first_ar - statistics.median(ar_s),
            compile_s=first_sjd - statistics.median(sjd_s),
            speedup=statistics.median(a / b for a, b in zip(ar_s, sjd_s, strict=True)),
        )
    return row


def bench(args) -> dict:
    if args.random:
        graph, config, num_classes = random_generator(args.random)
    else:
        graph, config, num_classes = load_generator(args.workdir)
    model = nnx.merge(*graph)
    # SJD's drafts and passes are per step (a token, or a Token-Shuffle window).
    layout, num_steps = model.step_layout, model.num_steps
    inits = args.inits or [default_init(layout)]
    for init in inits:
        for window in args.windows:
            for coupling in args.couplings:
                check_sjd_args(layout, window, init, coupling)
    results = {
        "workdir": f"random:{args.random}" if args.random else os.path.abspath(args.workdir),
        "layout": list(model.spec.layout),
        "step_layout": list(layout),
        "tokens_per_step": model.tokens_per_step,
        "head": model.head.describe(model.head.Options()),
        "backend": jax.default_backend(),
        "devices": str(jax.devices()),
        "cpu_count": os.cpu_count(),
        "num_tokens": model.num_tokens,
        "num_steps": num_steps,
        "calls": args.calls,
        "rows": [],
    }
    for top_k in args.top_k or [None]:
        if config is None:  # --random
            temperature = 1.0 if args.temperature is None else args.temperature
            options = SampleOptions(
                temperature=temperature,
                cfg_scale=args.cfg or 1.0,
                head=model.head.Options(top_k=top_k or 0),
            )
        else:
            options = sjd_options(
                config, model.head, top_k=top_k, cfg_scale=args.cfg, temperature=args.temperature
            )
        top_k = options.head_options(model.head).top_k
        for batch in args.batches:
            # Call i samples classes i * batch, i * batch + 1, ... (cycling).
            labels = (jnp.arange(args.calls * batch, dtype=jnp.int32) % num_classes).reshape(
                args.calls, batch
            )
            ar = functools.partial(sample, graph, options=options) if args.time else None
            for init in inits:
                for window in args.windows:
                    for coupling in args.couplings:
                        sjd = functools.partial(
                            sample_sjd,
                            graph,
                            options=options,
                            window=window,
                            init=init,
                            coupling=coupling,
                        )
                        row = dict(batch=batch, cfg=options.cfg_scale, top_k=top_k, init=init)
                        row.update(window=window, coupling=coupling)
                        row.update(measure(sjd, ar, labels, args.calls, num_steps))
                        results["rows"].append(row)
                        printed = {k: v for k, v in row.items() if k != "acceptance"}
                        print(json.dumps(printed), flush=True)
    return results


def markdown(results: dict) -> str:
    timed = "seconds" in results["rows"][0] if results["rows"] else False
    head = (
        f"backend: {results['backend']} ({results['cpu_count']} CPUs); {results['head']}; "
        f"step layout {tuple(results['step_layout'])} ({results['num_steps']} steps of "
        f"{results['tokens_per_step']} token(s)); {results['calls']} calls per row"
    )
    columns = [
        "batch",
        "cfg",
        "top-k",
        "init",
        "coupling",
        "window",
        "forward passes",
        "compression",
        "vs none",
        "row compression",
        "accepted/pass",
        "accept 1st / redrawn",
        "changed",
    ] + (["AR ms", "SJD ms", "speedup"] if timed else [])
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    uncoupled = {
        (r["batch"], r["top_k"], r["init"], r["window"]): r["step_compression"]
        for r in results["rows"]
        if r["coupling"] == "none"
    }
    for r in results["rows"]:
        base = uncoupled.get((r["batch"], r["top_k"], r["init"], r["window"]))
        cells = [
            r["batch"],
            f"{r['cfg']:g}",
            r["top_k"],
            r["init"],
            r["coupling"],
            r["window"],
            f"{r['forward_passes']:.1f}",
            f"{r['step_compression']:.2f}",
            "-" if base is None else f"{r['step_compression'] / base:.2f}",
            f"{r['row_step_compression']:.2f}",
            f"{r['accepted_per_pass']:.2f}",
            f"{r['accept_first']:.2f} / {r['accept_redrawn']:.2f}",
            f"{r['changed']:.2f}",
        ]
        if timed:
            cells += [f"{1e3 * r['ar_seconds']:.1f}", f"{1e3 * r['seconds']:.1f}"]
            cells.append(f"{r['speedup']:.2f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a trained generator workdir")
    source.add_argument("--random", default="", help="VOCAB,TOKENS,STD: an untrained generator")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--windows", default="8,16,32")
    parser.add_argument("--couplings", default=",".join(COUPLINGS))
    parser.add_argument("--inits", default="", help="default: the step layout's default")
    parser.add_argument("--cfg", type=float, default=None, help="default: the config's")
    parser.add_argument("--top-k", default="", help="comma-separated; default: the config's")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--calls", type=int, default=16, help="calls (keys) per row")
    parser.add_argument("--time", action="store_true", help="also time against plain AR")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    args.batches, args.windows, args.top_k = (
        _ints(args.batches),
        _ints(args.windows),
        _ints(args.top_k),
    )
    args.inits, args.couplings = _names(args.inits), _names(args.couplings)
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
