"""PSNR, SSIM and codebook statistics against independent computations."""

import jax.numpy as jnp
import numpy as np
import pytest

from visgen.metrics import codebook, image


def test_psnr_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 10, x.shape), 0, 255).astype(np.float32)
    mse = ((x - y) ** 2).reshape(3, -1).mean(-1)
    np.testing.assert_allclose(image.psnr(x, y), 10 * np.log10(255**2 / mse), rtol=1e-5)


def test_ssim_identity_and_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(image.ssim(x, x), 1.0, atol=1e-5)
    y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255).astype(np.float32)
    # Reference: the same Gaussian-window SSIM written directly in numpy/scipy.
    from scipy.ndimage import correlate1d

    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def filt(a):
        a = correlate1d(a, g, axis=1, mode="constant")
        a = correlate1d(a, g, axis=2, mode="constant")
        return a[:, 5:-5, 5:-5]

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    mx, my = filt(x64), filt(y64)
    sxx, syy, sxy = filt(x64 * x64) - mx**2, filt(y64 * y64) - my**2, filt(x64 * y64) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    np.testing.assert_allclose(image.ssim(x, y), s.mean(axis=(1, 2, 3)), rtol=1e-4)
    assert float(image.ssim(x, y).mean()) < 0.99


def test_ssim_rejects_bad_shapes():
    with pytest.raises(ValueError, match="ssim"):
        image.ssim(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 1)))


def test_code_histogram_respects_mask_and_usage():
    tokens = jnp.array([[0, 1, 1], [2, 2, 2], [3, 3, 3]])
    mask = jnp.array([True, True, False])
    hist = np.asarray(codebook.code_histogram(tokens, 8, mask))
    np.testing.assert_array_equal(hist, [1, 2, 3, 0, 0, 0, 0, 0])
    usage, perplexity = codebook.usage_and_perplexity(hist)
    assert usage == 3 / 8
    p = np.array([1, 2, 3]) / 6
    assert perplexity == pytest.approx(np.exp(-(p * np.log(p)).sum()))
