"""Text-conditional generators: the text encoder, the generator task on captions through
the real launcher, and `launch.sample --prompt`."""

import json
import pathlib

import numpy as np
import pytest
from conftest import run_launcher
from test_generator_task import gen_args

from launch import sample as sample_cli
from visgen.config import load_config_file
from visgen.text import TEXT_ENCODERS, RandomWordEncoder, make_text_encoder, split_words

CAPTION = (
    "a small red circle at the top left and a large blue square in the centre, "
    "on a black background"
)


def test_split_words_lowercases_and_splits_on_non_letters():
    assert split_words("A Small-red circle, at the TOP left!  3x") == [
        "a", "small", "red", "circle", "at", "the", "top", "left", "x",
    ]  # fmt: skip


def test_encoder_shape_padding_and_mask():
    encoder = RandomWordEncoder(length=32, dim=16)
    out = encoder.encode([CAPTION, "blue", ""])
    assert out.embeddings.shape == (3, 32, 16) and out.embeddings.dtype == np.float32
    np.testing.assert_array_equal(out.mask.sum(axis=1), [20, 1, 0])
    # Padding is exactly zero; real slots are not.
    assert not out.embeddings[~out.mask].any()
    assert np.all(np.linalg.norm(out.embeddings[out.mask], axis=-1) > 0.1)


def test_encoder_is_deterministic_and_word_vectors_stable():
    a = RandomWordEncoder(length=8, dim=16, positions=False)
    b = make_text_encoder("random_words", length=8, dim=16, positions=False)
    first, again = a.encode(["red circle zyzzyva"]), b.encode(["red circle zyzzyva"])
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    # A word's vector does not depend on its caption or slot (without positions),
    # unknown words included, and is normal with variance 1 / D.
    other = a.encode(["zyzzyva was never seen"]).embeddings
    np.testing.assert_array_equal(first.embeddings[0, 2], other[0, 0])
    many = a.encode([" ".join(f"w{'a' * i}" for i in range(8))]).embeddings[0]
    assert 0.5 < np.mean(np.sum(many**2, axis=-1)) < 1.5
    # Another seed gives other vectors.
    reseeded = RandomWordEncoder(length=8, dim=16, seed=1, positions=False)
    assert not np.allclose(reseeded.encode(["red"]).embeddings, a.encode(["red"]).embeddings)


