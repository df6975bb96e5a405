"""Tests for visgen.metrics.inception: the FID InceptionV3 against torch-fidelity.

The cross-check builds torch-fidelity's `FeatureExtractorInceptionV3` (pure
torch) with random weights, saves its state dict as a `.pth`, converts that
with `evals.convert_inception`, and compares pool features and logits on
random uint8 images of non-299 sizes. Nothing is downloaded. Without torch or
torch-fidelity (`pip install --no-deps torch-fidelity==0.4.0`) those tests are
skipped with the reason; the rest needs neither.
"""

import importlib
import importlib.util
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_crosscheck
from flax import nnx

from visgen.metrics.inception import (
    NUM_CLASSES,
    POOL_DIM,
    WEIGHTS_FILE,
    InceptionV3,
    convert_torch_state_dict,
    inception_convs,
    inception_npz_shapes,
    load_inception,
    load_inception_weights,
    resize_bilinear_tf1,
)
from visgen.nn.frozen import Frozen

_TF_MODULE = "torch_fidelity.feature_extractor_inceptionv3"
_INSTALL = "pip install --no-deps torch-fidelity==0.4.0"


@pytest.fixture(scope="module")
def torch_fidelity():
    """torch-fidelity's InceptionV3 module, imported without torchvision.

    The package `__init__` imports torchvision (not installable beside the CPU
    torch wheel here), but the Inception file needs only torch: when torchvision
    is missing, a bare `torch_fidelity` package is registered so that file and
    its torch-only imports load on their own; it is removed afterwards.
    """
    import_crosscheck("torch", "torch not installed (pip install torch==2.13.0)")
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        message = f"torch-fidelity not installed ({_INSTALL}) for the Inception cross-check"
        if os.environ.get("VISGEN_REQUIRE_CROSSCHECKS") == "1":
            pytest.fail(f"{message}; VISGEN_REQUIRE_CROSSCHECKS=1 forbids skipping")
        pytest.skip(message)
    before = set(sys.modules)
    if importlib.util.find_spec("torchvision") is None:
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_fidelity"] = package
    try:
        yield importlib.import_module(_TF_MODULE)
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("torch_fidelity"):
                del sys.modules[name]


def _random_torch_fidelity_weights(torch_fidelity, tmp_path, monkeypatch, seed: int) -> str:
    """A `.pth` of random weights shaped by torch-fidelity's own module; returns its path.

    The module is built once with `load_state_dict` stubbed (its constructor
    otherwise downloads or loads weights) only to read its parameter shapes.
    Values keep activations O(1) through the 94 conv-BN-ReLU layers: He-normal
    kernels, BatchNorm statistics and affine terms near identity.
    """
    import torch

    cls = torch_fidelity.FeatureExtractorInceptionV3
    torch.save({}, tmp_path / "empty.pth")
    with monkeypatch.context() as m:
        m.setattr(cls, "load_state_dict", lambda self, state_dict: None)
        shell = cls("inception-v3-compat", ["2048"], str(tmp_path / "empty.pth"))
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in shell.state_dict().items():
        shape = tuple(value.shape)
        if key.endswith("conv.weight"):
            array = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif key.endswith(("bn.weight", "bn.running_var")):
            array = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(("bn.bias", "bn.running_mean")):
            array = rng.uniform(-0.2, 0.2, shape)
        elif key == "fc.weight":
            array = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), shape)
        elif key == "fc.bias":
            array = rng.normal(0.0, 0.1, shape)
        else:  # num_batches_tracked: kept as the module has it
            state[key] = value
            continue
        state[key] = torch.from_numpy(array.astype(np.float32))
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    return str(path)


