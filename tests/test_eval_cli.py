"""`python -m evals.fid`: token perturbation, pFID against rFID, gFID, and bad inputs.

A tiny VQ2D is fitted to `digits` for 200 steps (compilation costs more than
the steps). Digits are smooth, so its reconstructions are good enough (~22 dB,
rFID ~11 under the digits net) for perturbed tokens to score clearly worse. On
`shapes`, a tokenizer this small only reaches colour blobs, where FID-like
scores saturate and small perturbations can even lower them (they add the
variety blobs lack). A VAE TiTok workdir holds only its config, for the
"no codebook" error.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from evals import fid
from evals.train_features import load_split
from visgen.evaluation import load_features, nearest_codes, perturb_tokens
from visgen.metrics.fid import save_stats, stats_from_features

TOKENIZER_STEPS = 200


def _config(spec: str, data_dir: str, steps: int):
    """The config file's resolved config, reading data from `data_dir`."""
    from visgen.config import load_config_file

    config = load_config_file(spec)
    config.unlock()
    config.data.data_dir = data_dir
    config.train.steps = steps
    return config


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> str:
    """A TFDS data dir holding `digits/32` with 512 train and 64 test images."""
    from visgen.data import ensure_built

    data_dir = str(tmp_path_factory.mktemp("tfds_digits"))
    ensure_built("digits", "", data_dir, split_sizes={"train": 512, "test": 64})
    return data_dir


@pytest.fixture(scope="module")
def vq_workdir(tmp_path_factory, digits_dir) -> str:
    """A VQ2D (8 x 8 tokens, 64 codes) fitted to digits for TOKENIZER_STEPS steps.

    Written as `launch.train` writes a workdir (`config.json`, an orbax
    `TrainState` whose EMA holds the weights), by a minimal loop: Adam on the
    task's own loss, no EMA or code revival. The trainer's step alone takes
    ~20 s to compile here, and `test_launcher` covers it.
    """
    import optax
    from flax import nnx

    from visgen.tasks import make_task
    from visgen.train.checkpoint import Checkpointer
    from visgen.train.optim import OptimConfig, make_optimizer
    from visgen.train.state import init_state, split_model
    from visgen.train.workdir import save_config

    workdir = str(tmp_path_factory.mktemp("vq2d"))
    config = _config("configs/vq2d.py:tiny,data=digits", digits_dir, TOKENIZER_STEPS)
    config.tokenizer.update(width=32, depth=1, heads=2, patch_size=4)
    config.tokenizer.quantizer.codebook_size = 64
    save_config(workdir, config)
    task = make_task(config)
    tx = make_optimizer(OptimConfig(**config.optim), TOKENIZER_STEPS)
    state, frozen = jax.jit(lambda: init_state(task, tx, 0))()
    graphdef = split_model(nnx.eval_shape(lambda: task.build(nnx.Rngs(0))))[0]
    model = nnx.merge(graphdef, state.params, frozen, state.rest)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        loss_fn = lambda m: task.loss(m, {"image": x}, jax.random.PRNGKey(0), 0)[0]
        optimizer.update(model, nnx.grad(loss_fn)(model))

    images, _ = load_split("digits", "train", digits_dir)
    pixels = images.astype(np.float32) / 127.5 - 1.0
    rng = np.random.default_rng(0)
    for _ in range(TOKENIZER_STEPS):
        step(model, optimizer, pixels[rng.integers(0, len(pixels), 16)])
    _, params, _, rest = split_model(model)
    state = state.replace(
        step=jnp.asarray(TOKENIZER_STEPS, jnp.int32), ema_params=params, rest=rest
    )
    ckpt = Checkpointer(workdir, async_save=False)
    ckpt.save(TOKENIZER_STEPS, state)
    ckpt.close()
    return workdir


