"""The real launcher, small: exact resume after SIGTERM, 8 simulated devices, bad input."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from conftest import REPO, run_launcher

from visgen.train.checkpoint import Checkpointer
from visgen.train.workdir import load_config

pytestmark = pytest.mark.slow

STEPS = 24


def tiny_args(workdir: str, data_dir: str, *extra: str) -> list[str]:
    return [
        "--config=configs/titok.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        f"--config.train.steps={STEPS}",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=1000",
        "--config.train.eval_every=0",
        "--config.train.eval_examples=32",
        "--config.data.batch_size=16",
        *extra,
    ]


def read(workdir: str, name: str) -> str:
    return pathlib.Path(workdir, name).read_text()


def final_arrays(workdir: str) -> dict[str, np.ndarray]:
    """Every array of the newest checkpoint's train state, by path."""
    ckpt = Checkpointer(workdir, async_save=False)
    restored = ckpt.restore_state(None)  # as saved, without a target structure
    ckpt.close()
    leaves = jax.tree_util.tree_leaves_with_path(restored)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def test_sigterm_resume_matches_uninterrupted_run(tmp_path, shapes_dir, launcher_env):
    straight = str(tmp_path / "straight")
    done = run_launcher(tiny_args(straight, shapes_dir), launcher_env)
    assert done.returncode == 0, done.stderr[-3000:]
    # The first interval holds compilation: no rate, "compiling"; later lines have rates.
    steps = [line for line in done.stdout.splitlines() if line.startswith("step ")]
    assert steps[0].startswith("step 1/") and steps[0].endswith("| compiling"), steps[0]
    assert "steps/s" in steps[1] and "ETA" in steps[1], steps[1]
    # 24 steps against the tiny TiTok's 50 warm-up steps: said once, not silently.
    assert done.stdout.count(f"warning: train.steps={STEPS} <= optim.warmup_steps=50") == 1

    resumed = str(tmp_path / "resumed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.train", *tiny_args(resumed, shapes_dir)],
        cwd=REPO,
        env=launcher_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
    # 143: preempted, checkpoint saved (distinct from success, bad input 2 and NaN 3).
    assert proc.wait(timeout=120) == 143, "".join(output)[-3000:]
    stopped = [line for line in output if "SIGTERM received: checkpoint saved at step" in line]
    assert stopped, "".join(output)[-3000:]
    stop_step = int(stopped[0].split("step")[-1].split(";")[0])
    assert 3 <= stop_step < STEPS, "the run must stop mid-way"

    again = run_launcher(tiny_args(resumed, shapes_dir), launcher_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from checkpoint at step {stop_step}" in again.stdout

    a, b = final_arrays(straight), final_arrays(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert int(a["['step']"]) == STEPS
    # The resolved config and the periodic outputs are in the workdir.
    assert load_config(resumed).train.steps == STEPS
    lines = [json.loads(x) for x in read(resumed, "metrics.jsonl").splitlines()]
    assert any("eval/psnr" in x for x in lines)
    assert os.listdir(os.path.join(resumed, "images"))


def test_launcher_on_8_simulated_devices(tmp_path, shapes_dir, launcher_env):
    env = dict(launcher_env, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    workdir = str(tmp_path / "sharded")
    args = tiny_args(
        workdir,
        shapes_dir,
        "--config.train.mesh_fsdp=2",
        "--config.train.min_fsdp_size=1024",
    )
    args = [a.replace(f"steps={STEPS}", "steps=4") for a in args]
    done = run_launcher(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    # It ran on 8 devices, as a 4 x 2 data x FSDP mesh, with parameters split over fsdp.
    assert "mesh: data=4, fsdp=2 (8 devices, 1 processes)" in done.stdout, done.stdout
    overview = read(workdir, "params.txt")
    assert "'fsdp'" in overview, overview
    # The same run on one device: every step's loss, and every parameter, EMA and optimizer
    # array after 4 steps, agree (sharding changes only the order of float reductions).
    single = str(tmp_path / "single")
    single_args = [a.replace(workdir, single) for a in args if "mesh_fsdp" not in a]
    done = run_launcher(single_args, launcher_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(1 devices, 1 processes)" in done.stdout, done.stdout

    def losses(w):
        return [json.loads(x)["train/loss"] for x in read(w, "metrics.jsonl").splitlines()
                if "train/loss" in x]  # fmt: skip

    assert losses(workdir) == pytest.approx(losses(single), rel=1e-4)
    assert len(losses(single)) == 4
    sharded, one = final_arrays(workdir), final_arrays(single)
    assert sharded.keys() == one.keys()
    assert int(one["['step']"]) == 4
    for key in one:
        np.testing.assert_allclose(sharded[key], one[key], rtol=1e-3, atol=1e-5, err_msg=key)


def test_unknown_config_key_fails_naming_it(tmp_path, shapes_dir, launcher_env):
    done = run_launcher(
        tiny_args(str(tmp_path / "w"), shapes_dir, "--config.train.stepz=3"), launcher_env
    )
    assert done.returncode != 0
    assert "stepz" in done.stderr


def test_missing_dataset_fails_clearly(tmp_path, launcher_env):
    args = tiny_args(
        str(tmp_path / "w"), str(tmp_path / "empty"), "--config.data.name=imagenet2012"
    )
    done = run_launcher(args, launcher_env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "imagenet2012" in done.stderr and "Traceback" not in done.stderr
