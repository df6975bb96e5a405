r"""Micro-benchmark of the AR decode step's matmuls on XLA CPU (and torch), per XLA_FLAGS variant.

  python -m bench.bench_decode_matmul [--rows 1,8,16] [--rounds 3] [--torch]
      [--variant NAME=XLA_FLAGS ...] [--iters 8] [--stream-mib 96] [--json out.json]

One decode step of LlamaGen GPT-B (width 768, SwiGLU hidden 2048, 16384
codes) multiplies `[M, K]` activations by every weight: fused QKV
768 -> 2304 (or three 768 -> 768), the attention output 768 -> 768, SwiGLU
768 -> 2 x 2048 (fused `w1|w3`, or `w1` and `w3` apart) and 2048 -> 768, and
the head 768 -> 16384. `M` is the batch (doubled under classifier-free
guidance).

For each shape and row count it times, float32, per dot:
  - `stream`: dots inside one jitted `lax.fori_loop` over `--stream-mib` MiB
    of distinct weight copies (each dot's input depends on the last output,
    so nothing is hoisted): the weights come from memory, not the caches, as
    in a decode step, which reads each layer's weights once;
  - `stream_t`: the same with the weights stored transposed `[N, K]`
    (`lax.dot_general` contracting dim 1 of both);
  - `stream_wt`: weights `[N, K]` as the left operand, `w_t . x -> [N, M]`
    (what `visgen.sampling.weight_layout` makes the decode loops run);
  - `hot`, `hot_t`, `hot_wt`: one weight copy in the loop, so it stays in
    the caches;
  - `call`: one jitted `x @ w` per Python call (hot weight; adds dispatch);
  - `torch_stream`, `torch_hot`: `x @ w` in torch, `torch.set_num_threads(2)`
    (`--torch`; measured in the first variant's process only).

XLA_FLAGS must be set before JAX starts its backend, so each `--variant`
runs in its own subprocess; the variants run round-robin `--rounds` times
(interleaved, so load changes hit all of them). The table gives the median
microseconds per dot, (GFLOP/s, weight GB/s), and each variant's speed
relative to the first (`x1.25` = 1.25x faster). The default variants are
XLA's default, where jaxlib 0.10 runs these dots as YNNPACK fusions
(`__ynn_fusion` in the compiled HLO), and `eigen`, which turns YNNPACK's
dots off (`--xla_cpu_experimental_ynn_fusion_type=-individual_dot`) so they
run as Eigen contractions.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# (name, K, N) of one GPT-B decode step's weights.
SHAPES = [
    ("qkv", 768, 2304),
    ("q|k|v", 768, 768),
    ("wo", 768, 768),
    ("w1|w3", 768, 4096),
    ("w1", 768, 2048),
    ("w2", 2048, 768),
    ("head", 768, 16384),
]

DEFAULT_VARIANTS = [
    "ynn=",
    "eigen=--xla_cpu_experimental_ynn_fusion_type=-individual_dot",
]
KINDS = (
    "stream", "stream_t", "stream_wt", "hot", "hot_t", "hot_wt", "call", "torch_stream",
    "torch_hot",
)  # fmt: skip


def _child(rows: list[int], iters: int, use_torch: bool, stream_mib: int) -> dict:
    """Times every (shape, rows) in this process; returns {"kind|shape|rows": seconds per dot}."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def median_time(fn, repeats=5):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def looped(form: str):
        """jit(x, ws) running `iters` passes over the weights `ws`, one dot each; `form`:
        `x@w` (w `[K, N]`), `x.wt` or `wt.x` (w `[N, K]`; `wt.x` gives `[N, M]`)."""

        @jax.jit
        def run(x, ws):
            def body(_, x):
                for w in ws:  # unrolled: distinct weights, like a model's layers
                    if form == "wt.x":
                        # The barrier keeps XLA from folding `.T` into the dot (as in
                        # `weight_layout.weights_first_dot`).
                        y = jax.lax.dot_general(w, x, (((1,), (1,)), ((), ())))
                        y = jax.lax.optimization_barrier(y).T
                    else:
                        dims = (((1,), (1 if form == "x.wt" else 0,)), ((), ()))
                        y = jax.lax.dot_general(x, w, dims)
                    x = x + 1e-6 * jnp.mean(y, axis=1, keepdims=True)
                return x

            return jax.lax.fori_loop(0, iters, body, x)

        return run

    loop, loop_t, loop_wt = looped("x@w"), looped("x.wt"), looped("wt.x")
    call = jax.jit(lambda x, w: x @ w)
    out = {}
    rng = np.random.default_rng(0)
    for name, k, n in SHAPES:
        # `stream`: enough distinct copies that they do not fit the caches (as in a decode
        # step, which reads every layer's weights once); `hot`: one copy, cache-resident.
        copies = max(2, -(-stream_mib * 2**20 // (4 * k * n)))
        ws = [(0.02 * rng.standard_normal((k, n))).astype(np.float32) for _ in range(copies)]
        wj = [jnp.asarray(w) for w in ws]
        wtj = [jnp.asarray(w.T.copy()) for w in ws]
        for m in rows:
            x = rng.standard_normal((m, k)).astype(np.float32)
            xj = jnp.asarray(x)
            key = f"{name}|{m}"
            per_stream, per_hot = iters * copies, iters

            def jrun(f, w, xj=xj):
                return lambda: f(xj, w).block_until_ready()

            out[f"stream|{key}"] = median_time(jrun(loop, wj)) / per_stream
            out[f"stream_t|{key}"] = median_time(jrun(loop_t, wtj)) / per_stream
            out[f"hot|{key}"] = median_time(jrun(loop, wj[:1])) / per_hot
            out[f"hot_t|{key}"] = median_time(jrun(loop_t, wtj[:1])) / per_hot
            out[f"stream_wt|{key}"] = median_time(jrun(loop_wt, wtj)) / per_stream
            out[f"hot_wt|{key}"] = median_time(jrun(loop_wt, wtj[:1])) / per_hot

            def calls(xj=xj, w=wj[0]):
                for _ in range(iters):
                    r = call(xj, w)
                r.block_until_ready()

            out[f"call|{key}"] = median_time(calls) / per_hot
            if use_torch:
                import torch

                torch.set_num_threads(2)
                xt, wts = torch.from_numpy(x), [torch.from_numpy(w) for w in ws]

                def tloop(xt=xt, wts=wts, reps=iters):
                    for _ in range(reps):
                        for w in wts:
                            xt @ w

                out[f"torch_stream|{key}"] = median_time(tloop) / per_stream
                out[f"torch_hot|{key}"] = median_time(lambda wts=wts: tloop(wts=wts[:1])) / per_hot
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=8, help="passes over the weights per timing")
    parser.add_argument(
        "--stream-mib", type=int, default=96, help="bytes of distinct weight copies per shape"
    )
    parser.add_argument("--torch", action="store_true", help="also time torch (2 threads)")
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="NAME=XLA_FLAGS (repeatable); default: " + "; ".join(DEFAULT_VARIANTS),
    )
    parser.add_argument("--json", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    if args.child:
        print(json.dumps(_child(rows, args.iters, args.torch, args.stream_mib)))
        return 0

    variants = [v.split("=", 1) for v in (args.variant or DEFAULT_VARIANTS)]
    samples: dict[str, dict[str, list[float]]] = {name: {} for name, _ in variants}
    for r in range(args.rounds):
        for i, (name, flags) in enumerate(variants):
            cmd = [sys.executable, "-m", "bench.bench_decode_matmul", "--child"]
            cmd += ["--rows", args.rows, "--iters", str(args.iters)]
            cmd += ["--stream-mib", str(args.stream_mib)]
            # torch only once per round (it does not depend on XLA_FLAGS).
            cmd += ["--torch"] if args.torch and i == 0 else []
            env = dict(os.environ, XLA_FLAGS=flags)
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            for key, sec in json.loads(res.stdout.strip().splitlines()[-1]).items():
                samples[name].setdefault(key, []).append(sec)
            print(f"round {r + 1}/{args.rounds}: {name} done", file=sys.stderr, flush=True)

    load = os.getloadavg()
    base = variants[0][0]
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("median microseconds per dot (GFLOP/s, weight GB/s); ratio = first variant / this")
    header = "| shape | K x N | rows | kind | " + " | ".join(n for n, _ in variants) + " |"
    print(header)
    print("|" + "---|" * (4 + len(variants)))
    medians = {n: {k: statistics.median(v) for k, v in s.items()} for n, s in samples.items()}
    for name, k, n in SHAPES:
        for m in rows:
            for kind in KINDS:
                key = f"{kind}|{name}|{m}"
                if key not in medians[base]:
                    continue
                cells = []
                for vname, _ in variants:
                    sec = medians[vname].get(key)
                    if sec is None:
                        cells.append("")
                        continue
                    gflops, gbs = 2 * m * k * n / sec / 1e9, 4 * k * n / sec / 1e9
                    cell = f"{sec * 1e6:.0f} ({gflops:.1f}, {gbs:.1f})"
                    if vname != base:
                        cell += f" x{medians[base][key] / sec:.2f}"
                    cells.append(cell)
                print(f"| {name} | {k}x{n} | {m} | {kind} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"variants": dict(variants), "samples": samples, "load": load}, f, indent=2)
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    raise SystemExit(main())
