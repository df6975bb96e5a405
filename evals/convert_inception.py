"""Converts the PyTorch FID Inception weights to the `.npz` that `load_inception` reads.

FID and IS numbers are only comparable when they come from the TF
`inception-2015-12-05` network. Its torch port's weights,
`pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's FID weights;
torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` holds the same
state dict), are converted once, offline:

    python -m evals.convert_inception pt_inception-2015-12-05-6726825d.pth inception_fid.npz

The state dict keys are those of pytorch-fid's `FIDInceptionV3` and
torch-fidelity's `FeatureExtractorInceptionV3` (`Mixed_5b.branch1x1.conv.weight`
`[C_out, C_in, kh, kw]`, `...bn.running_var`, `fc.weight` `[1008, 2048]`, ...);
the output layout is documented in `visgen/metrics/inception.py`. torch is
needed only here; the file is read with `torch.load(..., weights_only=True)`,
so no arbitrary pickled object is ever constructed.
"""

import argparse

import numpy as np

from visgen.metrics.inception import InceptionV3, convert_torch_state_dict


def convert(pth_path: str, out_path: str) -> None:
    """Reads the `.pth` state dict, checks it builds the network, writes `out_path`."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "converting Inception weights needs torch (only for this step): pip install torch"
        ) from e
    state = torch.load(pth_path, map_location="cpu", weights_only=True)
    arrays = convert_torch_state_dict(state)
    # Building the module validates every shape before anything is written.
    InceptionV3(arrays)
    # A file handle keeps `out_path` exact (np.savez on a name appends ".npz").
    with open(out_path, "wb") as f:
        np.savez(f, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pth", help="pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("out", help="output .npz")
    args = parser.parse_args()
    convert(args.pth, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
