"""Tests for visgen.metrics.fid: streaming statistics, Frechet distance, IS, stats files.

Checked against independent float64 numpy/scipy computations; the FID
behaviour tests use a cheap fixed random feature map instead of Inception, so
they run in well under a second.
"""

import numpy as np
import pytest
from scipy import linalg, special, stats

from visgen.metrics import fid
from visgen.metrics.fid import (
    FeatureStats,
    frechet_distance,
    inception_score,
    load_reference_stats,
    save_stats,
    stats_from_features,
)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)


def _independent_fid(mu1, s1, mu2, s2) -> float:
    """tr sqrtm(S1 S2) as the sum of sqrt eigenvalues of the similar matrix
    S1^1/2 S2 S1^1/2 (symmetric PSD), with S1^1/2 from an eigendecomposition."""
    w, v = linalg.eigh(s1)
    sqrt_s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(linalg.eigvalsh(sqrt_s1 @ s2 @ sqrt_s1), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _feature_map(images: np.ndarray) -> np.ndarray:
    """A fixed random feature map `[N, H, W, 3]` uint8 -> `[N, 32]` (stand-in for Inception)."""
    x = images.reshape(images.shape[0], -1).astype(np.float64) / 127.5 - 1.0
    w = np.random.default_rng(123).normal(0, 1 / np.sqrt(x.shape[1]), (x.shape[1], 32))
    return np.tanh(2.0 * x @ w)


def _smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """`[n, 8, 8, 3]` uint8 images: random colour gradients, a structured distribution."""
    t = np.linspace(0, 1, 8)
    c0, c1 = rng.uniform(0, 255, (2, n, 1, 1, 3))
    angle = rng.uniform(0, np.pi, (n, 1, 1, 1))
    ramp = np.cos(angle) * t[None, :, None, None] + np.sin(angle) * t[None, None, :, None]
    return np.clip(c0 + (c1 - c0) * ramp / np.sqrt(2), 0, 255).astype(np.uint8)


def test_feature_stats_streaming_equals_numpy():
    rng = np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, (257, 16)).astype(np.float32) @ rng.normal(size=(16, 16))
    acc = FeatureStats()
    for lo, hi in [(0, 1), (1, 1), (1, 100), (100, 101), (101, 257)]:  # uneven, empty, single
        acc.update(features[lo:hi])
    mu, sigma = acc.stats()
    assert acc.count == 257
    np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError, match="at least 2 samples"):
        stats_from_features(features[:1])
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        acc.update(features[0])
    with pytest.raises(ValueError, match="feature dim 8 differs from earlier 16"):
        acc.update(features[:, :8])


def test_frechet_distance_equals_independent_computation():
    rng = np.random.default_rng(1)
    for d in (1, 8, 64):
        mu1, mu2 = rng.normal(size=(2, d))
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        got = frechet_distance(mu1, s1, mu2, s2)
        np.testing.assert_allclose(got, _independent_fid(mu1, s1, mu2, s2), rtol=1e-9)
        # Symmetric in its two arguments.
        np.testing.assert_allclose(got, frechet_distance(mu2, s2, mu1, s1), rtol=1e-9)


def test_fid_of_a_set_against_itself_is_zero():
    features = _feature_map(_smooth_images(np.random.default_rng(2), 500))
    mu, sigma = stats_from_features(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_fid_grows_with_noise_strength():
    rng = np.random.default_rng(3)
    reference = stats_from_features(_feature_map(_smooth_images(rng, 2000)))
    images = _smooth_images(rng, 2000).astype(np.float64)
    fids = []
    for std in (0, 8, 16, 32, 64, 128):
        noisy = np.clip(images + rng.normal(0, std, images.shape), 0, 255).round().astype(np.uint8)
        fids.append(frechet_distance(*reference, *stats_from_features(_feature_map(noisy))))
    assert np.all(np.diff(fids) > 0), fids
    assert fids[0] < 0.05 * fids[-1], fids  # a fresh sample of the same distribution is close


def test_singular_product_retried_with_diagonal_offset(monkeypatch):
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=(2, 6))
    s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
    calls = []
    sqrtm = linalg.sqrtm

    def first_call_not_finite(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else sqrtm(a)

    monkeypatch.setattr(fid.linalg, "sqrtm", first_call_not_finite)
    with pytest.warns(UserWarning, match="adding 0.001 to the diagonals"):
        got = frechet_distance(mu1, s1, mu2, s2, eps=1e-3)
    np.testing.assert_allclose(calls[1], (s1 + 1e-3 * np.eye(6)) @ (s2 + 1e-3 * np.eye(6)))
    # Traces use the original covariances; only the square root sees the offset.
    expected = _independent_fid(mu1, s1 + 1e-3 * np.eye(6), mu2, s2 + 1e-3 * np.eye(6))
    np.testing.assert_allclose(got, expected - 2 * 6 * 1e-3, rtol=1e-9)


def test_rank_deficient_covariances_give_a_finite_distance():
    rng = np.random.default_rng(5)
    # 8 samples in 16 dimensions: both covariances have rank 7.
    s1 = stats_from_features(rng.normal(size=(8, 16)))
    s2 = stats_from_features(rng.normal(size=(8, 16)))
    got = frechet_distance(*s1, *s2)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, _independent_fid(*s1, *s2), rtol=1e-4)


