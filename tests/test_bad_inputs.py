"""Every bad input is one clear line, and changes nothing (through the real CLIs).

One table (`CASES`) of bad inputs to `launch.train`, `launch.sample`,
`evals.fid` and `evals.recon`, each run as a user would (a subprocess with a
timeout). Each case asserts the exit status (2: bad input, unless the case says
otherwise), that the last line of stderr names the problem and that stderr
holds no traceback, and that a SHA-256 over every file of the workdir (or the
output directory) is the same before and after: validation happens before
anything is written. The cases run concurrently once per session; each check
is one parametrized test.

The README's "Bad inputs" table is this list: `VISGEN_BAD_INPUTS_TABLE=1
pytest tests/test_bad_inputs.py` rewrites it from the messages the commands
printed, and `test_readme_lists_every_case` fails when the two differ.
"""

import concurrent.futures
import dataclasses
import hashlib
import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import REPO

README = pathlib.Path(REPO, "README.md")
TABLE_START, TABLE_END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


@dataclasses.dataclass(frozen=True)
class Case:
    """A bad command line. `args` may name `{tok}` (a trained vq2d workdir), `{gen}` (a
    generator workdir's config), `{data}` (the shapes data dir), `{tmp}` (a scratch dir
    for this case), `{flat}` / `{classes}` / `{corrupt}` (image folders), `{file}` (a
    plain file); `watch` is the directory whose checksum must not change (None: the
    case writes on purpose); `expect` a regex the last stderr line must match."""

    id: str
    module: str
    args: tuple[str, ...]
    expect: str
    watch: str | None = "{tmp}/new"
    code: int = 2
    traceback: bool = False  # --debug / VISGEN_DEBUG: the traceback is shown
    env: tuple[tuple[str, str], ...] = ()
    what: str = ""  # the README's wording of the input


DATA = ("--config.data.data_dir={data}", "--config.data.batch_size=4", "--config.train.steps=2")
NEW = ("--workdir={tmp}/new", *DATA)
GEN = ("--config=configs/ar.py:tokenizer=vq2d,tiny", "--config.tokenizer_workdir={tok}", *NEW)
HOLD_OUT = ("--config.data.train_split=train[:50%]", "--config.data.eval_split=train[50%:]")
SAMPLE = ("--workdir={gen}", "--num=2")
TRAIN, SAMPLE_CLI, FID, RECON = "launch.train", "launch.sample", "evals.fid", "evals.recon"

