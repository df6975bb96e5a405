"""Sample files: uint8 images `[N, H, W, 3]` in an `.npz`, and their class labels.

`launch.sample` writes `images` (and `labels` for class-conditional samples);
ADM-style reference batches hold their images under `arr_0`.
"""

import os
import zipfile

import numpy as np

SAMPLE_KEYS = ("images", "arr_0")  # launch.sample's layout, then ADM's


def open_npz(path: str, what: str) -> np.lib.npyio.NpzFile:
    """`np.load(path)` of an `.npz`, with errors that name `what` and `path`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{what} {path} is not a readable .npz: {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{what} {path} holds a single array, not an .npz of named arrays")
    return data


def load_samples(path: str) -> np.ndarray:
    """Sample images uint8 `[N, H, W, 3]` from an `.npz` (key `images`, else `arr_0`).

    `load_labels` reads the class labels that `launch.sample` stores beside them.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an `.npz`, no arrays, no known key, an empty or
        wrongly shaped array, or a dtype other than uint8.
    """
    data = open_npz(path, "samples file")
    with data:
        if not data.files:
            raise ValueError(f"{path} is empty: it holds no arrays")
        key = next((k for k in SAMPLE_KEYS if k in data.files), None)
        if key is None:
            raise ValueError(
                f"{path} holds {sorted(data.files)}; samples go under "
                f"{' or '.join(repr(k) for k in SAMPLE_KEYS)}"
            )
        images = data[key]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: {key!r} must be images [N, H, W, 3], got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{path}: {key!r} is empty (0 images)")
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: {key!r} must be uint8 (0-255), got {images.dtype}")
    return images


def load_labels(path: str, num_samples: int) -> np.ndarray | None:
    """The conditioning class labels `[N]` int of a samples `.npz` (key `labels`), or None.

    Raises:
      ValueError: labels that are not `[num_samples]` integers.
    """
    with open_npz(path, "samples file") as data:
        if "labels" not in data.files:
            return None
        labels = data["labels"]
    if labels.shape != (num_samples,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: 'labels' must be [{num_samples}] integers (one per image), "
            f"got {labels.dtype} {labels.shape}"
        )
    return labels
