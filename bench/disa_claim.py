r"""The DiSA claim in kind: diffusion steps annealed over MAR's iterations, FID against cost.

  python -m bench.disa_claim latent-std --tokenizer TOK [--data-dir DIR]
  python -m bench.disa_claim context --generator GEN [--visible 0,0.5,0.9] [--data-dir DIR]
  python -m bench.disa_claim run --generator GEN --out DIR [--num 500] [--seeds 0,1,2] \
      [--num-iter 64] [--settings mar100,disa,constant50] [--batch-size 250] [--data-dir DIR]

`latent-std` encodes a continuous tokenizer's test split (the posterior mean
a generator reads) and prints the latents' std per channel and overall, and
`1 / std`: the diffusion head's `scale` that brings them to unit std
(MAR's 0.2325 for its KL-16 VAE). `configs/ar.py`'s `TINY_LATENT_SCALE` was
set from it.

`context` asks whether a masked generator's draws follow what it sees: test
images are encoded, a random fraction of each image's tokens is left visible
(`--visible`), and every hidden token is drawn once by the diffusion head
(100 steps, no guidance). It prints the mean squared distance, in latent
units, of the drawn tokens to the true ones and to the same positions of
another test image: a head that uses the context lands much nearer its own
image, and a sharp one nearer still as more is visible.

`run` samples a trained generator workdir through the real CLI
(`launch.sample.run`) once per setting and seed, then scores the samples with
the `shapes` feature network (FID against the test split and class accuracy,
`visgen.evaluation.generation_fid`). Settings (all with the workdir's
guidance and timestep clamp; a masked generator with `--num-iter`
iterations, a causal one with one step per token):

- `mar100`: MAR's default, 100 diffusion steps for every token;
- `disa`: DiSA's MAR recipe, `linear:50:5` over the iterations;
- `constant50`: the same sampler at a constant 50 steps (DiSA's clamp,
  without the annealing), so each factor shows.

Per setting it reports the mean and spread (min..max) over the seeds of FID
and class accuracy, and the counts from `stats.json`: `head_evaluations`
(diffusion steps summed over every token of a sample), `denoiser_calls`
(the head's batched calls per batch; masked generators), backbone passes, and
the wall-clock seconds per image (including one compilation per setting;
on a shared CPU only indicative). Writes `DIR/disa_claim.json` and prints a
markdown table.
"""

import argparse
import json
import os
import sys

import numpy as np

SETTINGS: dict[str, list[str]] = {
    "mar100": ["--diffusion-steps", "100"],
    "disa": ["--disa", "linear:50:5"],
    "constant50": ["--disa", "constant:50"],
}


def latent_std(tokenizer: str, data_dir: str) -> dict:
    """The test latents' std (per channel and overall) of a continuous tokenizer workdir."""
    import jax
    from flax import nnx

    from visgen.data import DataConfig, make_eval_iterator
    from visgen.tasks.restore import load_trained

    config, _, model, step = load_trained(tokenizer)
    data = DataConfig(**{**config.data, **({"data_dir": data_dir} if data_dir else {})})
    tok = model.tokenizer if hasattr(model, "tokenizer") else model
    graphdef, state = nnx.split(tok)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x).latents)
    total, total_sq, count = 0.0, 0.0, 0
    for batch in make_eval_iterator(data, batch_size=64):
        keep = np.asarray(batch["mask"], bool)
        x = np.asarray(encode(state, batch["image"]), np.float64)[keep]
        x = x.reshape(-1, x.shape[-1])
        total, total_sq, count = total + x.sum(0), total_sq + (x * x).sum(0), count + len(x)
    mean = total / count
    std = np.sqrt(total_sq / count - mean**2)
    overall = float(np.sqrt(np.mean(std**2)))
    return {
        "tokenizer": os.path.abspath(tokenizer),
        "step": int(step),
        "latents": int(count),
        "std_per_channel": [round(float(s), 4) for s in std],
        "mean_per_channel": [round(float(m), 4) for m in mean],
        "std": overall,
        "scale": 1.0 / overall,
    }


def context_fit(generator: str, visible: list[float], data_dir: str) -> dict:
    """Drawn-vs-true distances of a masked generator's hidden tokens per visible fraction."""
    import jax
    import jax.numpy as jnp

    from visgen.data import DataConfig, make_eval_iterator
    from visgen.generators import DiffusionOptions, DrawContext
    from visgen.tasks.restore import load_trained

    config, _, model, step = load_trained(generator)
    gen = model.generator
    if gen.method != "mar":
        raise SystemExit("error: context needs a masked generator (configs/mar.py)")
    data = DataConfig(**{**config.data, **({"data_dir": data_dir} if data_dir else {})})
    batch = next(iter(make_eval_iterator(data, batch_size=256)))
    latents = model.tokenizer.encode(jnp.asarray(batch["image"])).latents
    latents = latents.reshape(latents.shape[0], gen.num_tokens, -1)
    labels = jnp.asarray(batch["label"], jnp.int32)
    head = DrawContext(1.0, DiffusionOptions(diffusion_steps=100, clip=950), False, 1.0)
    draw = jax.jit(lambda h, k: gen.head.draw(h, k, head))
    rows = []
    for i, fraction in enumerate(visible):
        seen = jax.random.uniform(jax.random.key(i), latents.shape[:2]) < fraction
        hidden = gen.hidden_states(latents, labels, ~seen)
        drawn = draw(hidden.reshape(-1, hidden.shape[-1]), jax.random.key(100 + i))
        drawn = drawn.reshape(latents.shape)
        hidden_at = ~np.asarray(seen)
        to_true = np.asarray(jnp.mean(jnp.square(drawn - latents), -1))[hidden_at]
        other = jnp.roll(latents, 1, axis=0)
        to_other = np.asarray(jnp.mean(jnp.square(drawn - other), -1))[hidden_at]
        rows.append({"visible": fraction, "to_true": float(to_true.mean()),
                     "to_other_image": float(to_other.mean())})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {"generator": os.path.abspath(generator), "step": int(step), "images": 256,
            "rows": rows}  # fmt: skip


