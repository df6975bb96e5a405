"""Small classifiers of the embedded datasets, as feature networks for FID-like metrics.

The FID Inception (`visgen.metrics.inception`) was trained on ImageNet photos;
on 32 px procedural shapes or 8x8 upsampled digits its features say little
about what matters (which shape, which digit, where). A classifier trained on
the dataset itself gives features that do: FID computed on them (a "FID-like"
distance, as in the MNIST/LeNet FIDs of the GAN literature) and an IS-like
score from its logits. Such numbers only compare with numbers from the same
network, so every result names it (`evals.fid` reports `"features"`).

`FeatureNet` `[B, H, W, 3]` images on the 0-255 scale ->
`ClassifierFeatures(features [B, F], logits [B, C])`:

1. images whose size differs from the net's `resolution` (32 for the shipped
   nets) are resized to it with antialiased bilinear resampling
   (`jax.image.resize(..., "linear", antialias=True)`); grayscale datasets are
   fed as RGB (the pipeline repeats the channel), as everywhere in visgen;
2. scaled to [-1, 1];
3. `len(channels)` blocks of 3x3 conv + ReLU + 2x2 max pool
   (32 -> 16 -> 8 -> 4 px for three blocks; max rather than average pooling
   because corners and tips are what tell a 6 px square from a diamond, and it
   trained faster);
4. flatten -> dense + ReLU -> `features` `[B, feature_dim]` (the penultimate
   layer; it keeps where things are, which a global pool would discard);
5. dense -> `logits` `[B, num_classes]`.

All convolutions and matmuls run at `Precision.HIGHEST`, so accelerators that
default to TF32 or bf16 passes compute the same float32 features as a CPU.

Weights are an `.npz` of float32 arrays named by `FeatureNet.weights()`
(`conv0.kernel [3, 3, C_in, C_out]`, `conv0.bias`, ..., `dense.kernel`,
`dense.bias`, `head.kernel`, `head.bias`) plus `metadata`, a 0-d string array
holding JSON: the architecture (`num_classes`, `resolution`, `channels`,
`feature_dim`) and provenance (`dataset`, `test_accuracy`, how it was trained).
`evals/train_features.py` writes them; the shipped ones live in `evals/weights/`.
"""

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.nn.frozen import freeze

_PRECISION = jax.lax.Precision.HIGHEST
# The shipped classifier weights live beside the tool that trains them
# (`evals/train_features.py`), at the top of a source checkout.
WEIGHTS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "evals",
    "weights",
)
METADATA_KEY = "metadata"
# Keys of the metadata that `FeatureNet.__init__` takes.
ARCHITECTURE_KEYS = ("num_classes", "resolution", "channels", "feature_dim")


class ClassifierFeatures(NamedTuple):
    """`features` `[B, F]` (penultimate layer, for FID) and `logits` `[B, C]` (for IS)."""

    features: jax.Array
    logits: jax.Array