CASES = [
    # launch.train: the config
    Case("config-file-missing", TRAIN, ("--config=configs/vq2d.pyy:tiny", "--workdir={tok}"),
         r"config file 'configs/vq2d.pyy' not found", watch="{tok}",
         what="a mistyped config path, against an existing workdir"),
    Case("config-variant", TRAIN, ("--config=configs/vq2d.py:tinyy", "--workdir={tok}"),
         r"unknown config variant 'tinyy'; valid: tiny", watch="{tok}",
         what="a bad variant string"),
    Case("config-key", TRAIN, ("--config=configs/vq2d.py:tiny", *NEW, "--config.train.stepz=3"),
         r"unknown config key 'train.stepz' \(did you mean 'steps'\?\)",
         what="a misspelled override key"),
    Case("config-value", TRAIN, ("--config=configs/vq2d.py:tiny", *NEW, "--config.train.seed=x"),
         r"--config.train.seed=x: not a valid int", what="an override value of the wrong type"),
    Case("unknown-flag", TRAIN, ("--config=configs/vq2d.py:tiny", "--workdirr={tmp}/new"),
         r"Unknown command line flag 'workdirr'", what="a misspelled flag"),
    Case("steps-zero", TRAIN, ("--config=configs/vq2d.py:tiny", *NEW, "--config.train.steps=0"),
         r"train.steps must be positive, got 0", what="`train.steps <= 0`"),
    Case("resume-changed-model", TRAIN,
         ("--config=configs/vq2d.py:tiny", "--workdir={tok}", *DATA, "--config.tokenizer.width=48"),
         r"holds a run of another config .*tokenizer.width: 64 -> 48", watch="{tok}",
         what="a resume whose model size differs from the stored run"),
    Case("debug-traceback", TRAIN,
         ("--config=configs/vq2d.py:tiny", *NEW, "--config.train.stepz=3", "--debug"),
         r"^ValueError: unknown config key 'train.stepz'", code=1, traceback=True,
         what="the same with `--debug`: the whole traceback"),
    Case("debug-env", TRAIN, ("--config=configs/vq2d.py:tinyy", "--workdir={tmp}/new"),
         r"^ValueError: config 'configs/vq2d.py:tinyy'", code=1, traceback=True,
         env=(("VISGEN_DEBUG", "1"),),
         what="a bad variant with `VISGEN_DEBUG=1`: the whole traceback"),
    Case("resume-checkpoint-mismatch", TRAIN,
         ("--config=configs/vq2d.py:tiny", "--workdir={tok}", *DATA, "--config.tokenizer.width=48",
          "--allow_config_change"),
         r"checkpoint at step 2 .* does not fit this config's model .*\(64,\) in the checkpoint, "
         r"\(48,\) in the model", watch="{tok}",
         what="the same with `--allow_config_change`: the checkpoint does not fit the model"),
    # launch.train: what the config points at
    Case("generator-no-tokenizer", TRAIN, ("--config=configs/ar.py:tokenizer=vq2d,tiny", *NEW),
         r"config.tokenizer_workdir is empty",
         what="a generator config without `tokenizer_workdir`"),
    Case("two-stage-no-proxy", TRAIN, ("--config=configs/titok.py:tiny,two_stage", *NEW),
         r"no proxy: a two_stage TiTok needs --config.tokenizer.proxy_workdir",
         what="`titok.py:tiny,two_stage` without `tokenizer.proxy_workdir`"),
    Case("folder-no-eval-split", TRAIN,
         ("--config=configs/vq2d.py:tiny", *NEW, "--config.data.name=folder",
          "--config.data.folder={flat}"),
         r"has no 'test' subfolder, so split 'test' would read the training images",
         what="a folder dataset with no eval images (no `test/` subfolder, no held-out fraction)"),
    Case("folder-unlabelled-classes", TRAIN,
         (*GEN, "--config.data.name=folder", "--config.data.folder={flat}", *HOLD_OUT),
         r"has no class labels .*class-conditional with 5 classes",
         what="an unlabelled folder for a class-conditional generator"),
    Case("labels-out-of-range", TRAIN, (*GEN, "--config.data.name=digits"),
         r"digits/32 has 10 classes but the model has 5 .*num_classes=10",
         what="`configs/ar.py:...,tiny` with `--config.data.name=digits` (10 classes, model 5)"),
    Case("corrupt-image", TRAIN,
         ("--config=configs/vq2d.py:tiny", *NEW, "--config.data.name=folder",
          "--config.data.folder={corrupt}"),
         r"cannot read image .*0_broken.png", watch=None,
         what="a corrupt image in a folder dataset (found when read, after the run starts)"),
    Case("nan-stop", TRAIN,
         ("--config=configs/vq2d.py:tiny", *NEW, "--config.optim.lr=inf",
          "--config.optim.grad_clip=0"),
         r"non-finite loss or gradients at step 1; .* No checkpoint was saved before it",
         watch=None, code=3, what="a run that diverges before its first checkpoint (exit 3)"),
    # launch.sample: flags checked before the model loads
    Case("sample-cfg-nan", SAMPLE_CLI, (*SAMPLE, "--out={tmp}/new", "--cfg=nan"),
         r"--cfg must be a finite number, got nan", what="`--cfg nan`"),
    Case("sample-temperature-inf", SAMPLE_CLI, (*SAMPLE, "--out={tmp}/new", "--temperature=inf"),
         r"--temperature must be a finite number, got inf", what="`--temperature inf`"),
    Case("sample-top-p-nan", SAMPLE_CLI, (*SAMPLE, "--out={tmp}/new", "--top-p=nan"),
         r"--top-p must be a finite number, got nan", what="`--top-p nan`"),
    Case("sample-out-file", SAMPLE_CLI, (*SAMPLE, "--out={file}"),
         r"--out .*file is a file: give a directory", watch="{gen}",
         what="`--out` naming an existing file"),
    Case("sample-sjd-init", SAMPLE_CLI,
         (*SAMPLE, "--out={tmp}/new", "--method=sjd", "--sjd-init=bogus"),
         r"argument --sjd-init: invalid choice: 'bogus'", what="`--sjd-init bogus`"),
    Case("sample-sjd-flag-without-sjd", SAMPLE_CLI,
         (*SAMPLE, "--out={tmp}/new", "--sjd-window=4"),
         r"apply only with --method sjd", what="`--sjd-window` without `--method sjd`"),
    Case("sample-class-range", SAMPLE_CLI, (*SAMPLE, "--out={tmp}/new", "--class=7"),
         r"class 7 is out of range: this generator has classes 0..4",
         what="`--class 7` for a 5-class generator"),
    Case("sample-tokenizer-workdir", SAMPLE_CLI, ("--workdir={tok}", "--out={tmp}/new"),
         r"is a 'tokenizer' workdir, not a generator's", what="a tokenizer workdir"),
    # evals
    Case("recon-no-workdir", RECON, ("--workdir={tmp}/new",),
         r"is not a training workdir: config.json is missing", what="a missing workdir"),
    Case("fid-samples-missing", FID,
         ("gfid", "--samples={tmp}/new/s.npz", "--features=shapes", "--ref-dataset=shapes"),
         r"samples file not found", what="`gfid` with a missing samples file"),
    Case("fid-alphas", FID, ("pfid", "--workdir={tok}", "--features=shapes", "--alphas=2"),
         r"--alphas must be numbers in \[0, 1\]", watch="{tok}", what="`pfid --alphas 2`"),
    Case("fid-features", FID, ("rfid", "--workdir={tok}", "--features=nosuch"),
         r"unknown features 'nosuch'", watch="{tok}", what="`--features nosuch`"),
    Case("fid-no-features", FID, ("rfid", "--workdir={tok}"),
         r"the following arguments are required: --features", watch="{tok}",
         what="`rfid` without `--features`"),
]  # fmt: skip