def test_frechet_distance_errors():
    eye = np.eye(2)
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(np.zeros(2), eye, np.zeros(2), np.diag([-1.0, 1.0]))
    with pytest.raises(ValueError, match="mean vectors"):
        frechet_distance(np.zeros(2), eye, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=r"covariances must both be \[2, 2\]"):
        frechet_distance(np.zeros(2), eye, np.zeros(2), np.eye(3))


def test_inception_score_bounds():
    # Uniform predictions carry no information: IS = 1.
    mean, std = inception_score(np.zeros((100, 1008)))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # Confident, distinct classes, every split holding each class once: IS = C.
    c = 16
    logits = 50.0 * np.tile(np.eye(c), (10, 1))
    mean, std = inception_score(logits, shuffle=False)
    assert mean == pytest.approx(c, rel=1e-9) and std == pytest.approx(0.0, abs=1e-6)
    # Shuffled, a split holds the classes only roughly evenly: close to C, not above.
    mean, _ = inception_score(50.0 * np.tile(np.eye(c), (100, 1)))
    assert 0.9 * c < mean <= c


def test_inception_score_equals_independent_computation():
    rng = np.random.default_rng(6)
    logits = rng.normal(0, 3, (203, 50))  # N not divisible by the splits
    mean, std = inception_score(logits, splits=10, seed=7)
    x = logits[np.random.RandomState(7).permutation(203)]
    p = special.softmax(x, axis=1)
    scores = []
    for i in range(10):
        chunk = p[i * 203 // 10 : (i + 1) * 203 // 10]
        kl = stats.entropy(chunk.T, chunk.mean(0)[:, None])  # KL(p(y|x) || p(y)) per row
        scores.append(np.exp(kl.mean()))
    np.testing.assert_allclose([mean, std], [np.mean(scores), np.std(scores)], rtol=1e-10)
    with pytest.raises(ValueError, match="at least 10 samples"):
        inception_score(logits[:5])


def test_stats_files_and_adm_reference_batches(tmp_path):
    rng = np.random.default_rng(8)
    images = _smooth_images(rng, 50)
    mu, sigma = stats_from_features(_feature_map(images))

    save_stats(str(tmp_path / "ref"), mu, sigma)  # path kept exactly, no ".npz" added
    for got, want in zip(load_reference_stats(str(tmp_path / "ref")), (mu, sigma), strict=True):
        np.testing.assert_array_equal(got, want)

    # ADM reference batch with images only: statistics computed in batches.
    np.savez(tmp_path / "adm_images.npz", arr_0=images)
    got = load_reference_stats(str(tmp_path / "adm_images.npz"), _feature_map, batch_size=16)
    np.testing.assert_allclose(got[0], mu, rtol=1e-12)
    np.testing.assert_allclose(got[1], sigma, rtol=1e-9, atol=1e-14)
    # ADM reference batch with precomputed statistics: those are used, images ignored.
    np.savez(tmp_path / "adm_stats.npz", arr_0=images, mu=mu + 1, sigma=sigma)
    np.testing.assert_array_equal(load_reference_stats(str(tmp_path / "adm_stats.npz"))[0], mu + 1)

    with pytest.raises(ValueError, match="pass a features_fn"):
        load_reference_stats(str(tmp_path / "adm_images.npz"))
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match=r"expected 'mu' and 'sigma' or ADM-style images"):
        load_reference_stats(str(tmp_path / "empty.npz"))
    np.savez(tmp_path / "no_images.npz", arr_0=np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="non-empty images"):
        load_reference_stats(str(tmp_path / "no_images.npz"), _feature_map)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_reference_stats(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match=r"expected mu \[D\] and sigma \[D, D\]"):
        save_stats(str(tmp_path / "bad.npz"), mu, sigma[:3])
