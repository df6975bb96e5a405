"""`TokenSpec`: validation, JSON round trips and descriptions for the four kinds, a light
import, and token caches that record the spec and refuse a cache of another spec."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from visgen.data import DataConfig
from visgen.data.token_cache import (
    METADATA_FILE,
    TokenCacheSource,
    TokenizerRecord,
    build_token_cache,
    check_cache,
)
from visgen.token_spec import TokenSpec

SPECS = {
    "discrete": TokenSpec.discrete((32,), 1024, channels=12),
    "continuous": TokenSpec.continuous((8, 8), 4),
    "dimwise": TokenSpec.dimwise((2, 16, 16), 8, 16, needs_text=True),
    "multiscale": TokenSpec.multiscale([(1, 1), (2, 2), (4, 4)], 4096, channels=32),
}


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_spec_round_trips_through_json(kind):
    spec = SPECS[kind]
    assert spec.kind == kind
    restored = TokenSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec and hash(restored) == hash(spec)
    assert isinstance(restored.layout, tuple)


def test_spec_fields_and_sizes_per_kind():
    discrete, continuous = SPECS["discrete"], SPECS["continuous"]
    dimwise, multiscale = SPECS["dimwise"], SPECS["multiscale"]
    assert (discrete.layout, discrete.vocab_size, discrete.channels) == ((32,), 1024, 12)
    assert (discrete.num_tokens, discrete.ids_per_example, discrete.needs_text) == (32, 32, False)
    assert (continuous.vocab_size, continuous.channels, continuous.num_tokens) == (0, 4, 64)
    assert continuous.ids_per_example == 0
    assert (dimwise.channels, dimwise.bins, dimwise.vocab_size) == (8, 16, 0)
    assert (dimwise.num_tokens, dimwise.ids_per_example) == (512, 512 * 8)
    assert multiscale.layout == (4, 4) and multiscale.scales == ((1, 1), (2, 2), (4, 4))
    assert multiscale.num_tokens == multiscale.ids_per_example == 1 + 4 + 16
    # Lists and numpy ints are normalised, so specs from configs or JSON compare equal.
    assert TokenSpec("discrete", [4, np.int64(4)], 16) == TokenSpec.discrete((4, 4), 16)


def test_spec_describe_is_one_line_per_kind():
    assert SPECS["discrete"].describe() == "discrete 32 ids of 1024 codes (channels 12)"
    assert SPECS["continuous"].describe() == "continuous 8x8 latents of 4 channels"
    assert SPECS["dimwise"].describe() == (
        "dimwise 2x16x16 positions of 8 channels x 16 bins, text-conditioned"
    )
    assert SPECS["multiscale"].describe() == (
        "multiscale ids on scales (1x1, 2x2, 4x4) of 4096 codes (channels 32)"
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="tokens", layout=(4,), vocab_size=8), "kind must be one of"),
        (dict(kind="discrete", layout=(4,)), "discrete TokenSpec needs vocab_size > 0"),
        (dict(kind="discrete", layout=(4,), vocab_size=8, bins=4), "bins must be 0"),
        (dict(kind="discrete", layout=(4,), vocab_size=8, scales=((4,),)), "scales must be"),
        (dict(kind="continuous", layout=(4,), vocab_size=8, channels=4), "vocab_size must be 0"),
        (dict(kind="continuous", layout=(4,)), "continuous TokenSpec needs channels > 0"),
        (dict(kind="dimwise", layout=(4,), channels=4), "dimwise TokenSpec needs bins > 0"),
        (dict(kind="dimwise", layout=(4,), bins=4), "dimwise TokenSpec needs channels > 0"),
        (dict(kind="multiscale", layout=(4,), vocab_size=8), "needs at least one scale"),
        (
            dict(kind="multiscale", layout=(2,), vocab_size=8, scales=((1,), (4,))),
            r"layout == scales\[-1\]",
        ),
        (
            dict(kind="multiscale", layout=(4,), vocab_size=8, scales=((1, 1), (4,))),
            "layout's rank",
        ),
        (dict(kind="discrete", layout=(0, 4), vocab_size=8), "positive ints"),
        (dict(kind="discrete", layout=(1, 2, 3, 4), vocab_size=8), "1 to 3 positive ints"),
        (dict(kind="discrete", layout="32", vocab_size=8), "tuple of ints"),
        (dict(kind="discrete", layout=(4,), vocab_size=-1), "vocab_size must be an int >= 0"),
        (dict(kind="discrete", layout=(4,), vocab_size=True), "vocab_size must be an int"),
        (dict(kind="discrete", layout=(4,), vocab_size=8.0), "vocab_size must be an int"),
        (dict(kind="discrete", layout=(4,), vocab_size=8, needs_text=1), "must be a bool"),
    ],
)
def test_spec_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenSpec(**kwargs)


def test_spec_constructor_and_record_errors():
    with pytest.raises(ValueError, match="at least one scale"):
        TokenSpec.multiscale([], 8)
    with pytest.raises(ValueError, match=r"unknown TokenSpec keys \['vocab'\]"):
        TokenSpec.from_dict({"kind": "discrete", "layout": [4], "vocab": 8})
    with pytest.raises(ValueError, match=r"needs \['kind'\]"):
        TokenSpec.from_dict({"layout": [4], "vocab_size": 8})


def test_importing_the_spec_does_not_import_jax_or_flax():
    code = (
        "import sys, visgen.token_spec\n"
        "heavy = sorted(m for m in ('jax', 'flax') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


# --- token caches record the spec ------------------------------------------------------

SPEC = TokenSpec.discrete((2, 2), 16, channels=4)


def _record(spec: TokenSpec = SPEC) -> TokenizerRecord:
    return TokenizerRecord(workdir="/tok", step=10, fingerprint="ab" * 32, spec=spec)


def _batches(n: int = 3):
    images = np.zeros((n, 4, 4, 3), np.float32)
    yield {"image": images, "label": np.arange(n), "mask": np.ones(n, bool)}


@pytest.fixture
def cache(tmp_path) -> tuple[str, DataConfig]:
    directory = str(tmp_path / "cache")
    data_cfg = DataConfig(random_flip=False)
    encode = lambda images: np.tile(np.arange(4, dtype=np.int32), (len(images), 1))
    reported = []

    def progress(batches, total, desc):
        reported.append((total, desc))
        return batches

    build_token_cache(directory, encode, _batches(), 1, _record(), data_cfg, progress=progress)
    assert reported == [(1, "token cache")]
    return directory, data_cfg


def test_cache_records_its_spec_and_accepts_the_same(cache):
    directory, data_cfg = cache
    metadata = check_cache(directory, _record(), data_cfg)
    assert metadata["format"] == "visgen-token-cache-v2"
    assert metadata["tokenizer"]["spec"] == SPEC.to_dict()
    assert metadata["tokens_per_record"] == SPEC.ids_per_example == 4
    source = TokenCacheSource(directory)
    assert len(source) == 3 and list(source[2]["tokens"]) == [0, 1, 2, 3]
    assert int(source[2]["label"]) == 2


def test_cache_refuses_another_spec_naming_both(cache):
    directory, data_cfg = cache
    other = TokenSpec.discrete((2, 2), 32, channels=4)
    with pytest.raises(ValueError) as error:
        check_cache(directory, _record(other), data_cfg)
    message = str(error.value)
    assert "holds tokens of spec discrete 2x2 ids of 16 codes" in message
    assert "this run's tokenizer makes discrete 2x2 ids of 32 codes" in message


def test_cache_of_format_v1_must_be_rebuilt(cache):
    directory, data_cfg = cache
    path = os.path.join(directory, METADATA_FILE)
    with open(path) as f:
        metadata = json.load(f)
    metadata["format"] = "visgen-token-cache-v1"
    with open(path, "w") as f:
        json.dump(metadata, f)
    with pytest.raises(ValueError, match="v1 token cache.*does not record the token spec.*rebuild"):
        check_cache(directory, _record(), data_cfg)


def test_cache_build_refuses_latents_and_ids_of_the_wrong_width(tmp_path):
    data_cfg = DataConfig(random_flip=False)
    encode = lambda images: np.zeros((len(images), 4), np.int32)
    continuous = _record(TokenSpec.continuous((2, 2), 4))
    with pytest.raises(ValueError, match="store integer ids"):
        build_token_cache(str(tmp_path / "a"), encode, _batches(), 1, continuous, data_cfg)
    dimwise = _record(TokenSpec.dimwise((2, 2), 3, 8))  # 12 ids per example, not 4
    with pytest.raises(ValueError, match=r"expected \[B, 12\]"):
        build_token_cache(str(tmp_path / "b"), encode, _batches(), 1, dimwise, data_cfg)
