r"""TiTok benchmarks: train step time, memory, encode/decode throughput.

  python -m bench.bench_titok [--only tiny_train,s128_train,s128_codec] [--json out.json]

Measures, on whatever backend JAX sees (docs/results.md says which for each number):
  - train step time and examples/s of the real train step (loss, grads,
    AdamW, EMA; donated state) for `configs/titok.py:tiny` (batch 32, 32 px)
    and S-128 at 256 px (batch 8 on CPU);
  - peak memory: XLA's compiled estimate for the train step (arguments +
    outputs + temporaries, minus aliased donations) and this process's max RSS;
  - S-128 encode (pixels -> token ids) and decode (ids -> pixels) images/s at
    batch 8 on 256x256 inputs.
Each timing is the median of `--repeats` runs after a compile-and-warm-up call.
"""

import argparse
import json
import resource

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.timing import median_seconds, time_train_step


def bench_train(variant: str, batch: int, repeats: int) -> dict:
    from visgen.config import load_config_file

    config = load_config_file(f"configs/titok.py:{variant}")
    res = config.tokenizer.image_size
    rng = np.random.default_rng(0)
    batch_arrays = {"image": jnp.asarray(rng.uniform(-1, 1, (batch, res, res, 3)), jnp.float32)}
    timing = time_train_step(config, batch_arrays, repeats)
    return {
        "config": f"titok.py:{variant}",
        "batch": batch,
        "resolution": res,
        "params": timing["params"],
        "step_seconds": timing["step_seconds"],
        "examples_per_s": timing["examples_per_s"],
        "xla_peak_bytes": timing["xla_peak_bytes"],
        "minor_faults_per_step": timing["minor_faults_per_step"],
        "system_seconds_per_step": timing["system_seconds_per_step"],
    }


def bench_codec(batch: int, repeats: int) -> dict:
    from visgen.tokenizers import make_tokenizer

    model = make_tokenizer("titok", rngs=nnx.Rngs(0))  # defaults: S-128 at 256 px
    graphdef, state = nnx.split(model)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, 256, 256, 3)), jnp.float32)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x).tokens)
    decode = jax.jit(lambda s, t: nnx.merge(graphdef, s).decode(t))
    tokens = encode(state, x)
    enc_s = median_seconds(lambda: encode(state, x), repeats)
    dec_s = median_seconds(lambda: decode(state, tokens), repeats)
    return {
        "config": "S-128 (width 512, depth 8, 128 tokens, 4096 x 12 codes), 256 px, float32",
        "batch": batch,
        "encode_images_per_s": batch / enc_s,
        "decode_images_per_s": batch / dec_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="tiny_train,s128_train,s128_codec")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    results = {"backend": jax.default_backend(), "devices": str(jax.devices())}
    if "tiny_train" in wanted:
        results["tiny_train"] = bench_train("tiny", 32, args.repeats)
        print(json.dumps(results["tiny_train"]), flush=True)
    if "s128_train" in wanted:
        results["s128_train"] = bench_train("size=S,tokens=128,res=256", 8, args.repeats)
        print(json.dumps(results["s128_train"]), flush=True)
    if "s128_codec" in wanted:
        results["s128_codec"] = bench_codec(8, args.repeats)
        print(json.dumps(results["s128_codec"]), flush=True)
    results["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    raise SystemExit(main())