class FeatureNet(nnx.Module):
    """A small conv classifier of `[B, H, W, 3]` images on the 0-255 scale.

    Args:
      num_classes: `C`, the logits' width.
      resolution: input size `R` the net works at (inputs of another size are
        resized to it); divisible by `2 ** len(channels)`.
      channels: output channels of the conv blocks.
      feature_dim: `F`, the width of the penultimate (feature) layer.
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        resolution: int = 32,
        channels: tuple[int, ...] = (16, 32, 64),
        feature_dim: int = 128,
        rngs: nnx.Rngs,
    ):
        channels = tuple(int(c) for c in channels)
        if not channels or resolution % 2 ** len(channels):
            raise ValueError(
                f"resolution {resolution} must be divisible by 2**{len(channels)} "
                f"(one 2x2 pool per conv block, channels={channels})"
            )
        self.num_classes = num_classes
        self.resolution = resolution
        self.channels = channels
        self.feature_dim = feature_dim
        convs, c_in = [], 3
        for c in channels:
            convs.append(nnx.Conv(c_in, c, (3, 3), padding="SAME", precision=_PRECISION, rngs=rngs))
            c_in = c
        self.convs = nnx.List(convs)
        side = resolution // 2 ** len(channels)
        self.dense = nnx.Linear(side * side * c_in, feature_dim, precision=_PRECISION, rngs=rngs)
        self.head = nnx.Linear(feature_dim, num_classes, precision=_PRECISION, rngs=rngs)

    def feature_maps(self, images: jax.Array) -> list[jax.Array]:
        """Each conv block's output of images `[B, H, W, 3]` in [0, 255]: block `i`
        gives `[B, R / 2^(i+1), R / 2^(i+1), channels[i]]` (after its ReLU and pool)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images [B, H, W, 3], got shape {images.shape}")
        x = images.astype(jnp.float32)
        r = self.resolution
        if x.shape[1:3] != (r, r):
            x = jax.image.resize(x, (x.shape[0], r, r, 3), "linear", antialias=True)
        x = x / 127.5 - 1.0
        maps = []
        for conv in self.convs:
            x = nnx.max_pool(jax.nn.relu(conv(x)), (2, 2), strides=(2, 2))
            maps.append(x)
        return maps

    def __call__(self, images: jax.Array) -> ClassifierFeatures:
        """Features `[B, F]` and logits `[B, C]` of images `[B, H, W, 3]` in [0, 255]."""
        x = self.feature_maps(images)[-1]
        features = jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))
        return ClassifierFeatures(features, self.head(features))

    def architecture(self) -> dict[str, Any]:
        """The constructor arguments, as stored in a weights file's metadata."""
        return dict(
            num_classes=self.num_classes,
            resolution=self.resolution,
            channels=list(self.channels),
            feature_dim=self.feature_dim,
        )

    def _params(self) -> dict[str, nnx.Variable]:
        """Every parameter, keyed `layer.kernel` / `layer.bias` (the weights file's names)."""
        layers = {f"conv{i}": conv for i, conv in enumerate(self.convs)}
        layers.update(dense=self.dense, head=self.head)
        return {
            f"{name}.{kind}": getattr(layer, kind)
            for name, layer in layers.items()
            for kind in ("kernel", "bias")
        }

    def weights(self) -> dict[str, np.ndarray]:
        """Every parameter as float32 numpy, keyed `layer.kernel` / `layer.bias`."""
        return {k: np.asarray(v.get_value(), np.float32) for k, v in self._params().items()}

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Sets every parameter from `weights()`-style arrays; shapes must match exactly.

        Works on an abstract model (`nnx.eval_shape`) too, which is how
        `load_feature_net` skips the random initialisation.
        """
        params = self._params()
        missing = sorted(set(params) - set(weights))
        unexpected = sorted(set(weights) - set(params))
        if missing or unexpected:
            raise ValueError(f"feature net weights: missing {missing}, unexpected {unexpected}")
        for key, variable in params.items():
            shape = tuple(variable.get_value().shape)
            if tuple(weights[key].shape) != shape:
                raise ValueError(
                    f"feature net weight {key}: shape {weights[key].shape}, want {shape}"
                )
            variable.set_value(jnp.asarray(weights[key], jnp.float32))


def save_feature_net(path: str, model: FeatureNet, metadata: dict[str, Any]) -> None:
    """Writes `model`'s weights and `metadata` (JSON-able; architecture added) to `path`."""
    meta = {**metadata, **model.architecture()}
    arrays = {**model.weights(), METADATA_KEY: np.asarray(json.dumps(meta, sort_keys=True))}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # A file handle keeps `path` exact (np.savez on a name appends ".npz").
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def feature_net_path(name: str) -> str:
    """A shipped net's weights file (`shapes` -> `evals/weights/shapes.npz`), or `name`
    itself when it is a path to a `.npz`."""
    return name if name.endswith(".npz") else os.path.join(WEIGHTS_DIR, f"{name}.npz")


def load_feature_net(path: str) -> tuple[FeatureNet, dict[str, Any]]:
    """`(FeatureNet with Frozen weights, metadata)` from a weights `.npz`.

    Raises:
      FileNotFoundError: no such file, with how to make one.
      ValueError: not a feature net weights file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"feature net weights not found: {path!r}; train them with "
            "`python -m evals.train_features --dataset shapes|digits --out PATH.npz`"
        )
    # allow_pickle=False (the default) so a weights file can never run code.
    with np.load(path, allow_pickle=False) as data:
        if METADATA_KEY not in data.files:
            raise ValueError(f"{path} is not a feature net weights file (no {METADATA_KEY!r})")
        metadata = json.loads(str(data[METADATA_KEY]))
        weights = {k: data[k] for k in data.files if k != METADATA_KEY}
    missing = [k for k in ARCHITECTURE_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"{path}: metadata lacks the architecture keys {missing}")
    arch = {k: metadata[k] for k in ARCHITECTURE_KEYS}
    arch["channels"] = tuple(arch["channels"])
    # Built abstractly (no random init to compute), then filled from the file.
    model = nnx.eval_shape(lambda: FeatureNet(**arch, rngs=nnx.Rngs(0)))
    model.load_weights(weights)
    return freeze(model), metadata
