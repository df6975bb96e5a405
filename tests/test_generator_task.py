"""The generator task through the real launcher, and the sampling CLI on its workdir."""

import json
import os
import pathlib

import numpy as np
import pytest
from conftest import run_launcher

from launch import sample as sample_cli

pytestmark = pytest.mark.slow


def gen_args(workdir: str, data_dir: str, tokenizer: str, steps: int) -> list[str]:
    return [
        "--config=configs/ar.py:tokenizer=titok,tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        f"--config.tokenizer_workdir={tokenizer}",
        f"--config.train.steps={steps}",
        "--config.train.checkpoint_every=2",
        "--config.train.eval_every=2",
        "--config.train.eval_examples=16",
        "--config.train.log_every=1",
        "--config.data.batch_size=8",
        "--config.generator.width=32",
        "--config.generator.depth=1",
        "--config.generator.heads=2",
        "--config.preview_per_class=2",
    ]


@pytest.fixture(scope="module")
def generator_workdir(tmp_path_factory, shapes_dir, launcher_env, tokenizer_workdir) -> str:
    workdir = str(tmp_path_factory.mktemp("ar"))
    first = run_launcher(gen_args(workdir, shapes_dir, tokenizer_workdir, 2), launcher_env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "frequency_baseline_cross_entropy" in first.stdout
    # A longer run on the same workdir: a longer schedule (40 steps at a learning rate that
    # learns in that many) changes the run, so it is refused unless asked for; then it
    # resumes from the step-2 checkpoint.
    longer = gen_args(workdir, shapes_dir, tokenizer_workdir, 40)
    longer += ["--config.optim.lr=0.01", "--config.optim.warmup_steps=5"]
    longer += ["--config.train.eval_every=20", "--config.train.checkpoint_every=20"]
    refused = run_launcher(longer, launcher_env)
    assert refused.returncode == 2 and "train.steps: 2 -> 40" in refused.stderr
    again = run_launcher([*longer, "--allow_config_change"], launcher_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint at step 2" in again.stdout
    return workdir


def test_generator_trains_evaluates_and_resumes(generator_workdir):
    lines = pathlib.Path(generator_workdir, "metrics.jsonl").read_text().splitlines()
    evals = [json.loads(line) for line in lines]
    final = [e for e in evals if "eval/cross_entropy" in e][-1]
    assert final["step"] == 40
    # It learned: the test cross-entropy is well below the best position-blind model's (the
    # entropy of the token frequencies): measured 1.5 against 3.9 nats on 2026-12-06.
    baseline = final["eval/frequency_baseline_cross_entropy"]
    assert 0 < final["eval/cross_entropy"] < baseline - 1.0, final
    assert os.path.isfile(os.path.join(generator_workdir, "images", "preview_0000040.png"))


def test_sample_cli_writes_grid_npz_and_stats(generator_workdir, tmp_path):
    out = tmp_path / "samples"
    args = ["--workdir", generator_workdir, "--num", "6", "--batch-size", "4", "--out", str(out)]
    assert sample_cli.main([*args, "--classes", "1,3", "--cfg", "2", "--png"]) == 0
    data = np.load(out / "samples.npz")
    assert data["images"].shape == (6, 32, 32, 3) and data["images"].dtype == np.uint8
    np.testing.assert_array_equal(data["labels"], [1, 1, 1, 3, 3, 3])
    stats = json.loads((out / "stats.json").read_text())
    # Two batches of 32 tokens: one forward pass per token each.
    assert stats["forward_passes"] == 2 * 32 and stats["tokens_generated"] == 6 * 32
    assert stats["steps_per_sample"] == 32
    # The options as flat keys: the shared ones and the categorical head's own.
    assert stats["options"] == {
        "temperature": 1.0, "cfg_scale": 2.0, "cfg_schedule": "constant",
        "cfg_interval": None, "top_k": 0, "top_p": 1.0,
    }  # fmt: skip
    assert stats["method"] == "ar" and stats["step_compression"] == 1.0
    assert len(list(out.glob("sample_*.png"))) == 6 and (out / "samples.png").is_file()
    # The same seed reproduces the same images.
    again = tmp_path / "again"
    assert sample_cli.main([*args[:-1], str(again), "--classes", "1,3", "--cfg", "2"]) == 0
    np.testing.assert_array_equal(np.load(again / "samples.npz")["images"], data["images"])


def test_sample_cli_sjd_reports_compression(generator_workdir, tmp_path, capsys):
    out = tmp_path / "sjd"
    args = ["--workdir", generator_workdir, "--num", "4", "--out", str(out), "--cfg", "2"]
    assert sample_cli.main([*args, "--method", "sjd", "--sjd-window", "4"]) == 0
    assert "step compression" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    # TiTok's 1D layout gets its default init; one batch of 32 tokens.
    assert stats["method"] == "sjd"
    assert stats["sjd"] == {"window": 4, "init": "repeat_prev", "coupling": "maximal"}
    assert stats["forward_passes"] <= 32
    assert stats["step_compression"] == pytest.approx(32 / stats["forward_passes"])
    assert 0 <= stats["accepted_per_pass"] <= 3 and stats["row_step_compression"] >= 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sjd-window", "4"], "apply only with --method sjd"),
        (["--method", "sjd", "--sjd-window", "0"], "window must be >= 1"),
        (["--method", "sjd", "--sjd-init", "repeat_vertical"], "does not apply to the 1D layout"),
        (["--num", "0"], "--num must be positive"),
        (["--class", "5"], "class 5 is out of range"),
        (["--classes", "0,x"], "comma-separated integers"),
        (["--prompt", "a red circle"], "--prompt needs a text-conditional generator"),
        (["--top-p", "0"], "top_p must be in"),
        # Coupled windows are a Token-Shuffle head's option; this generator's head is categorical.
        (["--coupled-windows"], "unknown sampling option 'coupled'"),
        (["--method", "sjd", "--coupled-windows"], "unknown sampling option 'coupled'"),
    ],
)
def test_sample_cli_bad_input(generator_workdir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert sample_cli.main(["--workdir", generator_workdir, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists(), "a failed call must leave no output"


def test_sample_cli_rejects_other_workdirs(tokenizer_workdir, tmp_path, capsys):
    out = tmp_path / "out"
    assert sample_cli.main(["--workdir", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "not a training workdir" in capsys.readouterr().err
    assert sample_cli.main(["--workdir", tokenizer_workdir, "--out", str(out)]) == 2
    assert "not a generator's" in capsys.readouterr().err
    assert not out.exists()


def _state_arrays(workdir: str) -> dict[str, np.ndarray]:
    """Every array of the newest checkpoint's train state, by path."""
    import jax

    from visgen.train.checkpoint import Checkpointer

    ckpt = Checkpointer(workdir, async_save=False)
    restored = ckpt.restore_state(None)  # as saved, without a target structure
    ckpt.close()
    leaves = jax.tree_util.tree_leaves_with_path(restored)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def test_generator_resumed_after_sigterm_equals_the_uninterrupted_run(
    tmp_path, shapes_dir, launcher_env, tokenizer_workdir
):
    """Stopped by SIGTERM mid-run and resumed, a generator's final train state (parameters,
    EMA, optimizer, step, RNG) is bit-identical to the run that was never stopped."""
    import signal
    import subprocess
    import sys
    import threading

    from conftest import REPO

    steps = 8

    def args(workdir):
        out = gen_args(workdir, shapes_dir, tokenizer_workdir, steps)
        return [*out, "--config.train.checkpoint_every=1000", "--config.train.eval_every=0"]

    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    done = run_launcher(args(straight), launcher_env)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.train", *args(resumed)],
        cwd=REPO, env=launcher_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = []
    watchdog = threading.Timer(300, proc.kill)  # reading stdout has no timeout of its own
    watchdog.start()
    try:
        for line in proc.stdout:
            output.append(line)
            if line.startswith("step 3/"):
                proc.send_signal(signal.SIGTERM)
    finally:
        watchdog.cancel()
    assert proc.wait(timeout=120) == 143, "".join(output)[-3000:]
    stopped = [line for line in output if "SIGTERM received: checkpoint saved at step" in line]
    assert stopped and int(stopped[0].split("step")[-1].split(";")[0]) < steps, output
    again = run_launcher(args(resumed), launcher_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint at step" in again.stdout
    a, b = _state_arrays(straight), _state_arrays(resumed)
    assert a.keys() == b.keys() and int(a["['step']"]) == steps
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