def run_settings(args) -> dict:
    from launch import sample as sample_cli
    from visgen.evaluation import generation_fid, load_features, load_samples
    from visgen.train.workdir import load_config

    masked = load_config(args.generator).generator.name == "mar"
    features = load_features("shapes")
    data_dir = os.path.abspath(args.data_dir or os.path.join("outputs", "data"))
    rows = {}
    for name in args.settings.split(","):
        if name not in SETTINGS:
            raise SystemExit(f"error: unknown setting {name!r}; valid: {', '.join(SETTINGS)}")
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            out = os.path.join(args.out, f"{name}_seed{seed}")
            argv = ["--workdir", args.generator, "--out", out, "--num", str(args.num)]
            argv += ["--batch-size", str(args.batch_size), "--seed", str(seed), *SETTINGS[name]]
            argv += ["--method", "mar", "--num-iter", str(args.num_iter)] if masked else []
            stats = sample_cli.run(argv)
            npz = os.path.join(out, "samples.npz")
            images = load_samples(npz)
            with np.load(npz) as f:
                labels = f["labels"]
            fid = generation_fid(
                images,
                features,
                samples_name=npz,
                labels=labels,
                ref_dataset="shapes",
                ref_split="test",
                data_dir=data_dir,
            )
            batches = -(-args.num // args.batch_size)
            runs.append(
                {
                    "seed": seed,
                    "fid": fid["fid"],
                    "class_accuracy": fid["class_accuracy"],
                    "head_evaluations_per_sample": stats["head_evaluations"] // batches,
                    "denoiser_calls_per_batch": stats.get("denoiser_calls", 0) // batches,
                    "backbone_passes_per_batch": stats["forward_passes"] // batches,
                    "seconds_per_image": stats["seconds"] / args.num,
                }
            )
            print(f"{name} seed {seed}: {json.dumps(runs[-1])}", flush=True)
            with open(os.path.join(args.out, "runs.jsonl"), "a") as f:  # progress, per run
                f.write(json.dumps({"setting": name, **runs[-1]}) + "\n")
        rows[name] = {"args": SETTINGS[name], "runs": runs, **_summary(runs)}
    return {
        "generator": os.path.abspath(args.generator),
        "masked": masked,
        "num": args.num,
        "num_iter": args.num_iter if masked else None,
        "seeds": args.seeds,
        "settings": rows,
    }


def _summary(runs: list[dict]) -> dict:
    out = {}
    for key in ("fid", "class_accuracy", "seconds_per_image"):
        values = np.array([r[key] for r in runs])
        out[key] = {"mean": float(values.mean()), "min": float(values.min()),
                    "max": float(values.max())}  # fmt: skip
    for key in ("head_evaluations_per_sample", "denoiser_calls_per_batch",
                "backbone_passes_per_batch"):  # fmt: skip
        out[key] = runs[0][key]  # the same for every seed
    return out


def table(result: dict) -> str:
    """The markdown table of a `run` result."""
    base = result["settings"].get("mar100", {}).get("head_evaluations_per_sample")
    lines = [
        "| setting | FID (mean, min..max) | class acc. | head evals / sample | vs mar100 "
        "| denoiser calls / batch | backbone passes | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["settings"].items():
        fid, acc, sec = row["fid"], row["class_accuracy"], row["seconds_per_image"]
        evals = row["head_evaluations_per_sample"]
        ratio = f"{base / evals:.2f}x" if base else "-"
        lines.append(
            f"| {name} (`{' '.join(row['args'])}`) | {fid['mean']:.2f} ({fid['min']:.2f}.."
            f"{fid['max']:.2f}) | {100 * acc['mean']:.1f}% ({100 * acc['min']:.1f}.."
            f"{100 * acc['max']:.1f}) | {evals} | {ratio} | {row['denoiser_calls_per_batch']} "
            f"| {row['backbone_passes_per_batch']} | {sec['mean']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    std = sub.add_parser("latent-std", help="a continuous tokenizer's latent std")
    std.add_argument("--tokenizer", required=True)
    std.add_argument("--data-dir", default="")
    ctx = sub.add_parser("context", help="do a masked generator's draws follow the visible tokens")
    ctx.add_argument("--generator", required=True)
    ctx.add_argument("--visible", default="0,0.5,0.9")
    ctx.add_argument("--data-dir", default="")
    run = sub.add_parser("run", help="FID and counts per DiSA setting and seed")
    run.add_argument("--generator", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--num", type=int, default=500)
    run.add_argument("--seeds", default="0,1,2")
    run.add_argument("--num-iter", type=int, default=64)
    run.add_argument("--settings", default=",".join(SETTINGS))
    run.add_argument("--batch-size", type=int, default=250)
    run.add_argument("--data-dir", default="")
    args = p.parse_args(argv)

    from visgen.runtime import enable_compilation_cache

    enable_compilation_cache()
    if args.command == "latent-std":
        print(json.dumps(latent_std(args.tokenizer, args.data_dir), indent=2))
        return 0
    if args.command == "context":
        visible = [float(v) for v in args.visible.split(",")]
        print(json.dumps(context_fit(args.generator, visible, args.data_dir), indent=2))
        return 0
    os.makedirs(args.out, exist_ok=True)
    result = run_settings(args)
    with open(os.path.join(args.out, "disa_claim.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(table(result))
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
