"""The embedded datasets' feature networks: shipped weights, shapes, resizing, save/load."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from evals import train_features
from visgen.evaluation import WEIGHTS_DIR, load_features
from visgen.metrics.classifier import FeatureNet, load_feature_net, save_feature_net
from visgen.nn.frozen import Frozen

# Test accuracies well below what the shipped nets measured (see their metadata),
# so a retrain that lands a little lower still passes, a broken one does not.
MIN_TEST_ACCURACY = {"shapes": 0.6, "digits": 0.9}
NUM_CLASSES = {"shapes": 5, "digits": 10}


@pytest.mark.parametrize("name", ["shapes", "digits"])
def test_shipped_net_loads_with_documented_shapes(name):
    path = os.path.join(WEIGHTS_DIR, f"{name}.npz")
    assert os.path.getsize(path) < 1_000_000, "weights are kept in the repo: keep them small"
    features = load_features(name)
    info = features.info
    assert features.name == name and features.dim == 128
    assert info["dataset"] == name and info["resolution"] == 32
    assert info["num_classes"] == NUM_CLASSES[name]
    assert info["test_accuracy"] >= MIN_TEST_ACCURACY[name], info
    json.dumps(info)  # reported with every result
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), np.uint8)
    feats, logits = jax.jit(lambda s, x: features(s, x))(features.state, images.astype(np.float32))
    assert feats.shape == (3, 128) and logits.shape == (3, NUM_CLASSES[name])
    assert np.all(np.asarray(feats) >= 0)  # post-ReLU activations
    # Frozen weights: nothing an optimizer would pick up.
    assert not jax.tree.leaves(nnx.state(nnx.merge(features.graphdef, features.state), nnx.Param))


def test_the_repa_net_is_another_net_than_the_metrics_one():
    # FlexTok's REPA target (`visgen.tokenizers.repa`): trained like `shapes` but with
    # another seed and architecture, so the metrics do not score their own training signal.
    path = os.path.join(WEIGHTS_DIR, "shapes_repa.npz")
    assert os.path.getsize(path) < 2_500_000, "weights are kept in the repo: keep them small"
    repa, meta = load_feature_net(path)
    shapes, shapes_meta = load_feature_net(os.path.join(WEIGHTS_DIR, "shapes.npz"))
    assert meta["dataset"] == "shapes" and meta["seed"] != shapes_meta["seed"]
    assert repa.channels != shapes.channels
    assert meta["test_accuracy"] >= MIN_TEST_ACCURACY["shapes"]
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    assert [m.shape for m in repa.feature_maps(images)] == [(2, 16, 16, 32), (2, 8, 8, 64)]


def test_shipped_shapes_net_classifies_the_test_split(shapes_dir):
    # The fixture's 64 test images are the first 64 of the full test split.
    model, meta = load_feature_net(os.path.join(WEIGHTS_DIR, "shapes.npz"))
    images, labels = train_features.load_split("shapes", "test", shapes_dir)
    accuracy = train_features.accuracy(model, images, labels)
    assert accuracy >= MIN_TEST_ACCURACY["shapes"], (accuracy, meta["test_accuracy"])


def test_inputs_at_other_sizes_are_resized():
    features = load_features("shapes")
    colours = np.asarray([[10, 10, 10], [128, 40, 200], [245, 245, 245]], np.float32)
    small = np.broadcast_to(colours[:, None, None], (3, 32, 32, 3))
    large = np.broadcast_to(colours[:, None, None], (3, 64, 64, 3))
    f_small, _ = features(features.state, small)
    f_large, _ = features(features.state, large)
    # Resizing a flat colour gives the same flat colour, so the same features.
    np.testing.assert_allclose(f_large, f_small, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    # Abstract, then filled with numpy draws: an eager random init compiles op by op.
    model = nnx.eval_shape(
        lambda: FeatureNet(
            num_classes=3, resolution=16, channels=(4, 8), feature_dim=12, rngs=nnx.Rngs(1)
        )
    )
    rng = np.random.default_rng(0)
    shapes = {k: v.get_value().shape for k, v in model._params().items()}
    model.load_weights(
        {k: rng.normal(size=shape).astype(np.float32) for k, shape in shapes.items()}
    )
    path = str(tmp_path / "net.npz")
    save_feature_net(path, model, {"dataset": "toy", "test_accuracy": 0.5})
    loaded, meta = load_feature_net(path)
    assert meta == {
        "dataset": "toy",
        "test_accuracy": 0.5,
        "num_classes": 3,
        "resolution": 16,
        "channels": [4, 8],
        "feature_dim": 12,
    }
    for key, value in model.weights().items():
        np.testing.assert_array_equal(loaded.weights()[key], value, err_msg=key)
    x = rng.uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    out = nnx.jit(lambda m, x: m(x))(loaded, x)
    assert out.features.shape == (2, 12) and out.logits.shape == (2, 3)
    assert all(
        isinstance(v, Frozen) for _, v in nnx.iter_graph(loaded) if isinstance(v, nnx.Variable)
    )


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="evals.train_features"):
        load_feature_net(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="not a feature net"):
        load_feature_net(str(tmp_path / "other.npz"))
    with pytest.raises(ValueError, match="valid: inception, shapes, digits"):
        load_features("lenet")
    with pytest.raises(ValueError, match="--inception-weights"):
        load_features("inception")
    with pytest.raises(ValueError, match="divisible"):
        FeatureNet(num_classes=2, resolution=30, rngs=nnx.Rngs(0))


def test_augment_keeps_shape_and_content():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8, 3), np.uint8)
    recipe = train_features.Recipe(steps=1, max_shift=0, flip=False)
    np.testing.assert_array_equal(train_features.augment(images, recipe, rng), images)
    recipe = train_features.Recipe(steps=1, max_shift=2, flip=True)
    out = train_features.augment(images, recipe, rng)
    assert out.shape == images.shape and out.dtype == np.uint8


def test_train_features_runs_and_saves(tmp_path, shapes_dir):
    out = str(tmp_path / "shapes_net.npz")
    rc = train_features.main(
        ["--dataset", "shapes", "--out", out, "--data-dir", shapes_dir, "--steps", "3"]
    )
    assert rc == 0
    model, meta = load_feature_net(out)
    assert meta["dataset"] == "shapes" and meta["recipe"]["steps"] == 3
    assert meta["train_examples"] == 512 and meta["test_examples"] == 64
    assert 0.0 <= meta["test_accuracy"] <= 1.0
    assert model(np.zeros((1, 32, 32, 3), np.float32)).features.shape == (1, 128)
