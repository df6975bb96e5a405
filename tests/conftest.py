"""Shared fixtures: a small `shapes` build and a compilation cache for launcher runs."""

import os
import subprocess
import sys

import jax
import pytest

# float32 tests mean float32 on every backend: GPUs and TPUs otherwise run float32
# matmuls in TF32 / bf16 passes (a KV-cache-vs-full-forward check then differs by
# ~2e-3 on an H100 instead of ~1e-6).
jax.config.update("jax_default_matmul_precision", "highest")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> str:
    """A TFDS data dir holding `shapes/32` with 512 train and 64 test images."""
    from visgen.data import ensure_built

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    ensure_built("shapes", "", data_dir, split_sizes={"train": 512, "test": 64})
    return data_dir


@pytest.fixture(scope="session")
def launcher_env(tmp_path_factory) -> dict[str, str]:
    """Environment for launcher subprocesses: one compilation cache for the session,
    so runs of the same program compile once."""
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    env.pop("XLA_FLAGS", None)
    return env


def run_launcher(args: list[str], env: dict[str, str], timeout: int = 600):
    """Runs `python -m launch.train ARGS` from the repo root; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "launch.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def import_crosscheck(name: str, reason: str):
    """`pytest.importorskip(name)` for a cross-check test's reference (torch, torch-fidelity),
    except under `VISGEN_REQUIRE_CROSSCHECKS=1` (what `make test`, and so CI, sets): there a
    missing reference fails the test instead of skipping it."""
    import importlib

    if os.environ.get("VISGEN_REQUIRE_CROSSCHECKS") == "1":
        try:
            return importlib.import_module(name)
        except ImportError as error:
            pytest.fail(f"{reason}; VISGEN_REQUIRE_CROSSCHECKS=1 forbids skipping: {error}")
    return pytest.importorskip(name, reason=reason)


@pytest.fixture(scope="session")
def tokenizer_workdir(tmp_path_factory, shapes_dir, launcher_env) -> str:
    """A tiny TiTok workdir (2 steps: trained enough to load, not to be good)."""
    workdir = str(tmp_path_factory.mktemp("titok"))
    done = run_launcher(
        [
            "--config=configs/titok.py:tiny",
            f"--workdir={workdir}",
            f"--config.data.data_dir={shapes_dir}",
            "--config.train.steps=2",
            "--config.train.eval_every=0",
            "--config.data.batch_size=8",
            "--config.tokenizer.width=32",
            "--config.tokenizer.depth=1",
            "--config.tokenizer.heads=2",
        ],
        launcher_env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def random_ar_model(*, vocab_size: int, layout: tuple[int, ...], **kwargs):
    """A class-conditional `ARGenerator` (10 classes) over discrete tokens (`vocab_size`
    ids on `layout`) with numpy random weights (std 0.1, norm scales near 1) on
    abstractly evaluated shapes: no initialiser to compile. `kwargs` go to `ARGenerator`
    (`head`, trunk sizes, ...)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from visgen.generators import ARGenerator
    from visgen.token_spec import TokenSpec

    spec = TokenSpec(kind="discrete", layout=tuple(layout), vocab_size=vocab_size, channels=8)
    abstract = nnx.eval_shape(
        lambda: ARGenerator(spec=spec, num_classes=10, rngs=nnx.Rngs(0), **kwargs)
    )
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)

    def fill(path, x):
        mean = 1.0 if "weight" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(mean + 0.1 * rng.normal(size=x.shape), jnp.float32)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


# The tiny config of each registered tokenizer, and the config variant that gives a generator
# each registered head (`test_contracts.py` fails for a registered name missing here).
TOKENIZER_CONFIGS = {
    "flextok": "configs/flextok.py:tiny",
    "titok": "configs/titok.py:tiny",
    "vq2d": "configs/vq2d.py:tiny",
}
HEAD_VARIANTS = {
    "categorical": "configs/ar.py:tokenizer=vq2d,tiny",
    "token_shuffle": "configs/ar.py:tokenizer=vq2d,tiny,shuffle=2",
    "token_shuffle-causal": "configs/ar.py:tokenizer=vq2d,tiny,shuffle=2,causal",
    "diffusion": "configs/ar.py:tokenizer=vq2d,tiny,diffusion",
}
# The tokenizer a head's generator trains on, where the grid VQ tokenizer's ids do not fit.
HEAD_TOKENIZERS = {"diffusion": "configs/vq2d.py:tiny,latent=vae"}


def tiny_config(spec: str, data_dir: str, steps: int = 2, **top_level):
    """`spec`'s config shrunk to a smoke run: `steps` steps of batch 4, evaluated at the end
    on 8 examples; `top_level` sets top-level keys (`tokenizer_workdir`)."""
    from visgen.config import load_config_file

    config = load_config_file(spec)
    with config.unlocked():
        config.data.update(data_dir=data_dir, batch_size=4)
        config.train.update(steps=steps, eval_every=steps, checkpoint_every=steps, eval_examples=8)
        config.update(top_level)
    return config


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, shapes_dir):
    """`get(spec, **top_level)` -> a workdir of `tiny_config(spec, ...)` trained in-process
    through the real task and loop (`visgen.tasks.run`), once per session and arguments."""
    from visgen.tasks.run import train_config

    done: dict[tuple, str] = {}

    def get(spec: str, **top_level) -> str:
        key = (spec, *sorted(top_level.items()))
        if key not in done:
            workdir = str(tmp_path_factory.mktemp("trained"))
            result = train_config(tiny_config(spec, shapes_dir, **top_level), workdir)
            assert result.step == 2, result
            done[key] = workdir
        return done[key]

    return get