@pytest.fixture(scope="module")
def vae_workdir(tmp_path_factory) -> str:
    """A continuous (VAE) TiTok workdir: its config only, since pfid refuses it
    from the abstract model, before reading any checkpoint."""
    from visgen.train.workdir import save_config

    workdir = str(tmp_path_factory.mktemp("vae"))
    save_config(workdir, _config("configs/titok.py:tiny,latent=vae", workdir, 1))
    return workdir


def _cli(capsys, *args: str):
    """(exit code, parsed JSON result or None, stderr) of `evals.fid` run in-process."""
    rc = fid.main(list(args))
    captured = capsys.readouterr()
    result = json.loads(captured.out) if rc == 0 else None
    return rc, result, captured.err


# ------------------------------------------------------------------ perturbation


def test_perturbation_identity_full_replacement_and_rate():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(50, 6)).astype(np.float32)
    neighbours = nearest_codes(codes, 7, chunk=16)  # chunks overlap at the end
    dist = ((codes[:, None].astype(np.float64) - codes[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    np.testing.assert_array_equal(neighbours, np.argsort(dist, axis=1)[:, :7])
    assert nearest_codes(codes[:5], 100).shape == (5, 4)  # delta clipped to K - 1

    perturb = jax.jit(perturb_tokens)
    tokens = rng.integers(0, 50, (8, 4, 4), dtype=np.int32)
    key = jax.random.PRNGKey(2)
    np.testing.assert_array_equal(perturb(tokens, neighbours, 0.0, key), tokens)
    moved = np.asarray(perturb(tokens, neighbours, 1.0, key))
    assert moved.shape == tokens.shape and moved.dtype == tokens.dtype
    table = np.asarray(neighbours)
    for t, m in zip(tokens.ravel(), moved.ravel(), strict=True):
        assert m != t and m in table[t], (t, m)
    many = rng.integers(0, 50, (100, 100), dtype=np.int32)
    low = np.asarray(perturb(many, neighbours, 0.3, key)) != many
    assert abs(low.mean() - 0.3) < 0.02
    # One key for every alpha: the tokens replaced at 0.3 are also replaced at 0.6.
    high = np.asarray(perturb(many, neighbours, 0.6, key)) != many
    assert abs(high.mean() - 0.6) < 0.02 and np.all(high[low])


# ------------------------------------------------------------------ rFID and pFID


def test_pfid_at_zero_is_rfid_and_grows_with_alpha(capsys, tmp_path, vq_workdir, digits_dir):
    common = ["--workdir", vq_workdir, "--features", "digits", "--data-dir", digits_dir]
    pfid_args = ["pfid", *common, "--alphas", "0.1,0.3,1", "--delta", "8"]
    out = str(tmp_path / "pfid.json")
    rc, pfid, err = _cli(capsys, *pfid_args, "--out", out)
    assert rc == 0, err
    with open(out) as f:
        assert json.load(f) == pfid
    rc, rfid, err = _cli(capsys, "rfid", *common)
    assert rc == 0, err

    assert pfid["mode"] == "pfid" and rfid["mode"] == "rfid"
    assert pfid["features"] == rfid["features"] == "digits"
    assert pfid["features_info"]["dataset"] == "digits"
    assert pfid["step"] == TOKENIZER_STEPS and pfid["split"] == "test"
    assert rfid["frames"] == pfid["frames"] == 64
    # Alpha 0 is the rFID itself, exactly.
    assert pfid["pfid"]["0"] == pfid["rfid"] == rfid["rfid"]
    assert rfid["psnr"] == pfid["psnr"] and rfid["ssim"] == pfid["ssim"]
    assert 15.0 < rfid["psnr"] < 40.0 and 0.0 < rfid["ssim"] <= 1.0
    assert pfid["delta"] == 8 and "pfid" not in rfid
    replaced = pfid["replaced_fraction"]
    assert replaced["0"] == 0.0 and replaced["1"] == 1.0
    assert replaced["0.1"] == pytest.approx(0.1, abs=0.03)
    assert replaced["0.3"] == pytest.approx(0.3, abs=0.03)
    # pFID grows with the perturbation rate (so does the pixel damage).
    values = [pfid["pfid"][k] for k in ("0", "0.1", "0.3", "1")]
    assert values == sorted(values) and values[-1] > 1.5 * values[0], pfid
    psnrs = [pfid["psnr_perturbed"][k] for k in ("0", "0.1", "0.3", "1")]
    assert psnrs == sorted(psnrs, reverse=True), pfid
    # The digits classifier on the originals and on the round trips through the tokens:
    # replacing every token by a near code costs some of the classes.
    accuracy = pfid["class_accuracy"]
    assert rfid["class_accuracy"] == accuracy["0"] > 0.8
    assert rfid["class_accuracy_originals"] > 0.8 and accuracy["1"] < accuracy["0"]
    # Seeded: the same command gives the same numbers; another seed other ones.
    rc, again, _ = _cli(capsys, *pfid_args)
    assert again["pfid"] == pfid["pfid"]
    rc, other, _ = _cli(capsys, *pfid_args, "--seed", "1")
    assert other["pfid"]["0"] == pfid["pfid"]["0"] and other["pfid"]["1"] != pfid["pfid"]["1"]


def test_pfid_needs_a_codebook(capsys, vae_workdir):
    common = ["--workdir", vae_workdir, "--features", "shapes"]
    rc, _, err = _cli(capsys, "pfid", *common)
    assert rc == 2 and "codebook" in err and "continuous" in err, err


# ------------------------------------------------------------------ gFID


def test_gfid_of_a_split_against_itself_is_zero(capsys, tmp_path, shapes_dir):
    images, _ = load_split("shapes", "test", shapes_dir)  # uint8 [64, 32, 32, 3]
    samples = str(tmp_path / "samples.npz")
    np.savez(samples, images=images)
    rc, result, err = _cli(
        capsys, "gfid", "--samples", samples, "--features", "shapes",
        "--ref-dataset", "shapes", "--ref-split", "test", "--data-dir", shapes_dir,
        "--batch-size", "24",
    )  # fmt: skip
    assert rc == 0, err
    assert result["features"] == "shapes" and result["num_samples"] == 64
    assert result["reference"] == {
        "dataset": "shapes", "split": "test", "image_size": 32, "count": 64
    }  # fmt: skip
    assert abs(result["fid"]) < 1e-3, result
    assert result["is"] >= 1.0

    # ADM-style files: images under arr_0 (samples and reference alike), or statistics.
    adm = str(tmp_path / "adm.npz")
    np.savez(adm, arr_0=images)
    rc, from_images, err = _cli(
        capsys, "gfid", "--samples", adm, "--features", "shapes", "--ref", adm
    )
    assert rc == 0, err
    assert abs(from_images["fid"]) < 1e-3 and from_images["reference"]["count"] == 64
    features = load_features("shapes")
    feats, _ = features(features.state, images.astype(np.float32))
    stats = str(tmp_path / "stats.npz")
    save_stats(stats, *stats_from_features(np.asarray(feats)))
    rc, from_stats, err = _cli(
        capsys, "gfid", "--samples", samples, "--features", "shapes", "--ref", stats
    )
    assert rc == 0, err
    assert abs(from_stats["fid"]) < 1e-3 and from_stats["reference"] == {"stats": stats}
    # A different set is far.
    shifted = str(tmp_path / "shifted.npz")
    np.savez(shifted, images=(255 - images))
    rc, far, err = _cli(
        capsys, "gfid", "--samples", shifted, "--features", "shapes", "--ref", stats
    )
    assert rc == 0, err
    assert far["fid"] > 1.0


def test_gfid_class_accuracy_of_conditioned_samples(capsys, tmp_path, shapes_dir):
    images, labels = load_split("shapes", "test", shapes_dir)
    ref = ["--features", "shapes", "--ref-dataset", "shapes", "--data-dir", shapes_dir]
    samples = str(tmp_path / "samples.npz")

    def accuracy(sample_images, sample_labels) -> tuple[float, list]:
        np.savez(samples, images=sample_images, labels=sample_labels)
        rc, result, err = _cli(capsys, "gfid", "--samples", samples, *ref)
        assert rc == 0, err
        return result["class_accuracy"], result["class_accuracy_per_class"]

    # The shipped classifier gets ~84% of the test split; wrong labels much less.
    right, per_class = accuracy(images, labels)
    assert right > 0.7 and min(per_class) > 0.5
    counts = np.bincount(labels, minlength=5)
    assert np.isclose(np.dot(per_class, counts) / counts.sum(), right)
    assert accuracy(images, (labels + 1) % 5)[0] < 0.3
    # Only the classes some sample asked for get a number.
    kept = labels != 2
    per_class = accuracy(images[kept], labels[kept])[1]
    assert per_class[2] is None and all(per_class[c] > 0.5 for c in (0, 1, 3, 4))
    np.savez(samples, images=images, labels=labels + 5)
    rc, _, err = _cli(capsys, "gfid", "--samples", samples, *ref)
    assert rc == 2 and "5 classes" in err, err
    np.savez(samples, images=images, labels=labels[:3])
    rc, _, err = _cli(capsys, "gfid", "--samples", samples, *ref)
    assert rc == 2 and "labels" in err, err


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs_exit_2_with_a_message(capsys, tmp_path, shapes_dir):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    good = str(tmp_path / "good.npz")
    np.savez(good, images=images)
    empty = str(tmp_path / "empty.npz")
    np.savez(empty)
    no_images = str(tmp_path / "no_images.npz")
    np.savez(no_images, images=np.zeros((0, 32, 32, 3), np.uint8))
    small_ref = str(tmp_path / "small_ref.npz")
    np.savez(small_ref, arr_0=np.zeros((4, 16, 16, 3), np.uint8))
    wide_stats = str(tmp_path / "wide.npz")
    save_stats(wide_stats, np.zeros(2048), np.eye(2048))
    floats = str(tmp_path / "floats.npz")
    np.savez(floats, images=images.astype(np.float32))
    ref_split = ["--ref-dataset", "shapes", "--data-dir", shapes_dir]
    cases = {
        "samples file not found": ["--samples", str(tmp_path / "nope.npz"), *ref_split],
        "holds no arrays": ["--samples", empty, *ref_split],
        "is empty (0 images)": ["--samples", no_images, *ref_split],
        "must be uint8": ["--samples", floats, *ref_split],
        "image shapes differ": ["--samples", good, "--ref", small_ref],
        "reference file not found": ["--samples", good, "--ref", str(tmp_path / "none.npz")],
        "come from another feature network": ["--samples", good, "--ref", wide_stats],
        "exactly one reference": ["--samples", good],
    }
    for message, args in cases.items():
        rc, _, err = _cli(capsys, "gfid", *args, "--features", "shapes")
        assert rc == 2 and message in err, (message, err)
    resized = ["--samples", good, *ref_split, "--ref-image-size", "16", "--features", "shapes"]
    rc, _, err = _cli(capsys, "gfid", *resized)
    assert rc == 2 and "image shapes differ" in err, err
    rc, _, err = _cli(capsys, "gfid", "--samples", good, *ref_split, "--features", "lenet")
    assert rc == 2 and "unknown features 'lenet'" in err, err
    rc, _, err = _cli(capsys, "rfid", "--workdir", str(tmp_path), "--features", "shapes")
    assert rc == 2 and "not a training workdir" in err, err
    rc, _, err = _cli(
        capsys, "pfid", "--workdir", str(tmp_path), "--features", "shapes", "--alphas", "2"
    )
    assert rc == 2 and "in [0, 1]" in err, err


def test_command_line_error_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "evals.fid", "gfid", "--samples", str(tmp_path / "x.npz"),
         "--features", "shapes", "--ref", str(tmp_path / "r.npz")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: samples file not found" in done.stderr and "Traceback" not in done.stderr
