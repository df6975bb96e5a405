"""Converts PyTorch LPIPS-VGG weights to the `.npz` that `visgen.losses.load_lpips` reads.

LPIPS (Zhang et al. 2018) is a VGG16 trunk with ImageNet weights plus five
learned 1x1 "lin" layers. visgen never downloads weights, so this one-off,
offline conversion takes both local files:

    python -m evals.convert_lpips VGG16.pth LPIPS_LIN.pth OUT.npz

- `VGG16.pth`: torchvision's VGG16 ImageNet state dict (`vgg16-397923af.pth`),
  keys `features.N.weight` `[C_out, C_in, 3, 3]` and `features.N.bias`;
- `LPIPS_LIN.pth`: the lpips package's `lpips/weights/v0.1/vgg.pth`, keys
  `linK.model.1.weight` `[1, C_K, 1, 1]`.

The output layout is documented in `visgen/losses/perceptual.py`. torch is
needed only here; files are read with `torch.load(..., weights_only=True)`, so
no arbitrary pickled object is ever constructed.
"""

import argparse
from collections.abc import Mapping
from typing import Any

import numpy as np

from visgen.losses.perceptual import LPIPS, VGG16_STAGES


def vgg16_feature_indices() -> list[int]:
    """Indices of the 13 convs in torchvision's `vgg16().features`.

    Each conv is followed by a ReLU and each stage ends with a max pool, so the
    convs sit at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28.
    """
    indices, i = [], 0
    for stage in VGG16_STAGES:
        for _ in stage:
            indices.append(i)
            i += 2
        i += 1
    return indices


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().float().numpy()


def convert_state_dicts(vgg: Mapping[str, Any], lins: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Maps the two torch state dicts (tensors) to the `.npz` arrays.

    Conv kernels go from torch OIHW to HWIO; lin weights `[1, C, 1, 1]` to `[C]`.
    Raises KeyError naming the missing key and what the file holds instead.
    """
    out: dict[str, np.ndarray] = {}
    names = [name for stage in VGG16_STAGES for name in stage]
    for name, idx in zip(names, vgg16_feature_indices(), strict=True):
        for src, dst in (("weight", "kernel"), ("bias", "bias")):
            key = f"features.{idx}.{src}"
            if key not in vgg:
                raise KeyError(f"{key!r} not in the VGG16 state dict; it has {sorted(vgg)[:8]}...")
            array = _numpy(vgg[key])
            out[f"{name}.{dst}"] = array.transpose(2, 3, 1, 0) if dst == "kernel" else array
    for k in range(len(VGG16_STAGES)):
        key = f"lin{k}.model.1.weight"
        if key not in lins:
            raise KeyError(f"{key!r} not in the LPIPS lin state dict; it has {sorted(lins)}")
        out[f"lin{k}.weight"] = _numpy(lins[key]).reshape(-1)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def convert(vgg_path: str, lin_path: str, out_path: str) -> None:
    """Reads both `.pth` files, checks the result loads as LPIPS, writes `out_path`."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "converting LPIPS weights needs torch (only for this step): pip install torch"
        ) from e
    vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
    lins = torch.load(lin_path, map_location="cpu", weights_only=True)
    arrays = convert_state_dicts(vgg, lins)
    # Building the module validates shapes and signs before anything is written.
    LPIPS(arrays)
    # A file handle keeps `out_path` exact (np.savez on a name appends ".npz").
    with open(out_path, "wb") as f:
        np.savez(f, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vgg16", help="torchvision vgg16-397923af.pth")
    parser.add_argument("lpips_lin", help="lpips package weights/v0.1/vgg.pth")
    parser.add_argument("out", help="output .npz")
    args = parser.parse_args()
    convert(args.vgg16, args.lpips_lin, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
