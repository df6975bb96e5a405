"""LPIPS perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness
of Deep Features as a Perceptual Metric"), VGG16 variant, in Flax NNX.

Single-stage TiTok (and most VQGAN-style tokenizers) add LPIPS to the pixel
loss. This is the `lpips` package's v0.1 `net='vgg'` forward:

1. scaling layer: `(x - shift) / scale` with the package's constants, on
   `[-1, 1]` inputs;
2. VGG16 conv trunk, features taken after relu1_2, relu2_2, relu3_3, relu4_3
   and relu5_3 (3x3 convs with padding 1, 2x2 max pools between stages);
3. each feature unit-normalised over channels, `f / (||f||_2 + 1e-10)`;
4. squared difference of the two normalised features, weighted over channels
   by a non-negative 1x1 "lin" layer (no bias), averaged over space;
5. summed over the five layers.

The weights come only from a local `.npz` (nothing is ever downloaded); make it
with `python -m evals.convert_lpips vgg16-397923af.pth vgg.pth lpips_vgg.npz`.
They are frozen: stored as `Frozen` (an `nnx.Variable`, not an
`nnx.Param`) so an optimizer over `nnx.Param` never sees them, and wrapped in
`jax.lax.stop_gradient` so no gradient is computed for them either.

`.npz` layout (float32 arrays):

    conv{s}_{i}.kernel  [3, 3, C_in, C_out]  HWIO conv kernel, stage s in 1..5,
                                              i in 1..2 (s <= 2) or 1..3 (s >= 3)
    conv{s}_{i}.bias    [C_out]
    lin{k}.weight       [C_k]                lin layer for stage k in 0..4,
                                              C_k the width of stage k + 1

Real VGG16 has widths 64, 128, 256, 512, 512 and C_in = 3 for conv1_1; the
loader reads widths from the shapes (so tests may use narrower random nets) but
checks that they chain and that every lin weight is non-negative.
"""

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.nn.frozen import Frozen

VGG16_STAGES: tuple[tuple[str, ...], ...] = (
    ("conv1_1", "conv1_2"),
    ("conv2_1", "conv2_2"),
    ("conv3_1", "conv3_2", "conv3_3"),
    ("conv4_1", "conv4_2", "conv4_3"),
    ("conv5_1", "conv5_2", "conv5_3"),
)
VGG16_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)

# The lpips package's ScalingLayer constants, for inputs in [-1, 1].
LPIPS_SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)

_NORM_EPS = 1e-10
_HOW_TO_MAKE = (
    "Convert it once from torchvision's VGG16 ImageNet weights (vgg16-397923af.pth) and "
    "the lpips package's linear layers (lpips/weights/v0.1/vgg.pth):\n"
    "  python -m evals.convert_lpips vgg16-397923af.pth vgg.pth lpips_vgg.npz"
)


def lpips_npz_keys() -> list[str]:
    """Every key a LPIPS `.npz` must hold, in network order."""
    keys = [f"{c}.{p}" for stage in VGG16_STAGES for c in stage for p in ("kernel", "bias")]
    return keys + [f"lin{k}.weight" for k in range(len(VGG16_STAGES))]


def _validate(weights: Mapping[str, np.ndarray]) -> None:
    expected = lpips_npz_keys()
    missing = [k for k in expected if k not in weights]
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"bad LPIPS weights: missing keys {missing}, unexpected keys {unexpected}")
    cin = 3
    for k, stage in enumerate(VGG16_STAGES):
        for name in stage:
            kernel, bias = weights[f"{name}.kernel"], weights[f"{name}.bias"]
            if kernel.ndim != 4 or kernel.shape[:3] != (3, 3, cin):
                raise ValueError(
                    f"{name}.kernel: expected [3, 3, {cin}, C_out], got {kernel.shape}"
                )
            cin = kernel.shape[3]
            if bias.shape != (cin,):
                raise ValueError(f"{name}.bias: expected [{cin}], got {bias.shape}")
        lin = weights[f"lin{k}.weight"]
        if lin.shape != (cin,):
            raise ValueError(f"lin{k}.weight: expected [{cin}], got {lin.shape}")
        # LPIPS trains its lin layers clamped to >= 0 so the distance is >= 0.
        if np.any(lin < 0):
            raise ValueError(f"lin{k}.weight has negative entries; LPIPS lin weights are >= 0")


