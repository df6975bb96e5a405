"""Token caches: built once from the frozen tokenizer, read by the train pipeline,
refused when another tokenizer checkpoint, another token spec or other data made them."""

import dataclasses
import json
import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from evals.train_features import load_split
from visgen.config import load_config_file
from visgen.data import DataConfig, make_train_iterator
from visgen.data.token_cache import METADATA_FILE, TokenCacheSource
from visgen.sampling import SampleOptions
from visgen.tasks.generator import GeneratorTask
from visgen.tasks.tokenizer import TokenizerTask
from visgen.train.loop import TrainConfig, train
from visgen.train.optim import OptimConfig

pytestmark = pytest.mark.slow

GENERATOR = dict(name="ar", head={"name": "categorical"}, width=32, depth=1, heads=2, num_classes=5)


@pytest.fixture(scope="module")
def task(tokenizer_workdir) -> GeneratorTask:
    return GeneratorTask(GENERATOR, tokenizer_workdir, SampleOptions(), 2, "float32")


@pytest.fixture(scope="module")
def cached(task, shapes_dir, tmp_path_factory) -> DataConfig:
    directory = str(tmp_path_factory.mktemp("cache") / "tokens")
    data_cfg = DataConfig(data_dir=shapes_dir, batch_size=8, token_cache=directory)
    task.prepare_data(data_cfg, batch_size=200)  # the last batch is padded
    return data_cfg


def test_cache_holds_each_train_image_and_its_mirror(task, cached, shapes_dir):
    images, labels = load_split("shapes", "train", shapes_dir)  # uint8 [512, 32, 32, 3]
    source = TokenCacheSource(cached.token_cache)
    assert len(source) == 2 * len(images)
    model = task.frozen_tokenizer.build().tokenizer
    picks = np.array([0, 1, 511])
    x = jnp.asarray(images[picks], jnp.float32) / 127.5 - 1.0
    for flipped, pixels in enumerate((x, x[:, :, ::-1])):
        want = np.asarray(model.encode(pixels).tokens).reshape(len(picks), -1)
        for i, index in enumerate(picks):
            record = source[2 * int(index) + flipped]
            np.testing.assert_array_equal(record["tokens"], want[i])
            assert record["label"] == labels[index]
    metadata = json.loads(pathlib.Path(cached.token_cache, METADATA_FILE).read_text())
    assert metadata["tokenizer"]["fingerprint"] == task.frozen_tokenizer.fingerprint
    assert metadata["tokenizer"]["spec"] == model.spec.to_dict()
    assert metadata["records"] == 1024 and metadata["flips"]


def test_generator_trains_from_the_cache(task, cached, tmp_path):
    batch = next(make_train_iterator(cached))
    assert set(batch) == {"tokens", "label"} and batch["tokens"].shape == (8, 32)
    result = train(
        task,
        str(tmp_path),
        TrainConfig(steps=2, log_every=1, eval_every=0, checkpoint_every=0),
        cached,
        OptimConfig(warmup_steps=0),
    )
    assert result.stopped_by is None
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["train/cross_entropy"] for line in lines if "train/" in line]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[0] > 0


def test_cache_refuses_another_tokenizer_or_other_data(task, cached, tmp_path):
    other = str(tmp_path / "other")
    shutil.copytree(cached.token_cache, other)
    moved = dataclasses.replace(cached, token_cache=other)
    assert task.prepare_data(moved)["records"] == 1024  # a copy is the same cache
    with pytest.raises(ValueError, match="other data"):
        task.prepare_data(dataclasses.replace(moved, random_flip=False))
    path = pathlib.Path(other, METADATA_FILE)
    original = json.loads(path.read_text())
    metadata = json.loads(path.read_text())
    metadata["tokenizer"]["spec"]["vocab_size"] += 1
    path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="holds tokens of spec .* this run's tokenizer makes"):
        task.prepare_data(moved)
    metadata = original
    metadata["tokenizer"]["fingerprint"] = "0" * 64
    path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="was made by tokenizer .* but this run tokenizes"):
        task.prepare_data(moved)


def test_tokenizer_task_rejects_a_token_cache():
    tokenizer = TokenizerTask.from_config(load_config_file("configs/titok.py:tiny"))
    with pytest.raises(ValueError, match="for generator training"):
        tokenizer.prepare_data(DataConfig(token_cache="/tmp/x"))
