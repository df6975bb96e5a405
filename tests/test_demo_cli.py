"""`launch.demo`'s command line: recipes and resuming an earlier run.

The demo itself (minutes of training) is not run here; `make demo` is.
"""

import json

import pytest

from configs import vq2d
from launch import demo
from launch.recipes import DEFAULT_RECIPE, RECIPES
from visgen.config import load_config_file
from visgen.train.workdir import save_config


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_names_tiny_configs_that_load(name):
    recipe = RECIPES[name]
    tokenizer = load_config_file(recipe.tokenizer)
    generator = load_config_file(recipe.generator)
    assert tokenizer.task == "tokenizer" and generator.task == "generator"
    # Both halves run on the embedded 32 px data the demo builds.
    assert tokenizer.data.image_size == generator.data.image_size == 32
    assert tokenizer.data.name == generator.data.name == "shapes"


def test_the_default_recipe_is_the_grid_tokenizer_with_causal_token_shuffle():
    recipe = RECIPES[DEFAULT_RECIPE]
    tokenizer = load_config_file(recipe.tokenizer).tokenizer
    head = load_config_file(recipe.generator).generator.head
    # vq2d's 16 x 16 grid is fused in 2 x 2 windows drawn by a causal window head.
    assert tokenizer.name == "vq2d" and head.name == "token_shuffle"
    assert head.window == 2 and head.causal
    assert (tokenizer.image_size // tokenizer.patch_size) % head.window == 0


def test_demo_refuses_to_resume_a_run_of_another_recipe(tmp_path, capsys):
    out = tmp_path / "demo"
    save_config(str(out / "tokenizer"), vq2d.get_config("tiny"))
    assert demo.main(["--out", str(out), "--recipe", "titok"]) == 2
    err = capsys.readouterr().err
    assert "recipe vq2d" in err and "--recipe vq2d" in err
    # Nothing was built or trained: the data folder beside `out` does not exist.
    assert not (tmp_path / "data").exists()
    assert not (out / demo.RECIPE_FILE).exists()


def test_demo_refuses_a_recorded_recipe_that_differs(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    record = dict(name="titok", tokenizer="configs/titok.py:tiny", generator="x")
    (out / demo.RECIPE_FILE).write_text(json.dumps(record))
    assert demo.main(["--out", str(out)]) == 2
    assert "--recipe titok" in capsys.readouterr().err
    assert json.loads((out / demo.RECIPE_FILE).read_text()) == record


def test_demo_rejects_an_unknown_recipe(tmp_path):
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path / "demo"), "--recipe", "nonesuch"])
