"""Config variants and their errors; reading a config file stays light."""

import glob
import os
import subprocess
import sys

import pytest
from conftest import REPO

from visgen.config import load_config_file, parse_variant

CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
HEAVY = ("orbax", "grain", "tensorflow_datasets")


def test_parse_variant_types_and_flags():
    v = parse_variant("tiny,size=B,tokens=64", dict(tiny=False, size="S", tokens=0))
    assert v == dict(tiny=True, size="B", tokens=64)


def test_parse_variant_unknown_key_lists_valid():
    with pytest.raises(ValueError, match="unknown config variant 'sise'.*size"):
        parse_variant("sise=B", dict(size="S"))


@pytest.mark.parametrize(
    "variant, tokens, width",
    [("tiny", 32, 64), ("size=S", 128, 512), ("size=B", 64, 768), ("size=L", 32, 1024)],
)
def test_titok_variants(variant, tokens, width):
    config = load_config_file(f"configs/titok.py:{variant}")
    assert config.tokenizer.num_tokens == tokens
    assert config.tokenizer.width == width
    with pytest.raises(AttributeError):
        config.train.stepz = 3  # locked: unknown keys cannot be added


def test_titok_video_variant():
    config = load_config_file("configs/titok.py:tiny,video=8")
    assert config.data.name == "shapes_video" and config.tokenizer.num_frames == 8


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_reading_a_config_file_imports_no_checkpointing_or_data_pipeline(path):
    # A fresh interpreter: this one has long imported everything.
    code = (
        "import sys\n"
        "from visgen.config import load_config_file\n"
        f"load_config_file({os.path.relpath(path, REPO) + ':tiny'!r})\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
