r"""FID, IS, rFID and pFID from the command line, each under a named feature network.

  # generated samples (uint8 [N, H, W, 3] under "images", or ADM-style "arr_0")
  python -m evals.fid gfid --samples S.npz --features shapes \
      --ref-dataset shapes --ref-split test [--data-dir D]
  python -m evals.fid gfid --samples S.npz --features inception \
      --inception-weights inception_fid.npz --ref REF.npz
  # reconstructions of a split through a tokenizer workdir: rFID, PSNR, SSIM
  python -m evals.fid rfid --workdir TOK --features shapes [--split test --max-examples N]
  # the RobusTok perturbed rFID (pFID) at several perturbation rates
  python -m evals.fid pfid --workdir TOK --features shapes --alphas 0.1,0.2,0.3 --delta 100

Common options: `--batch-size` (a multiple of the device count), `--seed`,
`--out results.json` (the JSON is printed either way).

Feature networks (`--features`), named in every result under `"features"`:
- `inception`: the FID InceptionV3 (`visgen.metrics.inception`; 2048-d pool
  features, 1008 logits; any input size is resized to 299), from a local
  `--inception-weights` file: the only choice whose numbers compare with papers;
- `shapes`, `digits`: the small classifiers of the embedded datasets
  (`visgen.metrics.classifier`, weights in `evals/weights/`, 128-d features;
  inputs of another size are resized to their 32 px). Their FID is a FID-like
  distance that only compares with itself;
- a path to another `FeatureNet` `.npz` (e.g. one retrained by
  `evals.train_features`), reported under its path.

Modes:
- `gfid`: samples against a reference, which is either a statistics `.npz`
  (`mu`, `sigma` from the same feature network; an ADM reference batch's images
  `arr_0` are featurised here) or a dataset split read through the training
  pipeline at the samples' size (resize shorter side, centre crop, RGB). Also
  reports the Inception Score (IS-like for the classifiers) over 10 splits.
- `rfid`: the tokenizer workdir's own data config and EMA weights; every image
  of the split is encoded and decoded from its tokens (`decode(encode(x).tokens)`,
  or its latents for continuous tokenizers); FID of the reconstructions against
  the originals, plus global PSNR, mean per-image PSNR and SSIM (0-255 scale).
- `pfid`: as `rfid`, but each token is, with probability alpha, replaced by one
  of its `delta` nearest codebook entries (nearest to the token's own code
  embedding in the codebook's search space, the token itself excluded, chosen
  uniformly; delta clipped to the codebook size - 1) before decoding. RobusTok
  defines pFID as rFID under its latent perturbation, but its evaluation code
  was not released; this follows the definition above, so the replacement
  rate is exactly alpha. (RobusTok's training-time perturbation,
  `latent_perturbation.py` in lxa9867/ImageFolder, draws among the top-delta
  *including* the original code, an effective rate of alpha (delta - 1) /
  delta, and ranks neighbours by the pre-quantization feature; report alpha
  and delta with every pFID.) Alpha 0 is the rFID itself,
  computed by the same compiled function. Per batch the perturbation of every
  alpha uses one key, so a token replaced at a rate is also replaced at every
  higher rate (nested perturbations make pFID across alphas less noisy).

Batches have static shapes (the last one padded, padding masked out of every
statistic) and are sharded over the local devices' batch axis. Per batch, one
jitted call encodes (and featurises the originals), and per alpha one jitted
call perturbs the tokens and one decodes and featurises the reconstructions;
every program is compiled once per process. Keeping the perturbation out of
the decode program means rFID and pFID at alpha 0 decode the same tokens with
the same program, so they agree exactly. Statistics accumulate on the host in
float64 (`visgen.metrics.fid`).
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
CLASSIFIER_FEATURES = ("shapes", "digits")
FEATURE_NAMES = ("inception", *CLASSIFIER_FEATURES)
SAMPLE_KEYS = ("images", "arr_0")  # launch.sample's layout, then ADM's


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
        return _apply_features(self.graphdef, state, images)


def _apply_features(graphdef, state, images: jax.Array) -> tuple[jax.Array, jax.Array]:
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
        from visgen.metrics.classifier import load_feature_net

        path = name if name.endswith(".npz") else os.path.join(WEIGHTS_DIR, f"{name}.npz")
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


def _describe(features: FeatureNetwork) -> dict:
    return {"features": features.name, "features_info": features.info}


# ------------------------------------------------------------------ batches and statistics


def _check_batch_size(batch_size: int, mesh) -> None:
    if batch_size < 1 or batch_size % mesh.size:
        raise ValueError(
            f"batch size {batch_size} must be a positive multiple of the {mesh.size} devices"
        )


def _padded_batches(images: np.ndarray, batch_size: int) -> Iterator[dict]:
    """`{"image": [batch_size, ...], "mask": bool [batch_size]}`; the last batch padded."""
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        real = len(chunk)
        if real < batch_size:
            # Padding repeats the last real image, so it is valid input.
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
        yield {"image": chunk, "mask": np.arange(batch_size) < real}


@dataclasses.dataclass
class _Accumulated:
    """Feature statistics and logits of a set of images."""

    stats: Any  # visgen.metrics.fid.FeatureStats
    logits: list[np.ndarray]

    @property
    def count(self) -> int:
        return self.stats.count


def _accumulate(
    batches: Iterator[dict],
    num_batches: int,
    fn: Callable,
    features: FeatureNetwork,
    mesh,
    desc: str,
) -> _Accumulated:
    """Runs jitted `fn(feature_state, images) -> (features, logits)` over masked batches."""
    from visgen.metrics.fid import FeatureStats
    from visgen.train.progress import progress_bar
    from visgen.train.sharding import global_batch, replicated

    state = jax.device_put(features.state, replicated(mesh))
    out = _Accumulated(FeatureStats(), [])
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
def _uint8_fn(graphdef) -> Callable:
    """Jitted `(state, uint8 images [B, H, W, 3]) -> (features, logits)`."""
    return jax.jit(lambda s, x: _apply_features(graphdef, s, x.astype(jnp.float32)))


@functools.cache
def _pipeline_fn(graphdef) -> Callable:
    """Jitted `(state, pipeline images in [-1, 1]) -> (features, logits)`."""
    from visgen.metrics.image import to_255

    # to_255 rounds as a saved 8-bit image would: uint8 data comes back exactly.
    return jax.jit(lambda s, x: _apply_features(graphdef, s, to_255(_fold_time(x))))


def _fold_time(x: jax.Array) -> jax.Array:
    """`[B, T, H, W, C]` -> `[B*T, H, W, C]`; images pass through."""
    return x.reshape((-1, *x.shape[-3:])) if x.ndim == 5 else x


# ------------------------------------------------------------------ gfid


def _open_npz(path: str, what: str) -> np.lib.npyio.NpzFile:
    """`np.load(path)` of an `.npz`, with errors that name `what` and `path`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{what} {path} is not a readable .npz: {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{what} {path} holds a single array, not an .npz of named arrays")
    return data


def load_samples(path: str) -> np.ndarray:
    """Sample images uint8 `[N, H, W, 3]` from an `.npz` (key `images`, else `arr_0`).

    `load_labels` reads the class labels that `launch.sample` stores beside them.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an `.npz`, no arrays, no known key, an empty or
        wrongly shaped array, or a dtype other than uint8.
    """
    data = _open_npz(path, "samples file")
    with data:
        if not data.files:
            raise ValueError(f"{path} is empty: it holds no arrays")
        key = next((k for k in SAMPLE_KEYS if k in data.files), None)
        if key is None:
            raise ValueError(
                f"{path} holds {sorted(data.files)}; samples go under "
                f"{' or '.join(repr(k) for k in SAMPLE_KEYS)}"
            )
        images = data[key]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: {key!r} must be images [N, H, W, 3], got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{path}: {key!r} is empty (0 images)")
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: {key!r} must be uint8 (0-255), got {images.dtype}")
    return images


def load_labels(path: str, num_samples: int) -> np.ndarray | None:
    """The conditioning class labels `[N]` int of a samples `.npz` (key `labels`), or None.

    Raises:
      ValueError: labels that are not `[num_samples]` integers.
    """
    with _open_npz(path, "samples file") as data:
        if "labels" not in data.files:
            return None
        labels = data["labels"]
    if labels.shape != (num_samples,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: 'labels' must be [{num_samples}] integers (one per image), "
            f"got {labels.dtype} {labels.shape}"
        )
    return labels


def _reference_from_file(
    path: str, image_shape: tuple[int, ...], features: FeatureNetwork, mesh, batch_size: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, description) from a stats `.npz` or an ADM-style image batch."""
    from visgen.metrics.fid import load_reference_stats

    with _open_npz(path, "reference file") as data:
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
    acc = _accumulate(
        _padded_batches(images, batch_size),
        math.ceil(len(images) / batch_size),
        _uint8_fn(features.graphdef),
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
    acc = _accumulate(
        make_eval_iterator(cfg, batch_size=batch_size, max_examples=total),
        math.ceil(total / batch_size),
        _pipeline_fn(features.graphdef),
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
      batch_size: images per jitted call (a multiple of the device count).

    Exactly one of `ref` and `ref_dataset` is given.
    """
    from visgen.metrics.fid import frechet_distance, inception_score
    from visgen.train.sharding import make_mesh

    if bool(ref) == bool(ref_dataset):
        raise ValueError("gfid needs exactly one reference: --ref FILE.npz or --ref-dataset NAME")
    mesh = make_mesh(-1, 1)
    _check_batch_size(batch_size, mesh)
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
    acc = _accumulate(
        _padded_batches(images, batch_size),
        math.ceil(n / batch_size),
        _uint8_fn(features.graphdef),
        features,
        mesh,
        "samples",
    )
    if acc.count < 2:
        raise ValueError(f"{samples_name}: FID needs at least 2 samples, got {acc.count}")
    mu, sigma = acc.stats.stats()
    result = {
        "mode": "gfid",
        **_describe(features),
        "fid": frechet_distance(mu, sigma, mu_ref, sigma_ref),
        "samples": samples_name,
        "num_samples": n,
        "image_shape": [h, w, 3],
        "reference": reference,
    }
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


# ------------------------------------------------------------------ token perturbation


def nearest_codes(codes: jax.Array, delta: int, chunk: int = 1024) -> jax.Array:
    """Each code's `delta` nearest other codes: `[K, D]` -> int32 `[K, min(delta, K - 1)]`.

    Nearest first, by squared Euclidean distance in the space the codes are
    given in (pass `quantizer.codes()`: L2-normalised codes rank by cosine);
    a code is never its own neighbour. Rows are computed `chunk` at a time so
    a 16k codebook never holds a `[K, K]` matrix.
    """
    codes = jnp.asarray(codes, jnp.float32)
    k = codes.shape[0]
    if k < 2:
        raise ValueError(f"a codebook of {k} code(s) has no neighbours to perturb to")
    if delta < 1:
        raise ValueError(f"delta must be >= 1, got {delta}")
    delta = min(delta, k - 1)
    chunk = min(chunk, k)
    sq = jnp.sum(codes * codes, axis=-1)  # [K]
    table = np.zeros((k, delta), np.int32)
    for start in range(0, k, chunk):
        start = min(start, k - chunk)  # the last chunk overlaps the previous: static shapes
        table[start : start + chunk] = np.asarray(_neighbour_rows(codes, sq, start, chunk, delta))
    return jnp.asarray(table)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _neighbour_rows(codes, sq, start, chunk: int, delta: int) -> jax.Array:
    """Neighbour ids `[chunk, delta]` of codes `start .. start + chunk - 1` (`codes` `[K, D]`)."""
    block = jax.lax.dynamic_slice_in_dim(codes, start, chunk)  # [chunk, D]
    cross = jnp.matmul(block, codes.T, precision=jax.lax.Precision.HIGHEST)  # [chunk, K]
    dist = jax.lax.dynamic_slice_in_dim(sq, start, chunk)[:, None] + sq[None, :] - 2.0 * cross
    rows = start + jnp.arange(chunk)
    dist = jnp.where(rows[:, None] == jnp.arange(codes.shape[0])[None, :], jnp.inf, dist)
    return jax.lax.top_k(-dist, delta)[1].astype(jnp.int32)


def perturb_tokens(
    tokens: jax.Array, neighbours: jax.Array, alpha: float | jax.Array, key: jax.Array
) -> jax.Array:
    """RobusTok-style token perturbation, jit-able.

    Args:
      tokens: int `[B, ...]` code ids.
      neighbours: int32 `[K, delta]` from `nearest_codes` (no code lists itself).
      alpha: replacement probability in [0, 1] (a traced scalar is fine).
      key: PRNG key.

    Returns:
      `[B, ...]` ids of the same dtype: each token, with probability `alpha`,
      replaced by one of its `delta` neighbours drawn uniformly; alpha 0 is
      the identity and alpha 1 replaces every token.
    """
    k_replace, k_choice = jax.random.split(key)
    # uniform is in [0, 1): never below 0, always below 1.
    replace = jax.random.uniform(k_replace, tokens.shape) < alpha
    choice = jax.random.randint(k_choice, tokens.shape, 0, neighbours.shape[1])
    return jnp.where(replace, neighbours[tokens, choice].astype(tokens.dtype), tokens)


# ------------------------------------------------------------------ rfid / pfid


def has_codebook(tokenizer) -> bool:
    """Whether `tokenizer` has discrete tokens from a codebook `quantizer.codes()`."""
    quantizer = getattr(tokenizer, "quantizer", None)
    return tokenizer.spec.kind == "discrete" and callable(getattr(quantizer, "codes", None))


def parse_alphas(text: str) -> list[float]:
    """`"0.1,0.2"` -> `[0.1, 0.2]`, each in [0, 1]."""
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"--alphas must be comma-separated numbers, got {text!r}") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"--alphas must be numbers in [0, 1], got {text!r}")
    return alphas


