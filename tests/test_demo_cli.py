"""`launch.demo`'s command line: tokenizer choice and resuming an earlier run.

The demo itself (minutes of training) is not run here; `make demo` is.
"""

import pytest

from configs import titok, vq2d
from launch import demo
from visgen.config import load_config_file
from visgen.train.workdir import save_config


def test_every_demo_tokenizer_has_a_tiny_config():
    assert set(demo.TOKENIZERS) == {"titok", "vq2d"}
    assert demo.DEFAULT_TOKENIZER in demo.TOKENIZERS
    for name, module in (("titok", titok), ("vq2d", vq2d)):
        assert demo.TOKENIZERS[name] == f"configs/{name}.py:tiny"
        assert module.get_config("tiny").tokenizer.name == name


def test_every_demo_generator_fits_its_tokenizer():
    assert set(demo.GENERATORS) == set(demo.TOKENIZERS)
    for name, module in (("titok", titok), ("vq2d", vq2d)):
        generator = load_config_file(demo.GENERATORS[name]).generator
        tokenizer = module.get_config("tiny").tokenizer
        # vq2d's 16 x 16 grid is fused in 2 x 2 windows (a causal window head); TiTok's 1D
        # tokens are not (one token per step).
        head = generator.head
        assert head.name == ("token_shuffle" if name == "vq2d" else "categorical")
        window = head.get("window", 1)
        assert window == (2 if name == "vq2d" else 1)
        if name == "vq2d":
            assert head.causal
            assert (tokenizer.image_size // tokenizer.patch_size) % window == 0


def test_demo_refuses_to_resume_a_run_of_another_tokenizer(tmp_path, capsys):
    out = tmp_path / "demo"
    save_config(str(out / "tokenizer"), vq2d.get_config("tiny"))
    assert demo.main(["--out", str(out), "--tokenizer", "titok"]) == 2
    err = capsys.readouterr().err
    assert "vq2d tokenizer" in err and "--tokenizer vq2d" in err
    # Nothing was built or trained: the data folder beside `out` does not exist.
    assert not (tmp_path / "data").exists()


def test_demo_rejects_an_unknown_tokenizer(tmp_path):
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path / "demo"), "--tokenizer", "flextok"])
