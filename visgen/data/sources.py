"""Random-access sources with one record format for every kind of dataset.

A source is a `Sequence` of records (what `grain.MapDataset.source` reads):

    {"image": uint8 [H, W, C]}  or  {"video": uint8 [T, H, W, C]}
    + {"label": int (-1 if none), "caption": str ("" if none)}

Three kinds of dataset become sources:
  - embedded datasets (`shapes`, `shapes_video`, `digits`), built on first use;
  - any TFDS dataset already prepared in array_record format (for example
    `imagenet2012` prepared from its manual download). Nothing is ever
    downloaded; a missing dataset is an error that says how to prepare it;
  - `folder`: a directory of images, labelled by first-level subfolder; a
    split is its subfolder of that name, or a held-out fraction
    (`train[90%:]`), never silently the training images.

The pipeline resizes afterwards, so sources return images at stored size.
"""

import logging
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from visgen.cli import BadFileError
from visgen.data.builders import EMBEDDED_DATASETS, ensure_built, quiet_tfds


class _NoOpenCvAdvice(logging.Filter):
    """Drops TFDS's "OpenCV is not installed ... Defaulting to PIL" warning: it is
    logged (through absl) the first time any process decodes an image, PIL is what
    we decode with on purpose, and OpenCV is not a dependency."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("OpenCV is not installed")


logging.getLogger("absl").addFilter(_NoOpenCvAdvice())

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

_RANDOM_ACCESS_FORMATS = ("array_record", "parquet")


class TfdsSource(Sequence):
    """Records of one split of a prepared TFDS dataset."""

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str):
        config = builder.builder_config
        self.name = f"{builder.name}/{config.name}" if config else builder.name
        features = builder.info.features
        keys = [key for key in ("image", "video") if key in features]
        if not keys:
            raise ValueError(
                f"TFDS dataset {self.name} has no 'image' or 'video' feature; "
                f"its features are {sorted(features)}"
            )
        self.kind = keys[0]
        label = dict(features.items()).get("label")  # FeaturesDict has no `.get`.
        is_class = isinstance(label, tfds.features.ClassLabel)
        self.label_names = tuple(label.names) if is_class else ()
        self._has_caption = "caption" in features
        self._source = builder.as_data_source(split=split)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self._source[index]
        pixels = example[self.kind]
        # A `Sequence(Image)` feature decodes to a list of frames.
        pixels = np.stack(pixels) if isinstance(pixels, list) else np.asarray(pixels)
        caption = example["caption"] if self._has_caption else ""
        return {
            self.kind: pixels,
            "label": int(example["label"]) if self.label_names else -1,
            "caption": caption.decode("utf-8") if isinstance(caption, bytes) else str(caption),
        }


class UnreadableImageError(BadFileError, OSError):
    """An image file PIL cannot decode (named in the message): bad input, not a disk fault."""


_SLICE = re.compile(r"^(?P<split>\w+)\[((?P<start>\d+)%)?:((?P<stop>\d+)%)?\]$")


def _split_folder(root: pathlib.Path, split: str) -> tuple[pathlib.Path, slice | None]:
    """The folder and the fraction (a slice of percentages) that `split` reads.

    `ROOT/<split>/` when it exists (a folder of splits); otherwise the whole
    folder is the one split `train`, and `train[a%:b%]` reads a fixed fraction of
    it, so `train[:90%]` and `train[90%:]` hold out a tenth for evaluation.
    """
    match = _SLICE.match(split.replace(" ", ""))
    name = match["split"] if match else split
    fraction = slice(int(match["start"] or 0), int(match["stop"] or 100)) if match else None
    if (root / name).is_dir():
        return root / name, fraction
    if name == "train":
        return root, fraction
    raise ValueError(
        f"image folder {str(root)!r} has no {name!r} subfolder, so split {split!r} would "
        f"read the training images: put the eval images in {root / name}, or hold out a "
        "fraction with --config.data.train_split='train[:90%]' "
        "--config.data.eval_split='train[90%:]'"
    )


class FolderSource(Sequence):
    """The images of one split of an image folder, read with PIL as RGB.

    A split is the subfolder of that name (`ROOT/train/`, `ROOT/test/`) when
    there is one; otherwise the whole folder is the split `train`, and any other
    split is refused rather than silently evaluating on the training images.
    `train[a%:b%]` reads a fraction of the split, in a fixed shuffled order, so
    `train[:90%]` / `train[90%:]` are a held-out division of one folder.
    Labels are the sorted first-level subfolder names (below the split folder)
    when the images sit in subfolders, else -1. Paths are sorted, so indices are
    stable across runs.
    """

    kind = "image"

    def __init__(self, root: str, split: str = "train"):
        self.name = f"folder {root}"
        top = pathlib.Path(root)
        if not root or not top.is_dir():
            raise FileNotFoundError(f"image folder {root!r} does not exist or is not a directory")
        top, fraction = _split_folder(top, split)
        self._paths = sorted(
            path
            for path in top.rglob("*")
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        )
        if not self._paths:
            raise FileNotFoundError(
                f"image folder {str(top)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        loose = [path for path in self._paths if path.parent == top]
        nested = {path.relative_to(top).parts[0] for path in self._paths if path.parent != top}
        self.label_names = tuple(sorted(nested))
        if loose and self.label_names:
            raise ValueError(
                f"image folder {str(top)!r} mixes images at its top level (e.g. {loose[0]}) with "
                f"class subfolders {list(self.label_names)}; put every image in a class "
                "subfolder, or none"
            )
        index = {name: i for i, name in enumerate(self.label_names)}
        self._labels = [index.get(path.relative_to(top).parts[0], -1) for path in self._paths]
        if fraction is not None:
            # A fixed shuffle first, so a held-out tail is not one class's images.
            order = np.random.default_rng(0).permutation(len(self._paths))
            n = len(order)
            order = order[n * fraction.start // 100 : n * fraction.stop // 100]
            if not len(order):
                raise ValueError(f"split {split!r} of image folder {root!r} holds no images")
            self._paths = [self._paths[i] for i in order]
            self._labels = [self._labels[i] for i in order]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self._paths[index]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as error:
            raise UnreadableImageError(f"cannot read image {path}: {error}") from error
        return {"image": pixels, "label": self._labels[index], "caption": ""}


def check_num_classes(source: "TfdsSource | FolderSource", num_classes: int) -> None:
    """Refuses a dataset whose labels do not fit a model of `num_classes` classes.

    A class-conditional model (`num_classes > 0`) needs labelled data with at most
    that many classes; one with more would feed out-of-range labels (a dataset
    overridden without the class count, e.g. `--config.data.name=digits`).
    """
    if num_classes <= 0:
        return
    found = len(source.label_names)
    if not found:
        hint = (
            " (put the images in one subfolder per class)"
            if isinstance(source, FolderSource)
            else ""
        )
        raise ValueError(
            f"{source.name} has no class labels{hint}, but the model is class-conditional "
            f"with {num_classes} classes"
        )
    if found > num_classes:
        raise ValueError(
            f"{source.name} has {found} classes but the model has {num_classes} "
            f"(generator.num_classes): set --config.generator.num_classes={found}"
        )


def _prepared_builder(
    name: str, builder_config: str, data_dir: str, manual_dir: str
) -> tfds.core.DatasetBuilder:
    full_name = f"{name}/{builder_config}" if builder_config else name
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    try:
        with quiet_tfds():
            builder = tfds.builder(full_name, data_dir=data_dir or None)
            prepared = builder.is_prepared()
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"unknown dataset {name!r}: not an embedded dataset "
            f"({', '.join(EMBEDDED_DATASETS.names())}), not 'folder', not in the TFDS "
            f"catalog and not prepared in data_dir {where!r}"
        ) from None
    if not prepared:
        if manual_dir and builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
            return _build_from_manual_dir(builder, full_name, manual_dir)
        raise FileNotFoundError(
            f"TFDS dataset {full_name!r} is not prepared in data_dir {where!r} and visgen never "
            f"downloads. Prepare it once, e.g. `tfds build {full_name} --data_dir={where} "
            "--file_format=array_record` (add --manual_dir=DIR for datasets such as "
            "imagenet2012 that you download yourself; most catalog builders need TensorFlow "
            "for this step), or set data.manual_dir for a manual-download dataset."
        )
    file_format = builder.info.file_format
    if file_format is not None and file_format.value not in _RANDOM_ACCESS_FORMATS:
        raise ValueError(
            f"TFDS dataset {full_name!r} in {builder.data_dir} is stored as {file_format.value}; "
            f"random access needs array_record: rebuild it with `tfds build {full_name} "
            f"--data_dir={where} --file_format=array_record`"
        )
    return builder


def _build_from_manual_dir(
    builder: tfds.core.DatasetBuilder, full_name: str, manual_dir: str
) -> tfds.core.DatasetBuilder:
    print(
        f"visgen.data: preparing {full_name} from manual_dir {manual_dir} into {builder.data_dir}",
        flush=True,
    )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    try:
        builder.download_and_prepare(download_config=config, file_format="array_record")
    except Exception as error:
        raise RuntimeError(
            f"preparing TFDS dataset {full_name!r} from manual_dir {manual_dir!r} failed: "
            f"{error}. Catalog builders often need TensorFlow for this one-off step: run "
            f"`tfds build {full_name} --manual_dir={manual_dir} --file_format=array_record` "
            "in an environment that has it"
        ) from error
    return builder


def make_source(
    name: str,
    split: str,
    *,
    builder_config: str = "",
    data_dir: str = "",
    manual_dir: str = "",
    folder: str = "",
) -> TfdsSource | FolderSource:
    """Returns the records of `split` of dataset `name`.

    Args:
      name: an embedded dataset, any prepared TFDS dataset, or "folder".
      split: a TFDS split, slicing allowed ("train[:90%]"); a folder's split is
        its subfolder of that name, or the whole folder for "train" (see
        `FolderSource`).
      builder_config: TFDS config name; "" is the builder's default.
      data_dir: TFDS data dir; "" is the TFDS default (~/tensorflow_datasets).
      manual_dir: where a manual-download TFDS dataset's files are, used only
        to prepare it when it is not prepared yet.
      folder: image root when `name == "folder"`.
    """
    if name == "folder":
        return FolderSource(folder, split)
    if name in EMBEDDED_DATASETS:
        builder = ensure_built(name, builder_config, data_dir)
    else:
        builder = _prepared_builder(name, builder_config, data_dir, manual_dir)
    return TfdsSource(builder, split)


def check_splits(cfg, num_classes: int = 0) -> None:
    """Opens the train and eval splits of `cfg` (a `DataConfig`) and checks the train
    split's labels against `num_classes` (`check_num_classes`): what a run checks
    before it writes anything. Reads no images."""
    kwargs = dict(
        builder_config=cfg.builder_config,
        data_dir=cfg.data_dir,
        manual_dir=cfg.manual_dir,
        folder=cfg.folder,
    )
    train = make_source(cfg.name, cfg.train_split, **kwargs)
    make_source(cfg.name, cfg.eval_split, **kwargs)
    check_num_classes(train, num_classes)