@jax.jit
def _perturb_fn(codes, neighbours, alpha, key) -> tuple[jax.Array, jax.Array]:
    """`perturb_tokens` plus the number of replaced tokens per example `[B]`."""
    perturbed = perturb_tokens(codes, neighbours, alpha, key)
    changed = (perturbed != codes).reshape(codes.shape[0], -1)
    return perturbed, jnp.sum(changed.astype(jnp.float32), axis=-1)


@functools.cache
def _tokenizer_fns(tok_graph, feat_graph, discrete: bool) -> tuple[Callable, Callable]:
    """Jitted `encode(tok_state, feat_state, x) -> (codes, reference features)` and
    `decode(tok_state, feat_state, codes, x) -> per-frame features, predicted classes
    and metrics`. Reference features come with their logits.

    `x` is a batch `[B, H, W, 3]` (or `[B, T, H, W, 3]`) in [-1, 1]; codes are
    token ids `[B, *layout]` (discrete) or latents `[B, *layout, C]`.
    """
    from visgen.metrics import image

    @jax.jit
    def encode(tok_state, feat_state, x):
        enc = nnx.merge(tok_graph, tok_state).encode(x)
        ref = image.to_255(_fold_time(x))
        return enc.tokens if discrete else enc.latents, _apply_features(feat_graph, feat_state, ref)

    @jax.jit
    def decode(tok_state, feat_state, codes, x):
        ref = image.to_255(_fold_time(x))
        rec = image.to_255(_fold_time(nnx.merge(tok_graph, tok_state).decode(codes)))
        features, logits = _apply_features(feat_graph, feat_state, rec)
        return {
            "features": features,
            "predicted": jnp.argmax(logits, axis=-1),
            "squared_error": image.squared_error(rec, ref),
            "psnr": image.psnr(rec, ref),
            "ssim": image.ssim(rec, ref),
        }

    return encode, decode


