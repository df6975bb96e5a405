"""Config variants and their errors."""

import pytest

from visgen.config import load_config_file, parse_variant


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
