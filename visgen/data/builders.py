"""TFDS builders for the embedded datasets, and building them on first use.

Three small datasets ship as code so every pipeline, test and demo runs with
no download: procedural `shapes` images, `shapes_video` clips and
scikit-learn's handwritten `digits`. Each is a `GeneratorBasedBuilder` that
writes array_record files with PNG-encoded images, generated from a fixed
seed. Images are PNG-encoded here because `tfds.features.Image` would need
TensorFlow to encode raw arrays; everything else (writing, reading via
`builder.as_data_source()`) works without TensorFlow.

Captions are `tfds.features.Text`: writing needs no TensorFlow, and the data
source returns them as UTF-8 `bytes`.
"""

import contextlib
import dataclasses
import io
import struct
import zlib

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from visgen.data.shapes import SHAPE_KINDS, draw_shapes_image, draw_shapes_video
from visgen.registry import Registry

EMBEDDED_DATASETS: Registry[type["_EmbeddedBuilder"]] = Registry("embedded dataset")

_SPLIT_IDS = {"train": 0, "test": 1}


@dataclasses.dataclass(eq=False, kw_only=True)
class EmbeddedConfig(tfds.core.BuilderConfig):
    """The resolution, clip length and default split sizes of one variant."""

    resolution: int = 32
    num_frames: int = 0
    train_size: int = 0
    test_size: int = 0
    seed: int = 0


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, C] array, C in {1, 3}.

    Written with zlib directly: PIL's PNG writer costs ~6x more per call,
    which dominated building 20k small images.
    """
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 [H, W, 1 or 3], got {array.dtype} {array.shape}")
    height, width, channels = array.shape
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # Filter byte 0: none.
    rows[:, 1:] = array.reshape(height, -1)
    colour_type = 0 if channels == 1 else 2  # Grayscale or RGB, 8 bits each.
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    # Level 3 is ~3x faster than zlib's default 6 and ~25% larger on shapes.
    idat = chunk(b"IDAT", zlib.compress(rows.tobytes(), 3))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def _split_rng(config: EmbeddedConfig, split: str) -> np.random.Generator:
    # One stream per split, consumed in order: example i is the same whatever
    # the split size, so a small test build is a prefix of the full one.
    return np.random.default_rng((config.seed, _SPLIT_IDS[split]))


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared pieces; abstract, so TFDS does not register it as a dataset."""

    VERSION = tfds.core.Version("1.0.0")
    # TFDS finds a packaged builder's file through `importlib_resources`, which
    # it imports on Python >= 3.9 but declares only for < 3.9; giving the path
    # directly (TFDS looks beside it for a checksums file) avoids that import.
    code_path = epath.Path(__file__)

    def __init__(self, *, split_sizes: dict[str, int] | None = None, **kwargs):
        # Overrides of the config's split sizes, used only when building (tests
        # build tiny datasets); TFDS forbids a custom config reusing a name.
        unknown = set(split_sizes or {}) - set(_SPLIT_IDS)
        if unknown:
            raise ValueError(f"split_sizes names unknown splits {sorted(unknown)}")
        self._split_sizes = dict(split_sizes or {})
        super().__init__(**kwargs)

    def split_size(self, split: str) -> int:
        config = self.builder_config
        default = {"train": config.train_size, "test": config.test_size}[split]
        return self._split_sizes.get(split, default)

    def _split_generators(self, dl_manager):
        del dl_manager  # Generated locally, nothing to download.
        return {split: self._generate_examples(split) for split in _SPLIT_IDS}


def _info(builder: tfds.core.GeneratorBasedBuilder, description: str, features: dict):
    # A one-file builder has no metadata folder, so DatasetInfo is built here
    # rather than with `dataset_info_from_configs`. Files are written in key
    # order: the pipelines shuffle, so a write-time shuffle would only cost time.
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=tfds.features.FeaturesDict(features),
        disable_shuffling=True,
    )