def reconstruction_fid(
    tokenizer,
    data,
    features: FeatureNetwork,
    *,
    alphas: Sequence[float] = (),
    delta: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    max_examples: int = 0,
) -> dict:
    """rFID, PSNR and SSIM of `tokenizer` on `data.eval_split`, and pFID at `alphas`.

    Args:
      tokenizer: a `visgen.tokenizers.Tokenizer` module (images or videos;
        video frames count as images).
      data: the `DataConfig` to read (`eval_split`, first `max_examples`).
      features: the feature network.
      alphas: perturbation rates for pFID (needs a codebook); rFID is alpha 0.
      delta: neighbours per code (clipped to the codebook size - 1).
      seed: seeds the perturbations (batch `i` uses `fold_in(key(seed), i)`).

    Returns:
      JSON-able dict: `rfid`, `psnr`, `psnr_per_image`, `ssim`, `frames` and,
      with alphas, `pfid` and `replaced_fraction` keyed by `f"{alpha:g}"`.
      With the feature network a classifier of this dataset (`info["dataset"]`),
      also `class_accuracy` (of the reconstructions; keyed by alpha with
      alphas) and `class_accuracy_originals`: how often the classifier finds
      each image's class after and before the round trip through the tokens.
    """
    from visgen.data import make_eval_iterator, num_examples
    from visgen.metrics import image
    from visgen.metrics.fid import FeatureStats, frechet_distance
    from visgen.train.progress import progress_bar
    from visgen.train.sharding import global_batch, make_mesh, replicated

    discrete = has_codebook(tokenizer)
    if alphas and not discrete:
        raise ValueError(
            f"pfid perturbs tokens within a codebook, but this tokenizer's tokens are "
            f"{tokenizer.spec.kind} with no codebook (quantizer "
            f"{type(getattr(tokenizer, 'quantizer', None)).__name__})"
        )
    mesh = make_mesh(-1, 1)
    _check_batch_size(batch_size, mesh)
    rates = [0.0, *(float(a) for a in alphas)]
    tok_graph, tok_state = nnx.split(tokenizer)
    tok_state = jax.device_put(tok_state, replicated(mesh))
    feat_state = jax.device_put(features.state, replicated(mesh))
    neighbours = None
    if alphas:
        codebook = tokenizer.quantizer.codes()  # [K, D], in the space tokens are searched in
        neighbours = jax.device_put(nearest_codes(codebook, delta), replicated(mesh))
    encode, decode = _tokenizer_fns(tok_graph, features.graphdef, discrete)

    total = num_examples(data, data.eval_split)
    if max_examples:
        total = min(total, max_examples)
    num_batches = math.ceil(total / batch_size)
    batches = make_eval_iterator(data, batch_size=batch_size, max_examples=total)
    ref_stats = FeatureStats()
    rec_stats = [FeatureStats() for _ in rates]
    sums = [dict(replaced=0.0, squared_error=0.0, psnr=0.0, ssim=0.0, hits=0) for _ in rates]
    # Class accuracy only from a classifier trained on this very dataset's labels.
    classify = features.info.get("dataset") == data.name
    original_hits = 0
    frames = pixels = tokens_seen = 0
    base_key = jax.random.PRNGKey(seed)
    for i, local in enumerate(progress_bar(batches, total=num_batches, desc="reconstruct")):
        batch = global_batch(local, mesh)
        x = batch["image"]
        per_example = x.shape[1] if x.ndim == 5 else 1  # video frames per clip
        keep = np.repeat(np.asarray(batch["mask"]), per_example)
        codes, (ref_features, ref_logits) = encode(tok_state, feat_state, x)
        ref_stats.update(np.asarray(ref_features)[keep])
        labels = np.repeat(np.asarray(batch["label"]), per_example)
        if classify:
            original_hits += int((np.asarray(ref_logits).argmax(-1) == labels)[keep].sum())
        frames += int(keep.sum())
        pixels += int(keep.sum()) * math.prod(x.shape[-3:])
        tokens_seen += int(np.asarray(batch["mask"]).sum()) * math.prod(codes.shape[1:])
        key = jax.random.fold_in(base_key, i)
        mask = np.asarray(batch["mask"])
        for j, alpha in enumerate(rates):
            # rFID decodes the encoder's own tokens; every alpha > 0 perturbs them
            # first (with one key per batch), then runs the same decode program.
            perturbed = codes
            if j > 0:
                perturbed, replaced = _perturb_fn(codes, neighbours, jnp.float32(alpha), key)
                sums[j]["replaced"] += float(np.asarray(replaced)[mask].sum())
            out = jax.device_get(decode(tok_state, feat_state, perturbed, x))
            rec_stats[j].update(out["features"][keep])
            if classify:
                sums[j]["hits"] += int((out["predicted"] == labels)[keep].sum())
            for name in ("squared_error", "psnr", "ssim"):
                sums[j][name] += float(np.asarray(out[name], np.float64)[keep].sum())
    if frames < 2:
        raise ValueError(f"FID needs at least 2 images, the split gave {frames}")
    mu_ref, sigma_ref = ref_stats.stats()
    fids = [frechet_distance(*s.stats(), mu_ref, sigma_ref) for s in rec_stats]
    result = {
        "rfid": fids[0],
        "psnr": float(image.psnr_from_mse(sums[0]["squared_error"] / pixels)),
        "psnr_per_image": sums[0]["psnr"] / frames,
        "ssim": sums[0]["ssim"] / frames,
        "frames": frames,
    }
    if classify:
        result["class_accuracy_originals"] = original_hits / frames
        result["class_accuracy"] = sums[0]["hits"] / frames
    if alphas:
        keys = [f"{a:g}" for a in rates]
        result["delta"] = int(neighbours.shape[1])
        result["pfid"] = dict(zip(keys, fids, strict=True))
        result["replaced_fraction"] = {
            k: s["replaced"] / tokens_seen for k, s in zip(keys, sums, strict=True)
        }
        result["psnr_perturbed"] = {
            k: float(image.psnr_from_mse(s["squared_error"] / pixels))
            for k, s in zip(keys, sums, strict=True)
        }
        if classify:
            result["class_accuracy"] = {
                k: s["hits"] / frames for k, s in zip(keys, sums, strict=True)
            }
    return result