def _relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_matches_torch_fidelity_through_converter(torch_fidelity, tmp_path, monkeypatch):
    import torch

    from evals.convert_inception import convert

    pth = _random_torch_fidelity_weights(torch_fidelity, tmp_path, monkeypatch, seed=0)
    features = ["2048", "logits_unbiased", "logits"]
    ref_model = torch_fidelity.FeatureExtractorInceptionV3("inception-v3-compat", features, pth)
    convert(pth, str(tmp_path / "inception.npz"))
    model = load_inception(str(tmp_path / "inception.npz"))
    # The .pth is also read directly (torch is here), to the same arrays.
    from_pth, from_npz = (
        load_inception_weights(pth),
        load_inception_weights(str(tmp_path / "inception.npz")),
    )
    assert from_pth.keys() == from_npz.keys() == inception_npz_shapes().keys()
    for key in from_npz:
        np.testing.assert_array_equal(from_pth[key], from_npz[key], err_msg=key)

    forward = nnx.jit(lambda m, x: m(x))
    rng = np.random.default_rng(1)
    # Up-sampling, square and not (a swapped H/W would show), as the resize must.
    for shape in [(2, 64, 64, 3), (1, 32, 48, 3)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = forward(model, jnp.asarray(images))
        with torch.no_grad():
            refs = ref_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        for name, got, ref in zip(features, ours, refs, strict=True):
            ref = ref.numpy()
            assert got.shape == ref.shape == (shape[0], POOL_DIM if name == "2048" else 1008)
            # Relative to each output's scale: logits near zero have no relative precision.
            assert _relative_error(np.asarray(got), ref) < 1e-4, (shape, name)
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("size", [(32, 48), (300, 310), (299, 299), (7, 5)])
def test_resize_matches_torch_fidelity(torch_fidelity, size):
    import torch
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    images = np.random.default_rng(2).integers(0, 256, (1, *size, 3)).astype(np.float32)
    ours = resize_bilinear_tf1(jnp.asarray(images), (299, 299))
    ref = interpolate_bilinear_2d_like_tensorflow1x(
        torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), size=(299, 299), align_corners=False
    )
    np.testing.assert_allclose(ours, ref.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-4)


def _random_npz_weights(seed: int) -> dict[str, np.ndarray]:
    """Random weights in the `.npz` layout, without torch."""
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in inception_npz_shapes().items():
        if key.endswith("conv.kernel"):
            weights[key] = rng.normal(0, np.sqrt(2 / np.prod(shape[:3])), shape)
        elif key.endswith(("bn.scale", "bn.var")):
            weights[key] = rng.uniform(0.5, 1.5, shape)
        else:
            weights[key] = rng.normal(0, 0.05, shape)
    return {k: v.astype(np.float32) for k, v in weights.items()}


def test_forward_shapes_and_frozen_weights():
    weights = _random_npz_weights(3)
    model = InceptionV3(weights)
    assert len(inception_convs()) == 94
    assert not jax.tree.leaves(nnx.state(model, nnx.Param))
    assert len(jax.tree.leaves(nnx.state(model, Frozen))) == 2 * 94 + 2
    images = jnp.asarray(np.random.default_rng(4).integers(0, 256, (2, 40, 40, 3), np.uint8))
    out = nnx.jit(lambda m, x: m(x))(model, images)
    assert out.pool.shape == (2, POOL_DIM)
    assert out.logits.shape == out.logits_unbiased.shape == (2, NUM_CLASSES)
    assert np.all(np.isfinite(out.pool)) and np.all(np.asarray(out.pool) >= 0)
    bias = np.broadcast_to(weights["fc.bias"], (2, NUM_CLASSES))
    np.testing.assert_allclose(out.logits - out.logits_unbiased, bias, atol=1e-5)


def test_missing_weights_names_the_file_and_the_conversion(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_inception(str(tmp_path / "inception_fid.npz"))
    message = str(e.value)
    assert "inception_fid.npz" in message
    assert WEIGHTS_FILE in message
    assert "python -m evals.convert_inception" in message


def test_bad_weights_are_rejected(tmp_path):
    weights = _random_npz_weights(5)
    bad = dict(weights)
    del bad["Mixed_6b.branch7x7_2.bn.var"]
    with pytest.raises(ValueError, match="Mixed_6b.branch7x7_2.bn.var"):
        InceptionV3(bad)
    bad = dict(weights, **{"fc.kernel": np.zeros((2048, 1000), np.float32)})
    with pytest.raises(ValueError, match=r"fc.kernel: expected shape \[2048, 1008\]"):
        InceptionV3(bad)
    with pytest.raises(KeyError, match="not a FID InceptionV3 state dict"):
        convert_torch_state_dict({"features.0.weight": np.zeros((64, 3, 3, 3))})
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.npz or a \.pth"):
        load_inception(str(tmp_path / "weights.bin"))