def test_different_captions_and_word_orders_differ():
    encoder = RandomWordEncoder(length=32, dim=16)
    swapped = "a small blue circle at the top left and a large red square in the centre"
    out = encoder.encode([CAPTION, swapped, CAPTION]).embeddings
    assert not np.allclose(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    # The generator's prefix has no positions of its own, so it reads the set of
    # rows: without position codes, the same words in another order are the same set.
    pair = ["red circle blue square", "blue circle red square"]

    def row_sets(encoder):
        return [sorted(map(tuple, rows)) for rows in encoder.encode(pair).embeddings]

    bag = row_sets(RandomWordEncoder(length=4, dim=16, positions=False))
    ordered = row_sets(RandomWordEncoder(length=4, dim=16))
    assert bag[0] == bag[1] and ordered[0] != ordered[1]


def test_long_captions_raise_or_truncate():
    with pytest.raises(ValueError, match="caption has 20 words, more than the encoder's length 8"):
        RandomWordEncoder(length=8, dim=4).encode([CAPTION])
    out = RandomWordEncoder(length=8, dim=4, truncate=True).encode([CAPTION])
    assert out.mask.all()
    with pytest.raises(TypeError, match="not one string"):
        RandomWordEncoder(length=8, dim=4).encode("red")
    with pytest.raises(KeyError, match="valid names: random_words"):
        TEXT_ENCODERS.get("t5")


def test_text_config_variant():
    config = load_config_file("configs/ar.py:tokenizer=vq2d,tiny,text")
    assert config.data.with_captions and config.generator.num_classes == 0
    assert "cls_token_num" not in config.generator
    assert config.text_encoder.name == "random_words" and config.text_encoder.length == 32
    with pytest.raises(ValueError, match="exclude each other"):
        load_config_file("configs/ar.py:tiny,text,classes=3")


def text_args(workdir: str, data_dir: str, tokenizer: str, steps: int) -> list[str]:
    """The class-conditional smoke run's arguments, text-conditional."""
    args = gen_args(workdir, data_dir, tokenizer, steps)
    args[0] = "--config=configs/ar.py:tokenizer=titok,tiny,text"
    return [*args, "--config.text_encoder.dim=16"]


@pytest.fixture(scope="module")
def text_workdir(tmp_path_factory, shapes_dir, launcher_env, tokenizer_workdir) -> str:
    workdir = str(tmp_path_factory.mktemp("ar_text"))
    done = run_launcher(text_args(workdir, shapes_dir, tokenizer_workdir, 2), launcher_env)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_text_generator_trains_and_evaluates(text_workdir):
    lines = pathlib.Path(text_workdir, "metrics.jsonl").read_text().splitlines()
    final = [e for e in map(json.loads, lines) if "eval/cross_entropy" in e][-1]
    assert final["step"] == 2
    assert 0 < final["eval/cross_entropy"] < 2 * np.log(1024)
    assert final["eval/frequency_baseline_cross_entropy"] > 0
    assert pathlib.Path(text_workdir, "images", "preview_0000002.png").is_file()
    params = pathlib.Path(text_workdir, "params.txt").read_text()
    # The encoder's length and dim shape the generator's text prefix.
    assert "condition/null" in params and "(32, 16)" in params


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ar", "sjd"])
def test_sample_cli_prompt(text_workdir, tmp_path, method):
    out = tmp_path / method
    args = ["--workdir", text_workdir, "--num", "3", "--batch-size", "2", "--out", str(out)]
    args += ["--prompt", "a large red circle in the centre, on a black background", "--png"]
    if method == "sjd":
        args += ["--method", "sjd", "--sjd-window", "4"]
    assert sample_cli.main([*args, "--cfg", "2"]) == 0
    data = np.load(out / "samples.npz")
    assert data["images"].shape == (3, 32, 32, 3) and data["images"].dtype == np.uint8
    assert str(data["prompt"]).startswith("a large red circle") and "labels" not in data.files
    stats = json.loads((out / "stats.json").read_text())
    assert stats["method"] == method and stats["prompt"].endswith("black background")
    assert len(list(out.glob("sample_*.png"))) == 3 and (out / "samples.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class", "1"], "this generator is text-conditional: give --prompt"),
        (["--classes", "0,1"], "this generator is text-conditional: give --prompt"),
        ([], "this generator is text-conditional: give --prompt"),
        (["--prompt", " ,! "], "has no words"),
        (["--prompt", "red " * 33], "caption has 33 words, more than the encoder's length 32"),
    ],
)
def test_sample_cli_text_bad_input(text_workdir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert sample_cli.main(["--workdir", text_workdir, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists(), "a failed call must leave no output"


def test_sample_cli_prompt_to_a_class_model(tmp_path, capsys):
    from visgen.train.workdir import save_config

    # The check reads only the workdir's config, before any checkpoint.
    workdir = tmp_path / "class_gen"
    save_config(str(workdir), load_config_file("configs/ar.py:tiny"))
    out = tmp_path / "out"
    args = ["--workdir", str(workdir), "--out", str(out), "--prompt", "a red circle"]
    assert sample_cli.main(args) == 2
    assert "--prompt needs a text-conditional generator" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_text_task_host_batch_and_refusals(tokenizer_workdir, shapes_dir):
    import dataclasses

    from visgen.data import DataConfig
    from visgen.tasks import make_task

    config = load_config_file("configs/ar.py:tiny,text")
    config.unlock()
    config.tokenizer_workdir = tokenizer_workdir
    task = make_task(config)
    assert task.generator_args["text_dim"] == 64 and task.generator_args["cls_token_num"] == 32
    batch = {"label": np.zeros(2, np.int32), "caption": np.array([CAPTION, "a blue cross"])}
    text = task.host_batch(batch)["text"]
    assert text.shape == (2, 32, 64) and text.dtype == np.float32
    with pytest.raises(ValueError, match="every caption in the batch is empty"):
        task.host_batch({"caption": np.array(["", ""])})
    data = dataclasses.replace(DataConfig(**config.data), data_dir=shapes_dir)
    with pytest.raises(ValueError, match="token caches store class labels, not captions"):
        task.prepare_data(dataclasses.replace(data, token_cache="cache"))
    with pytest.raises(ValueError, match="with_captions=True"):
        task.prepare_data(dataclasses.replace(data, with_captions=False))
    config.generator.num_classes = 5
    with pytest.raises(ValueError, match="class- or text-conditional, not both"):
        make_task(config)