@EMBEDDED_DATASETS.register("shapes")
class Shapes(_EmbeddedBuilder):
    """Procedural shapes: `image` [R, R, 3], `label` (main shape kind), `caption`."""

    BUILDER_CONFIGS = [
        EmbeddedConfig(name="32", resolution=32, train_size=20_000, test_size=1_000),
        EmbeddedConfig(name="64", resolution=64, train_size=20_000, test_size=1_000),
        EmbeddedConfig(name="128", resolution=128, train_size=10_000, test_size=1_000),
        EmbeddedConfig(name="256", resolution=256, train_size=5_000, test_size=500),
    ]
    DEFAULT_CONFIG_NAME = "32"

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        return _info(
            self,
            "1-3 coloured shapes on a plain background, labelled by the main shape.",
            {
                "image": tfds.features.Image(shape=(r, r, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=SHAPE_KINDS),
                "caption": tfds.features.Text(),
            },
        )

    def _generate_examples(self, split: str):
        config = self.builder_config
        rng = _split_rng(config, split)
        for index in range(self.split_size(split)):
            image, label, caption = draw_shapes_image(rng, config.resolution)
            yield index, {"image": encode_png(image), "label": label, "caption": caption}


@EMBEDDED_DATASETS.register("shapes_video")
class ShapesVideo(_EmbeddedBuilder):
    """Bouncing shapes: `video` [T, R, R, 3], `label` (main shape kind), `caption`."""

    BUILDER_CONFIGS = [
        EmbeddedConfig(name="32x8", resolution=32, num_frames=8, train_size=5_000, test_size=500),
        EmbeddedConfig(name="64x8", resolution=64, num_frames=8, train_size=5_000, test_size=500),
    ]
    DEFAULT_CONFIG_NAME = "32x8"

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        r = config.resolution
        # `tfds.features.Video` would need TensorFlow; a sequence of PNG
        # frames decodes to the same uint8 [T, H, W, 3] without it.
        frames = tfds.features.Image(shape=(r, r, 3), encoding_format="png")
        return _info(
            self,
            "1-3 coloured shapes moving and bouncing off the borders, with captions.",
            {
                "video": tfds.features.Sequence(frames, length=config.num_frames),
                "label": tfds.features.ClassLabel(names=SHAPE_KINDS),
                "caption": tfds.features.Text(),
            },
        )

    def _generate_examples(self, split: str):
        config = self.builder_config
        rng = _split_rng(config, split)
        for index in range(self.split_size(split)):
            video, label, caption = draw_shapes_video(rng, config.resolution, config.num_frames)
            frames = [encode_png(frame) for frame in video]
            yield index, {"video": frames, "label": label, "caption": caption}


@EMBEDDED_DATASETS.register("digits")
class Digits(_EmbeddedBuilder):
    """scikit-learn's 8x8 handwritten digits upsampled: `image` [R, R, 1], `label` 0-9."""

    # sklearn bundles 1,797 images; a seeded permutation holds 200 out as test.
    BUILDER_CONFIGS = [
        EmbeddedConfig(name="16", resolution=16, train_size=1_597, test_size=200),
        EmbeddedConfig(name="32", resolution=32, train_size=1_597, test_size=200),
    ]
    DEFAULT_CONFIG_NAME = "32"

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        return _info(
            self,
            "UCI/scikit-learn handwritten digits, bicubic-upsampled from 8x8 grayscale.",
            {
                "image": tfds.features.Image(shape=(r, r, 1), encoding_format="png"),
                "label": tfds.features.ClassLabel(num_classes=10),
            },
        )

    def _generate_examples(self, split: str):
        from sklearn.datasets import load_digits  # Only needed when building.

        config = self.builder_config
        digits = load_digits()
        order = np.random.default_rng(config.seed).permutation(len(digits.target))
        test_size = self.split_size("test")
        test, train = order[:test_size], order[test_size:]
        chosen = {"train": train[: self.split_size("train")], "test": test}[split]
        r = config.resolution
        for index in chosen:
            # Values are 0..16; stretch to 0..255 before upsampling.
            pixels = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels).resize((r, r), Image.Resampling.BICUBIC)
            yield (
                int(index),
                {
                    "image": encode_png(np.asarray(image)[..., None]),
                    "label": int(digits.target[index]),
                },
            )


def _builder_config(cls: type[_EmbeddedBuilder], builder_config: str) -> EmbeddedConfig:
    name = builder_config or cls.DEFAULT_CONFIG_NAME
    configs = {config.name: config for config in cls.BUILDER_CONFIGS}
    if name not in configs:
        raise ValueError(
            f"embedded dataset {cls.name!r} has no builder config {name!r}; "
            f"valid configs: {', '.join(configs)}"
        )
    return configs[name]


def ensure_built(
    name: str,
    builder_config: str = "",
    data_dir: str = "",
    *,
    split_sizes: dict[str, int] | None = None,
) -> tfds.core.DatasetBuilder:
    """Returns the builder of an embedded dataset, generating it first if missing.

    Args:
      name: a key of `EMBEDDED_DATASETS` ("shapes", "shapes_video", "digits").
      builder_config: config name (e.g. "64"); "" picks the builder's default.
      data_dir: TFDS data dir; "" is the TFDS default (~/tensorflow_datasets).
      split_sizes: e.g. {"train": 64, "test": 16}, used only when building;
        an existing build is reused whatever its sizes.
    """
    cls = EMBEDDED_DATASETS.get(name)
    config = _builder_config(cls, builder_config)
    with quiet_tfds():
        builder = cls(
            config=config.name,  # By name: a config object breaks unpickling in workers.
            data_dir=data_dir or None,
            file_format="array_record",
            split_sizes=split_sizes,
        )
        prepared = builder.is_prepared()
    if not prepared:
        print(
            f"visgen.data: building embedded dataset {name}/{config.name} "
            f"({builder.split_size('train')} train, {builder.split_size('test')} test) "
            f"in {builder.data_dir}",
            flush=True,
        )
        with quiet_tfds():
            builder.download_and_prepare()
    return builder


@contextlib.contextmanager
def quiet_tfds():
    """Silences TFDS's banners, progress bars and warnings about missing files.

    Callers say what happens in their own words; errors still raise.
    """
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.set_verbosity(verbosity)
