"""PSNR and SSIM on the 0-255 scale, batched and jit-able.

Images are `[B, H, W, C]` floats in [0, 255] (videos: fold time into the
batch first). SSIM follows Wang et al. 2004 with the usual 11x11 Gaussian
window (sigma 1.5), K1 = 0.01, K2 = 0.03, valid-region filtering, averaged over
channels and positions.
"""

import jax
import jax.numpy as jnp
import numpy as np

MAX_VALUE = 255.0


def to_255(x: jax.Array) -> jax.Array:
    """[-1, 1] -> [0, 255], rounded to integers as a saved 8-bit image would be."""
    return jnp.round(jnp.clip((x.astype(jnp.float32) + 1.0) * 127.5, 0.0, 255.0))


def squared_error(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image sum of squared errors `[B]` (for global PSNR over a split)."""
    d = x.astype(jnp.float32) - y.astype(jnp.float32)
    return jnp.sum(jnp.square(d).reshape(d.shape[0], -1), axis=-1)


def psnr_from_mse(mse) -> jax.Array:
    return 10.0 * jnp.log10(MAX_VALUE**2 / jnp.maximum(mse, 1e-10))


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image PSNR `[B]` in dB."""
    n = np.prod(x.shape[1:])
    return psnr_from_mse(squared_error(x, y) / n)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _filter(x: jax.Array, window: np.ndarray) -> jax.Array:
    """Separable valid filtering of `[B, H, W, C]` per channel."""
    b, h, w, c = x.shape
    k = len(window)
    x = jnp.moveaxis(x, -1, 1).reshape(b * c, h, w, 1)
    kh = jnp.asarray(window).reshape(k, 1, 1, 1)
    kw = jnp.asarray(window).reshape(1, k, 1, 1)
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn)
    x = jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn)
    return jnp.moveaxis(x.reshape(b, c, h - k + 1, w - k + 1), 1, -1)


def ssim(x: jax.Array, y: jax.Array, window_size: int = 11) -> jax.Array:
    """Per-image SSIM `[B]` for `[B, H, W, C]` images in [0, 255]."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"ssim needs two [B, H, W, C] arrays of one shape; got {x.shape}, {y.shape}"
        )
    window_size = min(window_size, x.shape[1], x.shape[2])
    win = _gaussian_window(window_size)
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    c1, c2 = (0.01 * MAX_VALUE) ** 2, (0.03 * MAX_VALUE) ** 2
    mx, my = _filter(x, win), _filter(y, win)
    sxx = _filter(x * x, win) - mx**2
    syy = _filter(y * y, win) - my**2
    sxy = _filter(x * y, win) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return jnp.mean(s, axis=(1, 2, 3))
