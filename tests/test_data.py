"""Tests of visgen.data: embedded builders, sources, preprocessing, grain pipelines.

Datasets are built tiny (tens of examples) once per module in a temporary
TFDS data dir, so the whole file runs in well under a minute on a laptop CPU.
"""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from visgen.data import (
    SHAPE_KINDS,
    DataConfig,
    draw_shapes_image,
    draw_shapes_video,
    ensure_built,
    make_eval_iterator,
    make_source,
    make_train_iterator,
    mirror_caption,
    num_examples,
    preprocess_image,
    to_uint8,
)
from visgen.data.builders import encode_png
from visgen.data.preprocess import resize_and_crop, to_float
from visgen.data.shapes import COLOURS

SIZES = {
    "shapes": {"train": 64, "test": 10},
    "shapes_video": {"train": 16, "test": 6},
    "digits": {"train": 40, "test": 10},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("tfds"))
    for name, sizes in SIZES.items():
        ensure_built(name, "", root, split_sizes=sizes)
    return root


def _batches(iterator, n: int) -> list[dict]:
    return [next(iterator) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(
        np.array_equal(x["image"], y["image"]) and np.array_equal(x["label"], y["label"])
        for x, y in zip(a, b, strict=True)
    )


# Builders and sources.


def test_shapes_builds_with_documented_features(data_dir):
    source = make_source("shapes", "train", data_dir=data_dir)
    assert len(source) == SIZES["shapes"]["train"]
    assert source.label_names == SHAPE_KINDS
    for index in range(5):
        record = source[index]
        assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
        assert 0 <= record["label"] < len(SHAPE_KINDS)
        caption = record["caption"]
        assert isinstance(caption, str)
        # The main shape (the label) is described first, with its colour.
        first = caption.split(",")[0].split(" and ")[0]
        assert SHAPE_KINDS[record["label"]] in first
        assert any(colour in first for colour in COLOURS)


def test_shapes_video_builds_with_documented_features(data_dir):
    record = make_source("shapes_video", "test", data_dir=data_dir)[0]
    assert record["video"].shape == (8, 32, 32, 3) and record["video"].dtype == np.uint8
    assert 0 <= record["label"] < len(SHAPE_KINDS)
    assert " moving " in record["caption"]
    # The shapes move: consecutive frames differ.
    assert not np.array_equal(record["video"][0], record["video"][-1])


def test_digits_builds_with_documented_features(data_dir):
    source = make_source("digits", "train", data_dir=data_dir)
    labels = {source[i]["label"] for i in range(len(source))}
    record = source[0]
    assert record["image"].shape == (32, 32, 1) and record["image"].dtype == np.uint8
    assert labels <= set(range(10)) and len(labels) > 3
    assert record["caption"] == ""
    assert num_examples(DataConfig(name="digits", data_dir=data_dir), "test") == 10


def test_generation_is_deterministic(tmp_path):
    image_a, label_a, caption_a = draw_shapes_image(np.random.default_rng(7), 32)
    image_b, label_b, caption_b = draw_shapes_image(np.random.default_rng(7), 32)
    assert np.array_equal(image_a, image_b) and (label_a, caption_a) == (label_b, caption_b)
    assert not np.array_equal(image_a, draw_shapes_image(np.random.default_rng(8), 32)[0])
    video, _, _ = draw_shapes_video(np.random.default_rng(7), 64, 4)
    assert video.shape == (4, 64, 64, 3)
    # Two builds from scratch hold the same examples.
    sizes = {"train": 4, "test": 3}
    first = ensure_built("shapes", "", str(tmp_path / "a"), split_sizes=sizes).as_data_source()
    second = ensure_built("shapes", "", str(tmp_path / "b"), split_sizes=sizes).as_data_source()
    for index in range(3):
        assert np.array_equal(first["test"][index]["image"], second["test"][index]["image"])
        assert first["test"][index]["caption"] == second["test"][index]["caption"]


def test_unknown_builder_config_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid configs: 32, 64, 128, 256"):
        ensure_built("shapes", "48", str(tmp_path))


def test_png_encoding_round_trips():
    rng = np.random.default_rng(0)
    for shape in [(5, 7, 3), (9, 4, 1)]:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        decoded = np.asarray(Image.open(io.BytesIO(encode_png(array))))
        assert np.array_equal(decoded.reshape(shape), array)


def test_missing_tfds_dataset_fails_clearly(tmp_path):
    cfg = DataConfig(name="mnist", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not prepared") as error:
        make_train_iterator(cfg)
    assert "'mnist'" in str(error.value) and str(tmp_path) in str(error.value)
    assert "tfds build mnist" in str(error.value)
    with pytest.raises(ValueError, match="shapes, shapes_video"):
        num_examples(DataConfig(name="no_such_dataset_xyz", data_dir=str(tmp_path)), "train")


def _write_png(path, size, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_folder_source_labels_by_subfolder(tmp_path):
    _write_png(tmp_path / "cats" / "a.png", (40, 20), (255, 0, 0))
    _write_png(tmp_path / "cats" / "deeper" / "b.PNG", (16, 16), (0, 255, 0))
    _write_png(tmp_path / "dogs" / "c.png", (24, 30), (0, 0, 255))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    source = make_source("folder", "train", folder=str(tmp_path))
    assert source.label_names == ("cats", "dogs")
    assert [source[i]["label"] for i in range(len(source))] == [0, 0, 1]
    assert source[0]["image"].shape == (20, 40, 3)
    cfg = DataConfig(name="folder", folder=str(tmp_path), image_size=16, batch_size=2)
    batch = next(make_train_iterator(cfg))
    assert batch["image"].shape == (2, 16, 16, 3) and batch["image"].dtype == np.float32


def test_folder_source_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_source("folder", "train", folder=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="holds no images"):
        make_source("folder", "train", folder=str(tmp_path))
    _write_png(tmp_path / "good.png", (8, 8), (1, 2, 3))
    (tmp_path / "x.png").write_bytes(b"definitely not a png")
    source = make_source("folder", "train", folder=str(tmp_path))
    assert source[0]["label"] == -1
    with pytest.raises(OSError, match="x.png"):
        source[1]


def test_folder_splits_are_subfolders_or_held_out_fractions(tmp_path):
    from visgen.data.sources import check_num_classes

    for i in range(10):
        _write_png(tmp_path / "flat" / f"{i}.png", (8, 8), (i, 0, 0))
    # A flat folder is the train split alone: evaluating on it is refused, not done on the
    # training images; a held-out fraction is a disjoint part of a fixed shuffle.
    with pytest.raises(ValueError, match="has no 'test' subfolder.*train\\[90%:\\]"):
        make_source("folder", "test", folder=str(tmp_path / "flat"))
    head = make_source("folder", "train[:70%]", folder=str(tmp_path / "flat"))
    tail = make_source("folder", "train[70%:]", folder=str(tmp_path / "flat"))
    assert (len(head), len(tail)) == (7, 3)
    reds = lambda source: {int(source[i]["image"][0, 0, 0]) for i in range(len(source))}
    assert reds(head) | reds(tail) == set(range(10)) and not reds(head) & reds(tail)
    assert reds(tail) != {7, 8, 9}  # shuffled first, not the sorted tail
    # Subfolders named after the splits are the splits, labelled by their own subfolders.
    _write_png(tmp_path / "split" / "train" / "cat" / "a.png", (8, 8), (1, 0, 0))
    _write_png(tmp_path / "split" / "train" / "dog" / "b.png", (8, 8), (2, 0, 0))
    _write_png(tmp_path / "split" / "test" / "dog" / "c.png", (8, 8), (3, 0, 0))
    train = make_source("folder", "train", folder=str(tmp_path / "split"))
    test = make_source("folder", "test", folder=str(tmp_path / "split"))
    assert train.label_names == ("cat", "dog") and len(train) == 2 and len(test) == 1
    # Labels against a class-conditional model's class count.
    check_num_classes(train, 2)
    with pytest.raises(ValueError, match="has 2 classes but the model has 1"):
        check_num_classes(train, 1)
    with pytest.raises(ValueError, match="has no class labels"):
        check_num_classes(head, 5)
    check_num_classes(head, 0)  # an unconditional model takes unlabelled data


# Preprocessing.


def test_preprocessing_resizes_crops_and_scales():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # A centred white band, as wide as the crop.
    out = resize_and_crop(image, 10)
    assert out.shape == (10, 10, 3) and out.min() > 200
    gray = np.full((8, 8, 1), 255, np.uint8)
    rgb = preprocess_image(gray, 8)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.float32 and np.allclose(rgb, 1.0)
    assert np.array_equal(to_uint8(to_float(image)), image)
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\)"):
        preprocess_image(np.zeros((8, 8, 4), np.uint8), 8)
    assert mirror_caption("a circle at the top left moving right") == (
        "a circle at the top right moving left"
    )


# Pipelines.


def test_train_batches_have_the_documented_format(data_dir):
    cfg = DataConfig(data_dir=data_dir, batch_size=8, with_captions=True)
    batch = next(make_train_iterator(cfg))
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert batch["caption"].shape == (8,) and all(len(c) > 0 for c in batch["caption"])
    digits = next(make_train_iterator(DataConfig(name="digits", data_dir=data_dir, batch_size=4)))
    assert digits["image"].shape == (4, 32, 32, 3)


def test_train_stream_is_a_function_of_the_seed(data_dir):
    cfg = DataConfig(data_dir=data_dir, batch_size=8, seed=1)
    first = _batches(make_train_iterator(cfg), 10)  # Past one epoch of 64 examples.
    assert _same(first, _batches(make_train_iterator(cfg), 10))
    other = _batches(make_train_iterator(DataConfig(data_dir=data_dir, batch_size=8, seed=2)), 10)
    assert not _same(first, other)


def test_train_iterator_resumes_exactly(data_dir, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    cfg = DataConfig(data_dir=data_dir, batch_size=8)
    iterator = make_train_iterator(cfg)
    _batches(iterator, 5)
    state = iterator.get_state()
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
        manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    expected = _batches(iterator, 3)

    resumed = make_train_iterator(cfg)
    resumed.set_state(state)
    assert _same(expected, _batches(resumed, 3))

    restored = make_train_iterator(cfg)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
        manager.restore(
            5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored))
        )
    assert _same(expected, _batches(restored, 3))


def test_eval_covers_every_example_once_with_a_mask(data_dir):
    cfg = DataConfig(data_dir=data_dir, batch_size=4)
    batches = list(make_eval_iterator(cfg))
    assert len(batches) == 3  # 10 examples: 4 + 4 + 2 real and 2 padding.
    assert all(batch["mask"].shape == (4,) and batch["mask"].dtype == bool for batch in batches)
    mask = np.concatenate([batch["mask"] for batch in batches])
    assert mask.tolist() == [True] * 10 + [False] * 2
    images = np.concatenate([batch["image"] for batch in batches])[mask]
    source = make_source("shapes", "test", data_dir=data_dir)
    expected = np.stack([preprocess_image(source[i]["image"], 32) for i in range(10)])
    assert np.array_equal(images, expected)
    first_six = list(make_eval_iterator(cfg, batch_size=2, max_examples=6))
    assert len(first_six) == 3 and all(batch["mask"].all() for batch in first_six)


def test_video_clips(data_dir):
    cfg = DataConfig(
        name="shapes_video", data_dir=data_dir, num_frames=4, frame_stride=2, batch_size=2
    )
    batch = next(make_train_iterator(cfg))
    assert batch["image"].shape == (2, 4, 32, 32, 3)
    eval_batch = next(make_eval_iterator(cfg, batch_size=3))
    assert eval_batch["image"].shape == (3, 4, 32, 32, 3)
    with pytest.raises(ValueError, match="holds videos; set num_frames"):
        make_train_iterator(DataConfig(name="shapes_video", data_dir=data_dir))
    with pytest.raises(ValueError, match="holds images"):
        make_train_iterator(DataConfig(data_dir=data_dir, num_frames=4))
    with pytest.raises(ValueError, match="shapes_video/32x8 .* a video of 8 frames"):
        make_eval_iterator(DataConfig(name="shapes_video", data_dir=data_dir, num_frames=9))


def test_import_and_pipeline_do_not_need_tensorflow(tmp_path):
    where = repr(str(tmp_path))
    code = (
        "import sys\n"
        "import visgen.data as data\n"
        "assert 'tensorflow' not in sys.modules, 'import visgen.data imported tensorflow'\n"
        f"data.ensure_built('shapes', '', {where}, split_sizes={{'train': 8, 'test': 2}})\n"
        f"cfg = data.DataConfig(data_dir={where}, batch_size=4)\n"
        "next(data.make_train_iterator(cfg))\n"
        "assert 'tensorflow' not in sys.modules, 'the pipeline imported tensorflow'\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
