"""A generator pins its tokenizer, and a run validates before it writes (through the real CLIs).

Each refusal is checked as a user meets it: the command's exit status, the
last line of stderr naming the problem, and a checksum of the workdir
before and after (a refused command changes nothing).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, TOKENIZER_CONFIGS, run_launcher, tiny_config

pytestmark = pytest.mark.slow


def checksum(directory: str) -> str:
    """SHA-256 over every file's relative path and bytes below `directory`."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def sample(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.sample", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def generator_args(workdir: str, tokenizer: str, data_dir: str, *extra: str) -> list[str]:
    return [
        "--config=configs/ar.py:tokenizer=vq2d,tiny,shuffle=2",
        f"--workdir={workdir}",
        f"--config.tokenizer_workdir={tokenizer}",
        f"--config.data.data_dir={data_dir}",
        "--config.train.steps=2",
        "--config.train.eval_every=0",
        "--config.data.batch_size=4",
        *extra,
    ]


def test_a_generator_pins_its_tokenizer_and_a_resume_keeps_its_config(
    trained_workdir, shapes_dir, launcher_env, tmp_path
):
    from visgen.tasks.run import train_config

    tokenizer = str(tmp_path / "tokenizer")
    shutil.copytree(trained_workdir(TOKENIZER_CONFIGS["vq2d"]), tokenizer)
    generator = str(tmp_path / "generator")
    done = run_launcher(generator_args(generator, tokenizer, shapes_dir), launcher_env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(generator, "config.json")) as f:
        stored = json.load(f)
    assert stored["tokenizer_step"] == 2 and len(stored["tokenizer_fingerprint"]) == 64

    # The tokenizer trains on; the generator keeps decoding with the checkpoint it was
    # trained on, and says which.
    train_config(tiny_config(TOKENIZER_CONFIGS["vq2d"], shapes_dir, steps=4), tokenizer,
                 allow_config_change=True)  # fmt: skip
    out = str(tmp_path / "samples")
    done = sample(["--workdir", generator, "--out", out, "--num", "2"], launcher_env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, "stats.json")) as f:
        assert json.load(f)["tokenizer_step"] == 2

    # A resume that changes the model is refused, naming the key; nothing changes.
    before = checksum(generator)
    done = run_launcher(
        generator_args(generator, tokenizer, shapes_dir, "--config.generator.width=64"),
        launcher_env,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "generator.width: 96 -> 64" in last_line(done)
    assert checksum(generator) == before

    # With the pinned tokenizer checkpoint gone, sampling and resuming refuse in one line.
    shutil.rmtree(os.path.join(tokenizer, "checkpoints", "2"))
    for done in (
        sample(["--workdir", generator, "--out", str(tmp_path / "again"), "--num", "2"],
               launcher_env),
        run_launcher(generator_args(generator, tokenizer, shapes_dir), launcher_env),
    ):  # fmt: skip
        assert done.returncode == 2, done.stderr[-3000:]
        assert "pinned to" in last_line(done) and "step 2) is gone" in last_line(done)
    assert checksum(generator) == before
    assert not os.path.exists(tmp_path / "again")


def test_steps_must_be_positive_and_nothing_is_written(shapes_dir, launcher_env, tmp_path):
    workdir = str(tmp_path / "run")
    done = run_launcher(
        ["--config=configs/vq2d.py:tiny", f"--workdir={workdir}", "--config.train.steps=0",
         f"--config.data.data_dir={shapes_dir}"],
        launcher_env,
    )  # fmt: skip
    assert done.returncode == 2 and "train.steps must be positive" in last_line(done)
    assert not os.path.exists(workdir)


def test_gfid_names_the_generator_and_tokenizer_steps_of_its_samples(tmp_path):
    """fid.json (generation_fid's result) carries the sampler's record from stats.json."""
    from visgen.evaluation.generation import _sampler_record

    npz = tmp_path / "samples.npz"
    assert _sampler_record(str(npz)) == {}  # no stats.json: nothing to name
    stats = {"workdir": "/w/gen", "step": 40, "tokenizer_step": 7, "method": "ar", "num": 4}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    named = {"workdir": "/w/gen", "step": 40, "tokenizer_step": 7, "method": "ar"}
    assert _sampler_record(str(npz)) == named
