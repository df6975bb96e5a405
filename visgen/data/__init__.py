"""Datasets and input pipelines: embedded TFDS datasets, sources, preprocessing, grain.

`make_train_iterator(DataConfig(...))` is what a trainer needs; the rest is
exposed for tools and tests. Importing this package never imports TensorFlow,
and imports grain and TFDS only when a name that needs them is first used:
`DataConfig` alone (what config files need) stays light.
"""

import importlib

from visgen.data.config import DataConfig

# name -> the submodule that defines it, imported on first access (PEP 562).
_LAZY = {
    "EMBEDDED_DATASETS": "builders",
    "ensure_built": "builders",
    "make_eval_iterator": "pipeline",
    "make_train_iterator": "pipeline",
    "num_examples": "pipeline",
    "mirror_caption": "preprocess",
    "preprocess_image": "preprocess",
    "preprocess_video": "preprocess",
    "to_uint8": "preprocess",
    "SHAPE_KINDS": "shapes",
    "draw_shapes_image": "shapes",
    "draw_shapes_video": "shapes",
    "FolderSource": "sources",
    "TfdsSource": "sources",
    "make_source": "sources",
}

__all__ = ["DataConfig", *sorted(_LAZY)]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