def checksum(directory: str) -> str:
    """SHA-256 over every file's relative path and bytes below `directory` ("absent" if none)."""
    if not os.path.exists(directory):
        return "absent"
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode())
            digest.update(pathlib.Path(path).read_bytes())
    return digest.hexdigest()


def _folders(root: pathlib.Path) -> dict[str, str]:
    """Image folders: flat (unlabelled), and one of `train/` and `test/` splits whose first
    training image is corrupt (the pipeline reads it before the first step)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("flat", "corrupt/train/a", "corrupt/test/a"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (32, 32, 3), np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i + 1}.png")
    (root / "corrupt" / "train" / "a" / "0_broken.png").write_bytes(b"not a png")
    (root / "file").write_text("an existing file\n")
    return {
        "flat": str(root / "flat"),
        "corrupt": str(root / "corrupt"),
        "file": str(root / "file"),
    }


def _generator_workdir(root: pathlib.Path, tokenizer: str, data_dir: str) -> str:
    """A generator workdir's `config.json` (5 classes): enough for the checks that run
    before `launch.sample` loads a model."""
    from visgen.config import load_config_file
    from visgen.train.workdir import save_config

    config = load_config_file("configs/ar.py:tokenizer=vq2d,tiny")
    with config.unlocked():
        config.update(tokenizer_workdir=tokenizer)
        config.data.data_dir = data_dir
    workdir = root / "gen"
    workdir.mkdir()
    save_config(str(workdir), config)
    return str(workdir)


def _run(case: Case, places: dict[str, str], env: dict[str, str]) -> dict:
    fill = lambda text: text.format(**{**places, "tmp": os.path.join(places["tmp"], case.id)})
    os.makedirs(fill("{tmp}"))
    watch = fill(case.watch) if case.watch else None
    before = checksum(watch) if watch else None
    done = subprocess.run(
        [sys.executable, "-m", case.module, *map(fill, case.args)],
        cwd=REPO,
        env={**env, **dict(case.env)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    after = checksum(watch) if watch else None
    return {"done": done, "unchanged": before == after}


@pytest.fixture(scope="module")
def results(tmp_path_factory, trained_workdir, shapes_dir, launcher_env) -> dict[str, dict]:
    """Every case's `{"done": CompletedProcess, "unchanged": bool}`, run 4 at a time."""
    root = tmp_path_factory.mktemp("bad_inputs")
    tokenizer = trained_workdir("configs/vq2d.py:tiny")
    places = dict(
        tok=tokenizer,
        gen=_generator_workdir(root, tokenizer, shapes_dir),
        data=shapes_dir,
        tmp=str(root / "cases"),
        **_folders(root),
    )
    env = {k: v for k, v in launcher_env.items() if k != "VISGEN_DEBUG"}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {case.id: pool.submit(_run, case, places, env) for case in CASES}
        out = {name: future.result() for name, future in futures.items()}
    if os.environ.get("VISGEN_BAD_INPUTS_TABLE"):
        _write_readme_table(out, places)
    return out


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, results):
    done, unchanged = results[case.id]["done"], results[case.id]["unchanged"]
    report = f"exit {done.returncode}\n{done.stderr[-3000:]}"
    assert done.returncode == case.code, report
    assert re.search(case.expect, _last_line(done)), report
    if case.traceback:
        assert "Traceback (most recent call last)" in done.stderr, report
    else:
        assert "Traceback" not in done.stderr, report
        assert re.match(r"^(error: |\S+\.py( \w+)?: error: )", _last_line(done)), report
    if case.watch:
        assert unchanged, f"{case.watch} changed\n{report}"