def workdir_fid(
    workdir: str,
    features: FeatureNetwork,
    *,
    split: str = "",
    data_dir: str = "",
    alphas: Sequence[float] = (),
    delta: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    max_examples: int = 0,
) -> dict:
    """`reconstruction_fid` of a tokenizer workdir's EMA weights on its own data config."""
    from visgen.data import DataConfig
    from visgen.tasks import make_task
    from visgen.train.workdir import load_config, load_trained

    config = load_config(workdir)
    if config.task != "tokenizer":
        raise ValueError(f"{workdir} holds a {config.task!r} task, not a tokenizer")
    if alphas:
        # Checked on the abstract model, before any weights or data are read.
        abstract = nnx.eval_shape(lambda: make_task(config).build(nnx.Rngs(0)))
        if not has_codebook(abstract.tokenizer):
            raise ValueError(
                f"pfid needs a tokenizer with a codebook; {workdir} has "
                f"{abstract.tokenizer.spec.kind} tokens ({config.tokenizer.name}, "
                f"latent={config.tokenizer.get('latent', 'vq')!r})"
            )
    config, _, model, step = load_trained(workdir)
    data = DataConfig(**config.data)
    data = dataclasses.replace(
        data,
        eval_split=split or data.eval_split,
        data_dir=data_dir or data.data_dir,
        random_flip=False,
    )
    tokenizer = model.tokenizer
    result = reconstruction_fid(
        tokenizer,
        data,
        features,
        alphas=alphas,
        delta=delta,
        seed=seed,
        batch_size=batch_size,
        max_examples=max_examples,
    )
    head = {
        "mode": "pfid" if alphas else "rfid",
        **_describe(features),
        "workdir": workdir,
        "step": step,
        "dataset": data.name,
        "split": data.eval_split,
        "seed": seed,
    }
    return {**head, **result}


