"""gFID: FID and Inception Score of sample images against a reference.

The reference is either a statistics `.npz` (`mu`, `sigma` from the same
feature network; an ADM reference batch's images `arr_0` are featurised here)
or a dataset split read through the training pipeline at the samples' size
(resize shorter side, centre crop, RGB). The Inception Score (IS-like for the
dataset classifiers) is computed over 10 splits; with a dataset classifier and
the samples' conditioning labels, also the class accuracy of the samples.
Samples written by `launch.sample` have its `stats.json` beside them; the
result then names what made them (`sampler`: the generator workdir and step,
and the tokenizer step it decoded with).

Across processes (`visgen.distributed`): every global batch is split by rows,
process p featurising rows `p*b ... (p+1)*b - 1` on its own devices; the
features of each batch are gathered (exactly: as bytes) and every process
adds the whole batch to its float64 statistics in row order. So P processes
compute the same statistics, bit for bit, as one process with the same
global batch and per-device batch, and every process holds the result.
"""

import json
import math
import os
from collections.abc import Callable, Iterator

import jax
import numpy as np

from visgen.evaluation.features import (
    Accumulated,
    FeatureNetwork,
    describe,
    padded_batches,
    pipeline_features_fn,
    uint8_features_fn,
)
from visgen.evaluation.samples import open_npz


def _process_rows(batches: Iterator[dict]) -> Iterator[dict]:
    """Global batches -> this process's rows of each (`[B, ...]` -> `[B / P, ...]`)."""
    count, index = jax.process_count(), jax.process_index()
    for batch in batches:
        rows = len(batch["mask"]) // count
        yield {k: v[index * rows : (index + 1) * rows] for k, v in batch.items()}


def accumulate_in_order(
    batches: Iterator[dict],
    num_batches: int,
    fn: Callable,
    features: FeatureNetwork,
    mesh,
    desc: str,
) -> Accumulated:
    """Feature statistics of global batches given as this process's rows of each.

    Args:
      batches: `{"image": [b, ...], "mask": bool [b]}`, this process's rows of
        each global batch (rows `p*b ... (p+1)*b - 1`; all of it in one process).
      fn: jitted `(feature_state, images) -> (features [b, D], logits [b, C])`.
      mesh: this process's devices (`make_local_mesh`).

    The kept (masked-in) features and logits of all processes are gathered per
    batch and added in process (= row) order, so every process accumulates the
    float64 statistics of the whole global batch exactly as one process would.
    """
    from visgen.distributed import allgather
    from visgen.metrics.fid import FeatureStats
    from visgen.train.progress import progress_bar
    from visgen.train.sharding import global_batch, replicated

    state = jax.device_put(features.state, replicated(mesh))
    out = Accumulated(FeatureStats(), [])
    for local in progress_bar(batches, total=num_batches, desc=desc):
        feats, logits = fn(state, global_batch(local, mesh)["image"])
        keep = np.asarray(local["mask"])
        parts = allgather((np.asarray(feats)[keep], np.asarray(logits)[keep]))
        out.stats.update(np.concatenate([f for f, _ in parts]))
        out.logits.append(np.concatenate([lg for _, lg in parts]))
    return out


def _reference_from_file(
    path: str, image_shape: tuple[int, ...], features: FeatureNetwork, mesh, batch_size: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, description) from a stats `.npz` or an ADM-style image batch."""
    from visgen.metrics.fid import load_reference_stats

    with open_npz(path, "reference file") as data:
        has_stats = {"mu", "sigma"} <= set(data.files)
        images = data["arr_0"] if not has_stats and "arr_0" in data.files else None
    if images is None:
        mu, sigma = load_reference_stats(path)  # raises on a file with neither
        if mu.shape[0] != features.dim:
            raise ValueError(
                f"reference statistics in {path} are {mu.shape[0]}-d but features "
                f"{features.name!r} are {features.dim}-d: they come from another feature network"
            )
        return mu, sigma, {"stats": path}
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"{path}: arr_0 must be non-empty images [N, H, W, 3], got {images.shape}")
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"image shapes differ: samples are {list(image_shape)} but the reference images "
            f"in {path} are {list(images.shape[1:])}"
        )
    acc = accumulate_in_order(
        _process_rows(padded_batches(images, batch_size)),
        math.ceil(len(images) / batch_size),
        uint8_features_fn(features.graphdef),
        features,
        mesh,
        "reference",
    )
    mu, sigma = acc.stats.stats()
    return mu, sigma, {"images": path, "count": acc.count}


def _reference_from_dataset(
    dataset: str,
    split: str,
    *,
    builder_config: str,
    data_dir: str,
    image_size: int,
    max_examples: int,
    features: FeatureNetwork,
    mesh,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, description) of a dataset split read at `image_size`."""
    from visgen.data import DataConfig, make_eval_iterator, num_examples

    cfg = DataConfig(
        name=dataset,
        builder_config=builder_config,
        data_dir=data_dir,
        eval_split=split,
        image_size=image_size,
        random_flip=False,
    )
    total = num_examples(cfg, split)
    if max_examples:
        total = min(total, max_examples)
    acc = accumulate_in_order(
        make_eval_iterator(cfg, batch_size=batch_size, max_examples=total),
        math.ceil(total / batch_size),
        pipeline_features_fn(features.graphdef),
        features,
        mesh,
        f"reference {dataset}/{split}",
    )
    mu, sigma = acc.stats.stats()
    desc = {"dataset": dataset, "split": split, "image_size": image_size, "count": acc.count}
    if builder_config:
        desc["builder_config"] = builder_config
    return mu, sigma, desc


