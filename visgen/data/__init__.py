"""Datasets and input pipelines: embedded TFDS datasets, sources, preprocessing, grain.

`make_train_iterator(DataConfig(...))` is what a trainer needs; the rest is
exposed for tools and tests. Importing this package never imports TensorFlow.
"""

from visgen.data.builders import EMBEDDED_DATASETS, ensure_built
from visgen.data.pipeline import (
    DataConfig,
    make_eval_iterator,
    make_train_iterator,
    num_examples,
)
from visgen.data.preprocess import (
    mirror_caption,
    preprocess_image,
    preprocess_video,
    to_uint8,
)
from visgen.data.shapes import SHAPE_KINDS, draw_shapes_image, draw_shapes_video
from visgen.data.sources import FolderSource, TfdsSource, make_source

__all__ = [
    "EMBEDDED_DATASETS",
    "SHAPE_KINDS",
    "DataConfig",
    "FolderSource",
    "TfdsSource",
    "draw_shapes_image",
    "draw_shapes_video",
    "ensure_built",
    "make_eval_iterator",
    "make_source",
    "make_train_iterator",
    "mirror_caption",
    "num_examples",
    "preprocess_image",
    "preprocess_video",
    "to_uint8",
]
