r"""FlexTok's claim in kind: one trained model, reconstructions from every prefix length k.

  python -m bench.flextok_prefix --workdir outputs/flextok_tiny --out outputs/flextok_prefix \
      [--ks 1,2,4,8,16,32] [--max-examples 1000] [--rows 8] \
      [--generator outputs/ar_flextok --num-samples 500] [--diagnose] [--data-dir DIR] \
      [--baseline outputs/titok_k8 --baseline outputs/titok_k32] [--generation-only]

For each k, from the workdir's EMA weights on its eval split (the first
`--max-examples` images): rFID under the `shapes` feature network, global
PSNR and SSIM of the reconstructions decoded from the first k tokens, and the
`shapes` classifier's accuracy on them (beside its accuracy on the
originals). The paper's claims, in kind: quality rises with k, and the first
tokens already carry the class. Writes `<out>/prefix.json` and
`<out>/prefix_grid.png` (rows: test images; columns: the original, then k
ascending). The decoder's noise is the tokenizer's fixed default key, so the
numbers are deterministic; `--decode-seeds` repeats the PSNR of the grid's
images under other noise keys as a spread of the flow decoder's sampling.

With `--generator` (an AR generator trained on this FlexTok's ids), the same
`--num-samples` class-conditional samples (`launch.sample`, one seed: the
same generated ids for every k) are decoded from their first k tokens, and
each k gets its gFID against the test split and the classifier's accuracy
on the requested class (`<out>/generation.json`, `<out>/samples_k*/`). The
AR sampler stops after the k steps that draw a k-token prefix (the same ids
as a full draw's first k), so `ar_steps_per_image` is k.

With `--baseline` (repeatable), the same reconstruction metrics of tokenizers
trained separately at one token count each (the paper's comparison: TiTok-tiny
at 8 and at 32 tokens, `configs/titok.py:tiny,tokens=K`), from all their
tokens (`<out>/baselines.json`). `--generation-only` skips FlexTok's own
reconstructions.

With `--diagnose`, where the tokens' information goes (`<out>/diagnose.json`):
the flow loss at fixed times t with the first k registers and with the null
set (registers the decoder reads lower the loss at high t), the PSNR of the
one-step decode (the decoder's posterior-mean estimate `eps - v(eps, 1)`)
against the `decode_steps` Euler decode, and a linear probe's class accuracy
on the first k tokens' latents (ridge regression fitted on the first 80% of
the images, scored on the rest): whether the tokens carry the class at all.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def prefix_grid(tokenizer, images: jax.Array, ks: list[int], seed: int = 0) -> np.ndarray:
    """uint8 `[R * H, (1 + len(ks)) * W, 3]`: each row an image, then its k-prefix decodes."""
    from visgen.metrics import image

    graphdef, state = nnx.split(tokenizer)

    @jax.jit
    def decode(state, x, k, rng):
        tok = nnx.merge(graphdef, state)
        return tok.decode(tok.encode(x).tokens, num_tokens=k, rng=rng)

    rng = jax.random.key(seed)
    columns = [images] + [decode(state, images, jnp.int32(k), rng) for k in ks]
    grid = np.asarray(image.to_255(jnp.stack(columns, axis=1)))  # [R, C, H, W, 3]
    r, c, h, w, _ = grid.shape
    return grid.transpose(0, 2, 1, 3, 4).reshape(r * h, c * w, 3).astype(np.uint8)


def decode_psnr_spread(tokenizer, images: jax.Array, ks: list[int], seeds: list[int]) -> dict:
    """Per k, the mean per-image PSNR of `images` decoded under each noise seed."""
    from visgen.metrics import image

    graphdef, state = nnx.split(tokenizer)

    @jax.jit
    def psnr(state, x, k, rng):
        tok = nnx.merge(graphdef, state)
        rec = tok.decode(tok.encode(x).tokens, num_tokens=k, rng=rng)
        return jnp.mean(image.psnr(image.to_255(rec), image.to_255(x)))

    return {
        str(k): [float(psnr(state, images, jnp.int32(k), jax.random.key(s))) for s in seeds]
        for k in ks
    }


def generation_by_k(generator: str, out: str, ks: list[int], num: int) -> list[dict]:
    """gFID and class accuracy of `num` samples of `generator` decoded at each k."""
    from launch import sample as sample_cli
    from visgen.evaluation import generation_fid, load_features, load_labels, load_samples

    features = load_features("shapes")
    rows = []
    for k in ks:
        folder = os.path.join(out, f"samples_k{k}")
        stats = sample_cli.run(
            ["--workdir", generator, "--num", str(num), "--num-tokens", str(k), "--out", folder]
        )
        path = os.path.join(folder, "samples.npz")
        images = load_samples(path)
        res = generation_fid(
            images,
            features,
            samples_name=path,
            labels=load_labels(path, len(images)),
            ref_dataset="shapes",
            ref_split="test",
        )
        row = dict(
            k=k,
            gfid=res["fid"],
            class_accuracy=res["class_accuracy"],
            ar_steps_per_image=stats["steps_per_sample"],
            forward_passes=stats["forward_passes"],
            options=stats["options"],
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def diagnose(tokenizer, images: jax.Array, labels: np.ndarray, ks: list[int]) -> dict:
    """Flow loss by t and k (and null), one-step vs Euler PSNR by k, probe accuracy by k."""
    from visgen.diffusion import rectified_flow as rf
    from visgen.metrics import image
    from visgen.nn.patchify import patchify

    graphdef, state = nnx.split(tokenizer)
    b = images.shape[0]

    @jax.jit
    def latents_of(state, x):
        return nnx.merge(graphdef, state).encode(x).latents

    @jax.jit
    def flow_loss(state, latents, t, k, null):
        tok = nnx.merge(graphdef, state)
        x0 = patchify(images, tok.patch).astype(jnp.float32)
        eps = jax.random.normal(jax.random.key(1), x0.shape)
        times = jnp.full((b,), t)
        keep, nulls = jnp.full((b,), k, jnp.int32), jnp.full((b,), null)
        v = tok.decoder(rf.interpolate(x0, eps, times), times, latents, keep, nulls)
        return jnp.mean(jnp.square(v - rf.velocity_target(x0, eps)))

    def psnr_of(steps: int):
        @jax.jit
        def psnr(state, latents, k):
            rec = nnx.merge(graphdef, state).decode(latents, num_tokens=k, steps=steps)
            return jnp.mean(image.psnr(image.to_255(rec), image.to_255(images)))

        return {str(k): float(psnr(state, latents, jnp.int32(k))) for k in ks}

    latents = latents_of(state, images)
    k_max = max(ks)
    losses = {}
    for t in (0.99, 0.95, 0.9, 0.7, 0.5, 0.3, 0.1):
        row = {str(k): float(flow_loss(state, latents, t, k, False)) for k in ks}
        row["null"] = float(flow_loss(state, latents, t, k_max, True))
        losses[str(t)] = row
    flat = np.asarray(latents).reshape(b, -1)
    c = latents.shape[-1]
    fit = int(0.8 * b)
    classes = int(labels.max()) + 1
    probe = {}
    for k in ks:
        feats = np.concatenate([flat[:, : k * c], np.ones((b, 1))], axis=1)
        onehot = np.eye(classes)[labels]
        gram = feats[:fit].T @ feats[:fit] + 0.1 * np.eye(feats.shape[1])
        w = np.linalg.solve(gram, feats[:fit].T @ onehot[:fit])
        probe[str(k)] = float(np.mean(np.argmax(feats[fit:] @ w, 1) == labels[fit:]))
    return {
        "images": b,
        "flow_loss_by_t_and_k": losses,
        "psnr_one_step": psnr_of(1),
        "psnr_euler": psnr_of(tokenizer.decode_steps),
        "euler_steps": tokenizer.decode_steps,
        "probe_class_accuracy": probe,
        "probe_majority_baseline": float(np.max(np.bincount(labels[fit:])) / (b - fit)),
        "unique_codes": int(
            len(np.unique(np.asarray(nnx.merge(graphdef, state).quantizer.indices(latents))))
        ),
    }


def _recon_row(res: dict) -> dict:
    """The reconstruction metrics a row reports, from a `workdir_fid` result."""
    keys = ("rfid", "psnr", "ssim", "class_accuracy", "class_accuracy_originals")
    return {key: res[key] for key in keys}


def reconstruction_by_k(args: argparse.Namespace, ks: list[int], seeds: list[int]) -> None:
    """The per-k reconstruction table, the grid and the decode-noise spread into `args.out`."""
    from visgen.data import DataConfig, make_eval_iterator
    from visgen.evaluation import load_features, workdir_fid
    from visgen.tasks.restore import load_trained
    from visgen.train.writer import save_png

    config, _, model, step = load_trained(args.workdir)
    if config.tokenizer.name != "flextok":
        raise SystemExit(f"{args.workdir} holds a {config.tokenizer.name!r} tokenizer, not flextok")
    tokenizer = model.tokenizer
    data = DataConfig(**{**config.data, **({"data_dir": args.data_dir} if args.data_dir else {})})
    os.makedirs(args.out, exist_ok=True)
    if args.diagnose:
        n = min(args.max_examples or 1000, 1000)
        batch = next(iter(make_eval_iterator(data, batch_size=n, max_examples=n)))
        result = diagnose(tokenizer, jnp.asarray(batch["image"]), np.asarray(batch["label"]), ks)
        result.update(workdir=args.workdir, step=step)
        with open(os.path.join(args.out, "diagnose.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
    features = load_features("shapes")
    rows = []
    for k in ks:
        res = workdir_fid(
            args.workdir,
            features,
            max_examples=args.max_examples,
            batch_size=args.batch_size,
            num_tokens=k,
            data_dir=args.data_dir,
        )
        row = dict(k=k, **_recon_row(res))
        rows.append(row)
        print(json.dumps(row), flush=True)
    batch = next(iter(make_eval_iterator(data, batch_size=args.rows, max_examples=args.rows)))
    images = jnp.asarray(batch["image"])
    save_png(os.path.join(args.out, "prefix_grid.png"), prefix_grid(tokenizer, images, ks), 4)
    result = {
        "workdir": args.workdir,
        "step": step,
        "split": data.eval_split,
        "examples": res["frames"],
        "features": "shapes",
        "decode_steps": config.tokenizer.decode_steps,
        "per_k": rows,
        "grid_psnr_by_decode_seed": decode_psnr_spread(tokenizer, images, ks, seeds),
    }
    with open(os.path.join(args.out, "prefix.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


def baseline_rows(args: argparse.Namespace) -> list[dict]:
    """The same metrics for tokenizers trained separately at one token count each
    (`--baseline`, e.g. TiTok-tiny at 8 and at 32 tokens), decoded from all their tokens."""
    from visgen.evaluation import load_features, workdir_fid
    from visgen.train.workdir import load_config

    features = load_features("shapes")
    rows = []
    for workdir in args.baseline:
        config = load_config(workdir)
        res = workdir_fid(
            workdir,
            features,
            max_examples=args.max_examples,
            batch_size=args.batch_size,
            data_dir=args.data_dir,
        )
        row = dict(
            workdir=workdir,
            tokenizer=config.tokenizer.name,
            k=int(config.tokenizer.get("num_tokens", 0)),
            **_recon_row(res),
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained FlexTok workdir")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ks", default="1,2,4,8,16,32", help="prefix lengths")
    parser.add_argument("--max-examples", type=int, default=1000, help="0 = the whole split")
    parser.add_argument("--rows", type=int, default=8, help="test images in the grid")
    parser.add_argument("--decode-seeds", default="0,1,2", help="noise keys for the spread")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--generator", default="", help="an AR workdir on this FlexTok's ids")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument(
        "--generation-only", action="store_true", help="skip the FlexTok reconstructions"
    )
    parser.add_argument(
        "--baseline", action="append", default=[],
        help="a tokenizer workdir trained at one token count (repeatable): baselines.json",
    )  # fmt: skip
    parser.add_argument(
        "--diagnose", action="store_true", help="also write diagnose.json (see the docstring)"
    )
    parser.add_argument("--data-dir", default="", help="override the workdir's data.data_dir")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.decode_seeds.split(",")]

    if not args.generation_only:
        reconstruction_by_k(args, ks, seeds)
    if args.baseline:
        os.makedirs(args.out, exist_ok=True)
        rows = baseline_rows(args)
        with open(os.path.join(args.out, "baselines.json"), "w") as f:
            json.dump({"max_examples": args.max_examples, "rows": rows}, f, indent=2)
    if args.generator:
        rows = generation_by_k(args.generator, args.out, ks, args.num_samples)
        with open(os.path.join(args.out, "generation.json"), "w") as f:
            json.dump({"generator": args.generator, "num": args.num_samples, "per_k": rows}, f,
                      indent=2)  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
