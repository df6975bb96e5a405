r"""FID, IS, rFID and pFID from the command line, each under a named feature network.

  # generated samples (uint8 [N, H, W, 3] under "images", or ADM-style "arr_0")
  python -m evals.fid gfid --samples S.npz --features shapes \
      --ref-dataset shapes --ref-split test [--data-dir D]
  python -m evals.fid gfid --samples S.npz --features inception \
      --inception-weights inception_fid.npz --ref REF.npz
  # reconstructions of a split through a tokenizer workdir: rFID, PSNR, SSIM
  python -m evals.fid rfid --workdir TOK --features shapes [--split test --max-examples N]
  # a 1D tokenizer's (FlexTok's) first k tokens only
  python -m evals.fid rfid --workdir TOK --features shapes --num-tokens 4
  # the RobusTok perturbed rFID (pFID) at several perturbation rates
  python -m evals.fid pfid --workdir TOK --features shapes --alphas 0.1,0.2,0.3 --delta 100

Common options: `--batch-size` (a multiple of the device count), `--seed`,
`--out results.json` (the JSON is printed either way).

Feature networks (`--features`, `visgen.evaluation.features`), named in every
result under `"features"`: `inception` (the FID InceptionV3 from a local
`--inception-weights` file: the only choice whose numbers compare with papers),
`shapes` and `digits` (the embedded datasets' classifiers, weights in
`evals/weights/`: a FID-like distance that only compares with itself), or a
path to another `FeatureNet` `.npz`.

Modes (the computations are in `visgen.evaluation`):
- `gfid` (`generation`): samples against a statistics `.npz`, an ADM reference
  batch or a dataset split; also the Inception Score and, for labelled samples
  under a dataset classifier, their class accuracy.
- `rfid` (`reconstruction`): the tokenizer workdir's own data config and EMA
  weights; FID of the reconstructions of every image of the split against the
  originals, plus global PSNR, mean per-image PSNR and SSIM (0-255 scale).
- `pfid` (`reconstruction`, `perturbation`): as `rfid`, but each token is, with
  probability alpha, replaced by one of its `delta` nearest codebook entries
  before decoding; alpha 0 is the rFID itself. Report alpha and delta with
  every pFID.

Errors in the inputs exit with status 2 and a one-line message (`visgen.cli`);
`--debug` or `VISGEN_DEBUG=1` shows the traceback.
"""

import argparse
import json
import os
import sys

import jax

from visgen.cli import user_errors
from visgen.distributed import initialize, is_multiprocess_job
from visgen.evaluation import (
    DEFAULT_ALPHAS,
    FEATURE_NAMES,
    generation_fid,
    load_features,
    load_labels,
    load_samples,
    workdir_fid,
)


def parse_alphas(text: str) -> list[float]:
    """`"0.1,0.2"` -> `[0.1, 0.2]`, each in [0, 1]."""
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"--alphas must be comma-separated numbers, got {text!r}") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"--alphas must be numbers in [0, 1], got {text!r}")
    return alphas


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--features",
        required=True,
        help=f"feature network: {', '.join(FEATURE_NAMES)}, or a FeatureNet weights .npz",
    )
    common.add_argument("--inception-weights", default="", help="FID Inception .npz (inception)")
    common.add_argument("--batch-size", type=int, default=64)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--out", default="", help="also write the JSON result here")
    common.add_argument("--debug", action="store_true", help="full tracebacks for bad input")

    tok = argparse.ArgumentParser(add_help=False)
    tok.add_argument("--workdir", required=True, help="a tokenizer training workdir")
    tok.add_argument("--split", default="", help="default: the config's eval split")
    tok.add_argument("--max-examples", type=int, default=0, help="0 = the whole split")
    tok.add_argument("--data-dir", default="", help="override the config's TFDS data dir")
    tok.add_argument(
        "--num-tokens", type=int, default=0, help="decode this prefix of 1D tokens (0 = all)"
    )

    # `--help` shows the whole module docstring: the command lines, then the options.
    title, rest = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(
        description=title.strip(),
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    g = modes.add_parser("gfid", parents=[common], help="samples against a reference")
    g.add_argument("--samples", required=True, help=".npz of uint8 images [N, H, W, 3]")
    g.add_argument("--ref", default="", help="reference stats .npz (mu, sigma) or ADM batch")
    g.add_argument("--ref-dataset", default="", help="or a dataset name (e.g. shapes)")
    g.add_argument("--ref-split", default="test")
    g.add_argument("--ref-config", default="", help="TFDS builder config ('' = default)")
    g.add_argument("--ref-image-size", type=int, default=0, help="0 = the samples' size")
    g.add_argument("--ref-max-examples", type=int, default=0, help="0 = the whole split")
    g.add_argument("--data-dir", default="", help="TFDS data dir ('' = TFDS default)")
    modes.add_parser("rfid", parents=[common, tok], help="reconstruction FID of a tokenizer")
    p = modes.add_parser("pfid", parents=[common, tok], help="perturbed reconstruction FID")
    p.add_argument(
        "--alphas", default=",".join(map(str, DEFAULT_ALPHAS)), help="perturbation rates"
    )
    p.add_argument("--delta", type=int, default=100, help="nearest codes to draw from")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Refuses bad numbers and an `--out` that is a directory, before any work."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    for flag in ("max_examples", "ref_max_examples", "ref_image_size", "num_tokens"):
        if getattr(args, flag, 0) < 0:
            name = "--" + flag.replace("_", "-")
            raise ValueError(f"{name} must be >= 0 (0 = all / the samples' size)")
    if args.out and os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a directory: give a .json file path")


def run(args: argparse.Namespace) -> dict:
    """The result of the parsed command line (raises on bad input)."""
    if args.mode == "pfid":
        alphas = parse_alphas(args.alphas)
        if args.delta < 1:
            raise ValueError(f"--delta must be >= 1, got {args.delta}")
    if args.mode == "gfid":
        # Bad samples fail before a feature network is loaded.
        images = load_samples(args.samples)
        labels = load_labels(args.samples, len(images))
        features = load_features(args.features, inception_weights=args.inception_weights)
        return generation_fid(
            images,
            features,
            samples_name=args.samples,
            labels=labels,
            ref=args.ref,
            ref_dataset=args.ref_dataset,
            ref_split=args.ref_split,
            ref_config=args.ref_config,
            ref_image_size=args.ref_image_size,
            ref_max_examples=args.ref_max_examples,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
        )
    features = load_features(args.features, inception_weights=args.inception_weights)
    return workdir_fid(
        args.workdir,
        features,
        split=args.split,
        data_dir=args.data_dir,
        alphas=alphas if args.mode == "pfid" else (),
        delta=args.delta if args.mode == "pfid" else 100,
        seed=args.seed,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        num_tokens=args.num_tokens or None,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if is_multiprocess_job():
        initialize()  # gfid splits each batch over the processes (visgen.evaluation.generation)
    try:
        with user_errors(sys.argv[1:] if argv is None else argv):
            check_args(args)
            result = run(args)
    except SystemExit as e:
        return e.code
    text = json.dumps(result, indent=2)
    if args.out and jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
