"""FID and Inception Score maths on the host, in float64, plus reference statistics files.

- `FeatureStats` accumulates the mean and covariance of features `[B, D]` batch
  by batch (Chan et al.'s pairwise update, float64), so a 50k-sample FID never
  holds all features; `stats()` equals `np.mean` / `np.cov(rowvar=False)`
  (unbiased, N - 1) of the concatenated features, as pytorch-fid computes them.
- `frechet_distance` is pytorch-fid's `calculate_frechet_distance`
  (Heusel et al. 2017): `|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))` with
  scipy's `sqrtm`; a non-finite square root is retried with `eps * I` added to
  both covariances, small imaginary parts (numerical noise) are dropped, large
  ones raise.
- `inception_score` is torch-fidelity's `isc_features_to_metric` (Salimans et
  al. 2016): `exp(E_x KL(p(y|x) || p(y)))` over 10 splits of the (shuffled)
  samples, from the 1008 `logits_unbiased` of the FID Inception.
- Reference statistics are `.npz` files with `mu` `[D]` and `sigma` `[D, D]`;
  `load_reference_stats` also reads ADM-style reference batches (guided-diffusion's
  `VIRTUAL_imagenet256_labeled.npz`: `mu`/`sigma`, or images `arr_0`
  `[N, H, W, 3]` uint8 whose statistics are computed with a given feature function).

Nothing here imports jax: features arrive as numpy arrays.
"""

import os
import warnings
from collections.abc import Callable

import numpy as np
from scipy import linalg


class FeatureStats:
    """Streaming float64 mean and covariance of `[B, D]` feature batches."""

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None  # [D]
        self._m2: np.ndarray | None = None  # [D, D], sum of centred outer products

    def update(self, features: np.ndarray) -> None:
        """Adds a batch `[B, D]` (any float dtype; accumulated in float64)."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [B, D], got shape {x.shape}")
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise ValueError(f"feature dim {x.shape[1]} differs from earlier {self._mean.shape[0]}")
        if x.shape[0] == 0:
            return
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        if self._mean is None:
            self.count, self._mean, self._m2 = n_b, mean_b, m2_b
            return
        n = self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.count * n_b / n)
        self.count = n

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """`(mu [D], sigma [D, D])`, sigma unbiased (divided by N - 1), float64.

        Raises:
          ValueError: fewer than two samples were seen.
        """
        if self.count < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.count}")
        return self._mean.copy(), self._m2 / (self.count - 1)


def stats_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(mu [D], sigma [D, D])` of features `[N, D]` in one go (float64)."""
    acc = FeatureStats()
    acc.update(features)
    return acc.stats()


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between `N(mu1, sigma1)` and `N(mu2, sigma2)` (`[D]`, `[D, D]`).

    As pytorch-fid: when `sqrtm(sigma1 @ sigma2)` is not finite (a singular
    product), it is recomputed with `eps * I` added to both covariances; an
    imaginary part is dropped when the diagonal's is below 1e-3.

    Raises:
      ValueError: mismatched shapes, or an imaginary component above 1e-3.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes: {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(
            f"covariances must both be [{mu1.shape[0]}, {mu1.shape[0]}], "
            f"got {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: singular covariance product; adding {eps} to the diagonals", stacklevel=2
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(
    logits: np.ndarray, splits: int = 10, shuffle: bool = True, seed: int = 2020
) -> tuple[float, float]:
    """Inception Score `(mean, std)` over `splits` of logits `[N, C]` (float64).

    Matches torch-fidelity: rows are permuted by `np.random.RandomState(seed)`
    when `shuffle` (its default, seed 2020), split `i` is rows
    `[i N // splits, (i + 1) N // splits)`, and each split scores
    `exp(mean_x sum_y p(y|x) (log p(y|x) - log p(y)))`. Pass the FID
    Inception's `logits_unbiased` to compare with published numbers.
    """
    x = np.asarray(logits, np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {x.shape}")
    n = x.shape[0]
    if n < splits:
        raise ValueError(f"need at least {splits} samples for {splits} splits, got {n}")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    log_p = x - x.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(axis=0, keepdims=True)
        kl = (p[lo:hi] * (log_p[lo:hi] - np.log(q))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def save_stats(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Writes `mu` `[D]` and `sigma` `[D, D]` (float64) to the `.npz` at `path` exactly."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"expected mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    # A file handle keeps `path` exact (np.savez on a name appends ".npz").
    with open(path, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma)


def load_reference_stats(
    path: str,
    features_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 250,
) -> tuple[np.ndarray, np.ndarray]:
    """`(mu [D], sigma [D, D])` from a stats `.npz` or an ADM-style reference batch.

    Args:
      path: `.npz` holding `mu` and `sigma` (ours, or an ADM reference batch,
        whose `mu`/`sigma` are the TF Inception's pool features), or only
        images `arr_0` `[N, H, W, 3]` uint8.
      features_fn: maps an image batch `[B, H, W, 3]` uint8 to features
        `[B, D]`; needed only when the file has images and no statistics.
      batch_size: images per `features_fn` call.

    Raises:
      FileNotFoundError, or ValueError for a file with neither statistics nor
      images, an empty image array, or images without `features_fn`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference statistics not found: {path!r}")
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if {"mu", "sigma"} <= keys:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
            if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
                raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
            return mu, sigma
        if "arr_0" not in keys:
            raise ValueError(
                f"{path}: expected 'mu' and 'sigma' or ADM-style images 'arr_0'; has {sorted(keys)}"
            )
        images = data["arr_0"]
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"{path}: arr_0 must be non-empty images [N, H, W, 3], got {images.shape}")
    if features_fn is None:
        raise ValueError(f"{path} holds images (arr_0) but no statistics: pass a features_fn")
    acc = FeatureStats()
    for start in range(0, images.shape[0], batch_size):
        acc.update(np.asarray(features_fn(images[start : start + batch_size])))
    return acc.stats()