def generation_fid(
    images: np.ndarray,
    features: FeatureNetwork,
    *,
    samples_name: str = "",
    labels: np.ndarray | None = None,
    ref: str = "",
    ref_dataset: str = "",
    ref_split: str = "test",
    ref_config: str = "",
    ref_image_size: int = 0,
    ref_max_examples: int = 0,
    data_dir: str = "",
    batch_size: int = 64,
) -> dict:
    """FID (and IS) of sample images against `ref` or `ref_dataset`.

    Args:
      images: uint8 `[N, H, W, 3]` (`load_samples`).
      features: the feature network.
      samples_name: where the samples came from, for the result.
      labels: the classes the samples were conditioned on, `[N]` int (None:
        unconditional). With a dataset classifier as the feature network the
        result gains `class_accuracy`: the fraction of samples it classifies
        as their conditioning class (how often the requested class shows),
        and `class_accuracy_per_class`: the same per requested class (a list
        indexed by class; None for a class no sample requested).
      ref: a statistics `.npz` (`mu`, `sigma`) or an ADM-style image batch.
      ref_dataset, ref_split, ref_config, data_dir: or a dataset split, read
        through the eval pipeline at `ref_image_size` (default: the samples'
        size, which it must equal), its first `ref_max_examples` (0 = all).
      batch_size: images per jitted call (a multiple of the device count of all
        processes together).

    Exactly one of `ref` and `ref_dataset` is given.
    """
    from visgen.metrics.fid import frechet_distance, inception_score
    from visgen.train.sharding import make_local_mesh

    if bool(ref) == bool(ref_dataset):
        raise ValueError("gfid needs exactly one reference: --ref FILE.npz or --ref-dataset NAME")
    mesh = make_local_mesh()
    devices = mesh.size * jax.process_count()
    if batch_size < 1 or batch_size % devices:
        raise ValueError(
            f"batch size {batch_size} must be a positive multiple of the {devices} devices"
        )
    n, h, w, _ = images.shape
    if ref:
        mu_ref, sigma_ref, reference = _reference_from_file(
            ref, images.shape[1:], features, mesh, batch_size
        )
    else:
        size = ref_image_size or h
        if h != w or size != h:
            raise ValueError(
                f"image shapes differ: samples are {h}x{w} but the reference {ref_dataset}/"
                f"{ref_split} is read as {size}x{size} (square, the training pipeline's crop)"
            )
        mu_ref, sigma_ref, reference = _reference_from_dataset(
            ref_dataset,
            ref_split,
            builder_config=ref_config,
            data_dir=data_dir,
            image_size=size,
            max_examples=ref_max_examples,
            features=features,
            mesh=mesh,
            batch_size=batch_size,
        )
    acc = accumulate_in_order(
        _process_rows(padded_batches(images, batch_size)),
        math.ceil(n / batch_size),
        uint8_features_fn(features.graphdef),
        features,
        mesh,
        "samples",
    )
    if acc.count < 2:
        raise ValueError(f"{samples_name}: FID needs at least 2 samples, got {acc.count}")
    mu, sigma = acc.stats.stats()
    result = {
        "mode": "gfid",
        **describe(features),
        "fid": frechet_distance(mu, sigma, mu_ref, sigma_ref),
        "samples": samples_name,
        "num_samples": n,
        "image_shape": [h, w, 3],
        "reference": reference,
    }
    sampler = _sampler_record(samples_name)
    if sampler:
        result["sampler"] = sampler
    logits = np.concatenate(acc.logits)
    if len(logits) >= 10:
        result["is"], result["is_std"] = inception_score(logits)
    if labels is not None and features.name != "inception":
        if labels.min() < 0 or labels.max() >= logits.shape[-1]:
            raise ValueError(
                f"{samples_name}: labels span [{labels.min()}, {labels.max()}] but the "
                f"{features.name} classifier has {logits.shape[-1]} classes"
            )
        hits = logits.argmax(-1) == labels
        result["class_accuracy"] = float(np.mean(hits))
        result["class_accuracy_per_class"] = [
            float(np.mean(hits[labels == c])) if np.any(labels == c) else None
            for c in range(logits.shape[-1])
        ]
    return result


def _sampler_record(samples_name: str) -> dict:
    """What made the samples, from the `stats.json` `launch.sample` writes beside its
    `samples.npz`: the generator workdir, its step and the tokenizer step it decoded with
    (`{}` when there is none)."""
    path = os.path.join(os.path.dirname(os.path.abspath(samples_name)), "stats.json")
    if not samples_name or not os.path.isfile(path):
        return {}
    with open(path) as f:
        stats = json.load(f)
    keys = ("workdir", "step", "tokenizer_step", "method")
    return {key: stats[key] for key in keys if key in stats}
