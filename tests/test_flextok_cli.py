"""`--num-tokens k` through the real tools on a FlexTok workdir trained for 2 steps:
`evals.recon`, `evals.fid rfid` (the shapes classifier as the feature network) and
`launch.sample` on an AR generator trained on FlexTok's 1D ids (which runs only the k
AR steps a k-token prefix needs).

A 2-step model reconstructs noise, so these check the plumbing (the prefix reaches
the decoder, results record k, bad k is refused), not quality: `bench/flextok_prefix.py`
measures that on a trained model, and `tests/test_flextok.py` checks that the
prefix decode is what these tools call.
"""

import json
import os

import numpy as np
import pytest
from conftest import TOKENIZER_CONFIGS

from evals import fid as fid_cli
from evals import recon as recon_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flextok(trained_workdir) -> str:
    return trained_workdir(TOKENIZER_CONFIGS["flextok"])


def test_recon_and_rfid_decode_the_prefix_they_are_given(flextok, capsys):
    assert recon_cli.main(["--workdir", flextok, "--max-examples", "8", "--num-tokens", "1"]) == 0
    assert recon_cli.main(["--workdir", flextok, "--max-examples", "8", "--num-tokens", "32"]) == 0
    for k in (1, 32):
        with open(os.path.join(flextok, "eval", f"recon_step_0000002_k{k}.json")) as f:
            result = json.load(f)
        assert result["num_tokens"] == k and result["frames"] == 8
    assert recon_cli.main(["--workdir", flextok, "--num-tokens", "33"]) == 2
    assert "1..32" in capsys.readouterr().err
    common = ["rfid", "--workdir", flextok, "--features", "shapes", "--max-examples", "8"]
    out = os.path.join(flextok, "rfid_k4.json")
    assert fid_cli.main([*common, "--batch-size", "8", "--num-tokens", "4", "--out", out]) == 0
    with open(out) as f:
        result = json.load(f)
    assert result["num_tokens"] == 4 and result["frames"] == 8 and np.isfinite(result["rfid"])
    assert fid_cli.main([*common, "--num-tokens", "33"]) == 2


def test_sample_decodes_a_prefix_of_the_generated_ids(flextok, trained_workdir, tmp_path):
    from launch import sample as sample_cli

    generator = trained_workdir("configs/ar.py:tokenizer=flextok,tiny", tokenizer_workdir=flextok)
    argv = ["--workdir", generator, "--num", "3", "--num-tokens", "4"]
    stats = sample_cli.run([*argv, "--out", str(tmp_path / "k4")])
    # Plain AR stops after the 4 steps that draw the prefix (one pass per step, one batch).
    assert stats["num_tokens"] == 4 and stats["steps_per_sample"] == 4
    assert stats["forward_passes"] == 4 and stats["step_compression"] == 1.0
    assert stats["tokens_generated"] == 3 * 4
    with np.load(tmp_path / "k4" / "samples.npz") as f:
        assert f["images"].shape == (3, 32, 32, 3)
    full = sample_cli.run([*argv[:-2], "--out", str(tmp_path / "all")])
    assert full["steps_per_sample"] == 32 and full["forward_passes"] == 32
    assert full["tokens_generated"] == 3 * 32
    with pytest.raises(sample_cli.UsageError, match="1..32"):
        sample_cli.run(["--workdir", generator, "--num", "3", "--num-tokens", "0", "--out",
                        str(tmp_path / "bad")])  # fmt: skip


def test_the_demo_measures_each_prefix_length(flextok, trained_workdir, shapes_dir, tmp_path):
    from launch import demo
    from launch import sample as sample_cli
    from visgen.evaluation import load_features

    generator = trained_workdir("configs/ar.py:tokenizer=flextok,tiny", tokenizer_workdir=flextok)
    # The demo's own sampling flags, with its --num-tokens replaced per k; k = 8 was
    # sampled by the demo already, so its result is reused, not drawn again.
    argv = ["--workdir", generator, "--out", str(tmp_path / "s"), "--num", "4", "--num-tokens", "8"]
    done = {8: {"ar_steps_per_sample": 8, "gfid": 1.5, "class_accuracy": 0.25}}
    features = load_features("shapes")
    rows = demo._prefix_metrics(
        sample_cli, argv, (1, 4, 8), done, features, str(tmp_path), shapes_dir
    )
    assert [r["k"] for r in rows] == [1, 4, 8] and [r["ar_steps_per_sample"] for r in rows] == [
        1,
        4,
        8,
    ]
    assert rows[2]["gfid"] == 1.5 and not os.path.exists(tmp_path / "samples_k8")
    for row in rows[:2]:
        assert np.isfinite(row["gfid"]) and 0 <= row["class_accuracy"] <= 1
        with open(tmp_path / f"samples_k{row['k']}" / "stats.json") as f:
            assert json.load(f)["steps_per_sample"] == row["k"]