def _table(out: dict[str, dict], places: dict[str, str]) -> str:
    """The README rows: the scratch paths of this session shown as `TMP`, `TOK`, ..."""
    rows = ["| command | input | exit | message (last line of stderr) |", "|---|---|---|---|"]
    for case in CASES:
        done = out[case.id]["done"]
        message = _last_line(done).replace(os.path.join(places["tmp"], case.id), "TMP")
        for name, path in sorted(places.items(), key=lambda item: -len(item[1])):
            message = message.replace(path, name.upper())
        message = message.replace("|", "\\|")
        code = f"`` {message} ``" if "`" in message else f"`{message}`"  # a code span
        rows.append(f"| `{case.module}` | {case.what} | {done.returncode} | {code} |")
    return "\n".join(rows)


def _write_readme_table(out: dict[str, dict], places: dict[str, str]) -> None:
    text = README.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    README.write_text(text[:start] + "\n" + _table(out, places) + "\n" + text[end:])


def test_readme_lists_every_case():
    """The README's table has one row per case, in order (regenerate it as the module says)."""
    text = README.read_text()
    table = text[text.index(TABLE_START) : text.index(TABLE_END)]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[1] for row in rows] == [case.what for case in CASES]


def test_sample_flag_choices_match_the_library():
    """`launch.sample` spells out its choices (checking flags imports no JAX): the same names."""
    from launch import sample as sample_cli
    from visgen.sampling import COUPLINGS
    from visgen.sampling.guidance import SCHEDULES
    from visgen.sampling.sjd_drafts import INITS_1D, INITS_GRID

    assert sample_cli.SCHEDULES == SCHEDULES
    assert set(sample_cli.SJD_INITS) == set(INITS_1D + INITS_GRID)
    assert tuple(sample_cli.SJD_COUPLINGS) == tuple(COUPLINGS)


def test_config_overrides_parse_as_the_field_type_and_name_a_bad_key():
    """`--config.KEY=VALUE` as launch.train applies it (visgen.config.apply_overrides)."""
    from launch.train import split_overrides
    from visgen.config import apply_overrides, load_config_file

    rest, overrides = split_overrides(
        ["prog", "--config=c.py", "--config.train.steps=7", "--config.optim.lr", "1e-3",
         "--config.data.random_flip=false", "--config.tokenizer.name=vq2d", "--workdir=w"]
    )  # fmt: skip
    assert rest == ["prog", "--config=c.py", "--workdir=w"]
    config = apply_overrides(load_config_file("configs/vq2d.py:tiny"), overrides)
    assert config.train.steps == 7 and config.optim.lr == 1e-3
    assert config.data.random_flip is False and config.tokenizer.name == "vq2d"
    bad = {
        "train.stepz": ("3", r"unknown config key 'train.stepz' \(did you mean 'steps'\?\)"),
        "trian.steps": ("3", r"unknown config key 'trian' \(did you mean 'train'\?\)"),
        "train": ("3", r"config key 'train' is a section"),
        "train.steps": ("2.5", r"--config.train.steps=2.5: not a valid int"),
        "data.random_flip": ("maybe", r"expected true or false, got 'maybe'"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            apply_overrides(load_config_file("configs/vq2d.py:tiny"), [(key, value)])
    with pytest.raises(ValueError, match="needs a value"):
        split_overrides(["prog", "--config.train.steps"])
    with pytest.raises(FileNotFoundError, match="config file 'configs/nope.py' not found"):
        load_config_file("configs/nope.py:tiny")
