"""Feature networks and the one feature-extraction path that gFID, rFID and pFID share.

A feature network maps images on the 0-255 scale to (features `[B, D]`,
logits `[B, C]`); every result names it under `"features"`:
- `inception`: the FID InceptionV3 (`visgen.metrics.inception`; 2048-d pool
  features, 1008 logits; any input size is resized to 299), from a local
  weights file: the only choice whose numbers compare with papers;
- `shapes`, `digits`: the small classifiers of the embedded datasets
  (`visgen.metrics.classifier`, weights in `evals/weights/`, 128-d features;
  inputs of another size are resized to their 32 px). Their FID is a FID-like
  distance that only compares with itself;
- a path to another `FeatureNet` `.npz` (e.g. one retrained by
  `evals.train_features`), reported under its path.

Batches have static shapes (the last one padded, padding masked out of every
statistic) and are sharded over the local devices' batch axis; statistics
accumulate on the host in float64 (`visgen.metrics.fid`).
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

CLASSIFIER_FEATURES = ("shapes", "digits")
FEATURE_NAMES = ("inception", *CLASSIFIER_FEATURES)


# ------------------------------------------------------------------ feature networks


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """A named feature network, split for jitting.

    Attributes:
      name: what results report under `"features"`.
      dim: feature width `D`.
      graphdef, state: the network (`nnx.split`); pass `state` to `__call__`.
      info: JSON-able provenance (weights file, training data, accuracy).
    """

    name: str
    dim: int
    graphdef: Any
    state: Any
    info: dict

    def __call__(self, state, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images `[B, H, W, 3]` on the 0-255 scale -> (features `[B, D]`, logits `[B, C]`)."""
        return apply_features(self.graphdef, state, images)


def apply_features(graphdef, state, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(features, logits) of a split feature network: Inception's pool and unbiased
    logits (what FID and IS use), or a classifier's penultimate layer and logits."""
    from visgen.metrics.inception import InceptionFeatures

    out = nnx.merge(graphdef, state)(images)
    if isinstance(out, InceptionFeatures):
        return out.pool, out.logits_unbiased
    return out.features, out.logits


def load_features(name: str, *, inception_weights: str = "") -> FeatureNetwork:
    """The feature network `name`.

    Args:
      name: `inception`, `shapes` or `digits` (`evals/weights/<name>.npz`), or
        the path of another `FeatureNet` weights `.npz` (reported by its path).
      inception_weights: the FID Inception `.npz` (or `.pth` with torch); needed
        for `inception`.

    Raises:
      ValueError: unknown name, or `inception` without weights.
      FileNotFoundError: a weights file is missing.
    """
    if name == "inception":
        from visgen.metrics.inception import INPUT_SIZE, POOL_DIM, load_inception

        if not inception_weights:
            raise ValueError(
                "--features inception needs --inception-weights PATH.npz (the converted FID "
                "Inception; see `python -m evals.convert_inception`)"
            )
        model = load_inception(inception_weights)
        info = {"weights": inception_weights, "resolution": INPUT_SIZE, "feature_dim": POOL_DIM}
        return FeatureNetwork(name, POOL_DIM, *nnx.split(model), info)
    if name in CLASSIFIER_FEATURES or name.endswith(".npz"):
        from visgen.metrics.classifier import feature_net_path, load_feature_net

        path = feature_net_path(name)
        model, meta = load_feature_net(path)
        keys = ("dataset", "label", "resolution", "feature_dim", "num_classes", "test_accuracy")
        info = {"weights": path, **{k: meta.get(k) for k in keys}}
        r = meta["resolution"]
        info["note"] = f"inputs of another size are resized to {r}x{r} (antialiased bilinear)"
        return FeatureNetwork(name, int(meta["feature_dim"]), *nnx.split(model), info)
    raise ValueError(
        f"unknown features {name!r}; valid: {', '.join(FEATURE_NAMES)}, or a FeatureNet "
        "weights .npz"
    )


def describe(features: FeatureNetwork) -> dict:
    """What every result says about its feature network: `features`, `features_info`."""
    return {"features": features.name, "features_info": features.info}


# ------------------------------------------------------------------ batches and statistics


def check_batch_size(batch_size: int, mesh) -> None:
    """Raises ValueError unless `batch_size` is a positive multiple of the mesh's devices."""
    if batch_size < 1 or batch_size % mesh.size:
        raise ValueError(
            f"batch size {batch_size} must be a positive multiple of the {mesh.size} devices"
        )


def padded_batches(images: np.ndarray, batch_size: int) -> Iterator[dict]:
    """`{"image": [batch_size, ...], "mask": bool [batch_size]}`; the last batch padded."""
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        real = len(chunk)
        if real < batch_size:
            # Padding repeats the last real image, so it is valid input.
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
        yield {"image": chunk, "mask": np.arange(batch_size) < real}


@dataclasses.dataclass
class Accumulated:
    """Feature statistics and logits of a set of images."""

    stats: Any  # visgen.metrics.fid.FeatureStats
    logits: list[np.ndarray]

    @property
    def count(self) -> int:
        return self.stats.count


def accumulate(
    batches: Iterator[dict],
    num_batches: int,
    fn: Callable,
    features: FeatureNetwork,
    mesh,
    desc: str,
) -> Accumulated:
    """Runs jitted `fn(feature_state, images) -> (features, logits)` over masked batches."""
    from visgen.metrics.fid import FeatureStats
    from visgen.train.progress import progress_bar
    from visgen.train.sharding import global_batch, replicated

    state = jax.device_put(features.state, replicated(mesh))
    out = Accumulated(FeatureStats(), [])
    for local in progress_bar(batches, total=num_batches, desc=desc):
        batch = global_batch(local, mesh)
        feats, logits = fn(state, batch["image"])
        keep = np.asarray(batch["mask"])
        out.stats.update(np.asarray(feats)[keep])
        out.logits.append(np.asarray(logits)[keep])
    return out


# Jitted functions are cached by graph, so a process that evaluates several
# times (a demo, the tests) compiles each program once.
@functools.cache
def uint8_features_fn(graphdef) -> Callable:
    """Jitted `(state, uint8 images [B, H, W, 3]) -> (features, logits)`."""
    return jax.jit(lambda s, x: apply_features(graphdef, s, x.astype(jnp.float32)))


@functools.cache
def pipeline_features_fn(graphdef) -> Callable:
    """Jitted `(state, pipeline images in [-1, 1]) -> (features, logits)`."""
    from visgen.metrics.image import to_255

    # to_255 rounds as a saved 8-bit image would: uint8 data comes back exactly.
    return jax.jit(lambda s, x: apply_features(graphdef, s, to_255(fold_time(x))))


def fold_time(x: jax.Array) -> jax.Array:
    """`[B, T, H, W, C]` -> `[B*T, H, W, C]`; images pass through."""
    return x.reshape((-1, *x.shape[-3:])) if x.ndim == 5 else x