# ------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--features",
        required=True,
        help=f"feature network: {', '.join(FEATURE_NAMES)}, or a FeatureNet weights .npz",
    )
    common.add_argument("--inception-weights", default="", help="FID Inception .npz (inception)")
    common.add_argument("--batch-size", type=int, default=64)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--out", default="", help="also write the JSON result here")

    tok = argparse.ArgumentParser(add_help=False)
    tok.add_argument("--workdir", required=True, help="a tokenizer training workdir")
    tok.add_argument("--split", default="", help="default: the config's eval split")
    tok.add_argument("--max-examples", type=int, default=0, help="0 = the whole split")
    tok.add_argument("--data-dir", default="", help="override the config's TFDS data dir")

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    modes = parser.add_subparsers(dest="mode", required=True)
    g = modes.add_parser("gfid", parents=[common], help="samples against a reference")
    g.add_argument("--samples", required=True, help=".npz of uint8 images [N, H, W, 3]")
    g.add_argument("--ref", default="", help="reference stats .npz (mu, sigma) or ADM batch")
    g.add_argument("--ref-dataset", default="", help="or a dataset name (e.g. shapes)")
    g.add_argument("--ref-split", default="test")
    g.add_argument("--ref-config", default="", help="TFDS builder config ('' = default)")
    g.add_argument("--ref-image-size", type=int, default=0, help="0 = the samples' size")
    g.add_argument("--ref-max-examples", type=int, default=0, help="0 = the whole split")
    g.add_argument("--data-dir", default="", help="TFDS data dir ('' = TFDS default)")
    modes.add_parser("rfid", parents=[common, tok], help="reconstruction FID of a tokenizer")
    p = modes.add_parser("pfid", parents=[common, tok], help="perturbed reconstruction FID")
    p.add_argument("--alphas", default="0.1,0.2,0.3", help="perturbation rates")
    p.add_argument("--delta", type=int, default=100, help="nearest codes to draw from")
    return parser


def run(args: argparse.Namespace) -> dict:
    """The result of the parsed command line (raises on bad input)."""
    if args.mode == "pfid":
        alphas = parse_alphas(args.alphas)
        if args.delta < 1:
            raise ValueError(f"--delta must be >= 1, got {args.delta}")
    if args.mode == "gfid":
        # Bad samples fail before a feature network is loaded.
        images = load_samples(args.samples)
        labels = load_labels(args.samples, len(images))
        features = load_features(args.features, inception_weights=args.inception_weights)
        return generation_fid(
            images,
            features,
            samples_name=args.samples,
            labels=labels,
            ref=args.ref,
            ref_dataset=args.ref_dataset,
            ref_split=args.ref_split,
            ref_config=args.ref_config,
            ref_image_size=args.ref_image_size,
            ref_max_examples=args.ref_max_examples,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
        )
    features = load_features(args.features, inception_weights=args.inception_weights)
    return workdir_fid(
        args.workdir,
        features,
        split=args.split,
        data_dir=args.data_dir,
        alphas=alphas if args.mode == "pfid" else (),
        delta=args.delta if args.mode == "pfid" else 100,
        seed=args.seed,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    sys.exit(main())