class LPIPS(nnx.Module):
    """LPIPS-VGG distance with frozen weights; see the module docstring."""

    def __init__(self, weights: Mapping[str, np.ndarray], *, dtype: jnp.dtype = jnp.float32):
        """Builds the network from arrays in the `.npz` layout.

        Args:
          weights: name -> array, as `np.load` of a LPIPS `.npz` returns.
          dtype: compute dtype of the VGG trunk; normalisation and the distance
            head always run in float32.
        """
        _validate(weights)
        self.dtype = dtype
        names = [name for stage in VGG16_STAGES for name in stage]
        self.kernels = nnx.List([Frozen(jnp.asarray(weights[f"{n}.kernel"], dtype)) for n in names])
        self.biases = nnx.List([Frozen(jnp.asarray(weights[f"{n}.bias"], dtype)) for n in names])
        self.lins = nnx.List(
            [
                Frozen(jnp.asarray(weights[f"lin{k}.weight"], jnp.float32))
                for k in range(len(VGG16_STAGES))
            ]
        )

    def _features(self, x: jax.Array) -> list[jax.Array]:
        """VGG16 relu{1..5}_{last} features of scaled inputs `[N, H, W, 3]`."""
        shift = jnp.asarray(LPIPS_SHIFT, jnp.float32)
        scale = jnp.asarray(LPIPS_SCALE, jnp.float32)
        h = ((x.astype(jnp.float32) - shift) / scale).astype(self.dtype)
        feats, i = [], 0
        for s, stage in enumerate(VGG16_STAGES):
            if s > 0:
                # torch MaxPool2d(2, 2): floor division of odd sizes, hence VALID.
                h = jax.lax.reduce_window(
                    h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
            for _ in stage:
                kernel = jax.lax.stop_gradient(self.kernels[i][...])
                bias = jax.lax.stop_gradient(self.biases[i][...])
                h = jax.lax.conv_general_dilated(
                    h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
                h = jax.nn.relu(h + bias)
                i += 1
            feats.append(h)
        return feats

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """LPIPS distances between `x` and `y` in [-1, 1].

        Args:
          x: images `[B, H, W, 3]` or videos `[B, T, H, W, 3]` (frames are folded
            into the batch). H and W of at least 16 keep every stage non-empty.
          y: the same shape as `x`.

        Returns:
          float32 distances `[B]` for images, `[B, T]` (one per frame) for video.
          Gradients flow to `x` and `y`, never to the weights.
        """
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs equal shapes, got {x.shape} and {y.shape}")
        if x.ndim not in (4, 5) or x.shape[-1] != 3:
            raise ValueError(f"expected [B, H, W, 3] or [B, T, H, W, 3], got {x.shape}")
        lead = x.shape[:-3]
        n = int(np.prod(lead))
        # One trunk pass over both inputs: half the kernel launches.
        both = jnp.concatenate([x.reshape((n, *x.shape[-3:])), y.reshape((n, *y.shape[-3:]))])
        total = jnp.zeros((n,), jnp.float32)
        for feat, lin in zip(self._features(both), self.lins, strict=True):
            f = _unit_normalize(feat.astype(jnp.float32))
            diff = jnp.square(f[:n] - f[n:])
            weighted = diff @ jax.lax.stop_gradient(lin[...])
            total = total + jnp.mean(weighted, axis=(1, 2))
        return total.reshape(lead)


def _unit_normalize(f: jax.Array) -> jax.Array:
    """`f / (||f||_2 + eps)` over channels, with a finite gradient at `f = 0`.

    ReLU features can be all zero at a position; the gradient of sqrt at 0 would
    turn into NaN, so the norm is computed through a guarded square root whose
    forward value is unchanged.
    """
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return f / (norm + _NORM_EPS)


def load_lpips(path: str, *, dtype: jnp.dtype = jnp.float32) -> LPIPS:
    """Loads LPIPS-VGG from a local `.npz` in the layout of the module docstring.

    Raises:
      FileNotFoundError: naming the file that is needed and how to make it.
      ValueError: when the file does not follow the layout.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LPIPS weights not found: {path!r}. {_HOW_TO_MAKE}")
    # allow_pickle=False (the default) so a weights file can never run code.
    with np.load(path, allow_pickle=False) as data:
        weights = {k: data[k] for k in data.files}
    return LPIPS(weights, dtype=dtype)
