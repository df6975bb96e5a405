"""The FID InceptionV3 in Flax NNX: 2048-d pool features for FID, 1008 logits for IS.

FID (Heusel et al. 2017) and the Inception Score (Salimans et al. 2016) are
defined by one network: the TensorFlow graph `inception-2015-12-05` that the
original code used. pytorch-fid and torch-fidelity port it to torch as "FID
Inception"; published numbers come from that graph or those ports, so this is
a forward-exact port of torch-fidelity's `FeatureExtractorInceptionV3`:

1. images `[B, H, W, 3]` on the 0-255 scale, any H and W, are resized to
   299x299 with TensorFlow 1.x bilinear resampling (`align_corners=False`,
   source coordinate `i * in / out`, no half-pixel offset), the way
   torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x` does it;
2. normalised as `(x - 128) / 128`;
3. the InceptionV3 trunk with the TF-compatible patches: every `BasicConv2d` is
   conv (no bias) + BatchNorm (inference, eps 1e-3) + ReLU; the average pools
   of blocks A, C and E_1 exclude padding from the mean (TF's
   `count_include_pad=False`); the last block (E_2) pools with a 3x3 max pool;
4. global average pool -> `pool` `[B, 2048]` (FID features);
5. `pool @ fc.kernel` -> `logits_unbiased` `[B, 1008]` (torch-fidelity's and
   the original IS code's logits, without the fc bias), `logits` adds the bias.

Weights come only from a local file, never downloaded: the standard
`pt_inception-2015-12-05-6726825d.pth` (pytorch-fid; torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth` has the same state dict) converted
once with `python -m evals.convert_inception IN.pth OUT.npz`. `load_inception`
also reads the `.pth` directly when torch is importable; evaluation itself
never needs torch. Weights are `Frozen`, so no optimizer ever sees them.

`.npz` layout (float32), for every conv NAME of `inception_convs()` (torch
module paths such as `Mixed_5b.branch5x5_2`):

    NAME.conv.kernel  [kh, kw, C_in, C_out]  HWIO kernel (torch OIHW transposed)
    NAME.bn.scale     [C_out]                BatchNorm gamma
    NAME.bn.bias      [C_out]                BatchNorm beta
    NAME.bn.mean      [C_out]                BatchNorm running mean
    NAME.bn.var       [C_out]                BatchNorm running variance
    fc.kernel         [2048, 1008]
    fc.bias           [1008]

The module folds each BatchNorm into its conv (`kernel * s`, `beta - mean * s`
with `s = gamma / sqrt(var + 1e-3)`, computed in float64) when it is built: the
same inference-mode function with one pass less over every activation. All
convs and the fc run at `Precision.HIGHEST`, so accelerators that would default
to TF32 / bf16 passes still compute float32 FID features.
"""

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.nn.frozen import Frozen

INPUT_SIZE = 299
POOL_DIM = 2048
NUM_CLASSES = 1008
BN_EPS = 1e-3
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"

_PRECISION = jax.lax.Precision.HIGHEST
_BN_KEYS = (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))
# Present in the standard state dicts but not part of the FID network.
_IGNORED_TORCH_SUFFIXES = (".num_batches_tracked",)
_IGNORED_TORCH_PREFIXES = ("AuxLogits.",)
_HOW_TO_MAKE = (
    f"The FID Inception needs {WEIGHTS_FILE} (pytorch-fid's FID weights; torch-fidelity's "
    "weights-inception-2015-12-05-6726825d.pth is the same state dict). Nothing is "
    "downloaded: fetch it once, then convert it on a machine with torch:\n"
    f"  python -m evals.convert_inception {WEIGHTS_FILE} inception_fid.npz\n"
    "and pass the .npz (or the .pth itself where torch is installed)."
)


class ConvSpec(NamedTuple):
    """One `BasicConv2d` (conv + BatchNorm + ReLU) of the network."""

    name: str
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: int = 1
    # Symmetric zero padding ((kh - 1) / 2, (kw - 1) / 2), i.e. torch "same" for
    # odd kernels at stride 1; False means no padding (torch padding=0).
    pad: bool = False


def _block_a(p: str, c_in: int, pool_features: int) -> list[ConvSpec]:
    return [
        ConvSpec(f"{p}.branch1x1", c_in, 64, (1, 1)),
        ConvSpec(f"{p}.branch5x5_1", c_in, 48, (1, 1)),
        ConvSpec(f"{p}.branch5x5_2", 48, 64, (5, 5), pad=True),
        ConvSpec(f"{p}.branch3x3dbl_1", c_in, 64, (1, 1)),
        ConvSpec(f"{p}.branch3x3dbl_2", 64, 96, (3, 3), pad=True),
        ConvSpec(f"{p}.branch3x3dbl_3", 96, 96, (3, 3), pad=True),
        ConvSpec(f"{p}.branch_pool", c_in, pool_features, (1, 1)),
    ]


def _block_b(p: str, c_in: int) -> list[ConvSpec]:
    return [
        ConvSpec(f"{p}.branch3x3", c_in, 384, (3, 3), stride=2),
        ConvSpec(f"{p}.branch3x3dbl_1", c_in, 64, (1, 1)),
        ConvSpec(f"{p}.branch3x3dbl_2", 64, 96, (3, 3), pad=True),
        ConvSpec(f"{p}.branch3x3dbl_3", 96, 96, (3, 3), stride=2),
    ]


def _block_c(p: str, c_in: int, c7: int) -> list[ConvSpec]:
    return [
        ConvSpec(f"{p}.branch1x1", c_in, 192, (1, 1)),
        ConvSpec(f"{p}.branch7x7_1", c_in, c7, (1, 1)),
        ConvSpec(f"{p}.branch7x7_2", c7, c7, (1, 7), pad=True),
        ConvSpec(f"{p}.branch7x7_3", c7, 192, (7, 1), pad=True),
        ConvSpec(f"{p}.branch7x7dbl_1", c_in, c7, (1, 1)),
        ConvSpec(f"{p}.branch7x7dbl_2", c7, c7, (7, 1), pad=True),
        ConvSpec(f"{p}.branch7x7dbl_3", c7, c7, (1, 7), pad=True),
        ConvSpec(f"{p}.branch7x7dbl_4", c7, c7, (7, 1), pad=True),
        ConvSpec(f"{p}.branch7x7dbl_5", c7, 192, (1, 7), pad=True),
        ConvSpec(f"{p}.branch_pool", c_in, 192, (1, 1)),
    ]


def _block_d(p: str, c_in: int) -> list[ConvSpec]:
    return [
        ConvSpec(f"{p}.branch3x3_1", c_in, 192, (1, 1)),
        ConvSpec(f"{p}.branch3x3_2", 192, 320, (3, 3), stride=2),
        ConvSpec(f"{p}.branch7x7x3_1", c_in, 192, (1, 1)),
        ConvSpec(f"{p}.branch7x7x3_2", 192, 192, (1, 7), pad=True),
        ConvSpec(f"{p}.branch7x7x3_3", 192, 192, (7, 1), pad=True),
        ConvSpec(f"{p}.branch7x7x3_4", 192, 192, (3, 3), stride=2),
    ]


def _block_e(p: str, c_in: int) -> list[ConvSpec]:
    return [
        ConvSpec(f"{p}.branch1x1", c_in, 320, (1, 1)),
        ConvSpec(f"{p}.branch3x3_1", c_in, 384, (1, 1)),
        ConvSpec(f"{p}.branch3x3_2a", 384, 384, (1, 3), pad=True),
        ConvSpec(f"{p}.branch3x3_2b", 384, 384, (3, 1), pad=True),
        ConvSpec(f"{p}.branch3x3dbl_1", c_in, 448, (1, 1)),
        ConvSpec(f"{p}.branch3x3dbl_2", 448, 384, (3, 3), pad=True),
        ConvSpec(f"{p}.branch3x3dbl_3a", 384, 384, (1, 3), pad=True),
        ConvSpec(f"{p}.branch3x3dbl_3b", 384, 384, (3, 1), pad=True),
        ConvSpec(f"{p}.branch_pool", c_in, 192, (1, 1)),
    ]


def inception_convs() -> tuple[ConvSpec, ...]:
    """Every conv of the FID InceptionV3 in network order (94 of them)."""
    return tuple(
        [
            ConvSpec("Conv2d_1a_3x3", 3, 32, (3, 3), stride=2),
            ConvSpec("Conv2d_2a_3x3", 32, 32, (3, 3)),
            ConvSpec("Conv2d_2b_3x3", 32, 64, (3, 3), pad=True),
            ConvSpec("Conv2d_3b_1x1", 64, 80, (1, 1)),
            ConvSpec("Conv2d_4a_3x3", 80, 192, (3, 3)),
            *_block_a("Mixed_5b", 192, 32),
            *_block_a("Mixed_5c", 256, 64),
            *_block_a("Mixed_5d", 288, 64),
            *_block_b("Mixed_6a", 288),
            *_block_c("Mixed_6b", 768, 128),
            *_block_c("Mixed_6c", 768, 160),
            *_block_c("Mixed_6d", 768, 160),
            *_block_c("Mixed_6e", 768, 192),
            *_block_d("Mixed_7a", 768),
            *_block_e("Mixed_7b", 1280),
            *_block_e("Mixed_7c", 2048),
        ]
    )


_CONVS = inception_convs()
_INDEX = {spec.name: i for i, spec in enumerate(_CONVS)}


def inception_npz_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of an Inception `.npz` and its shape, in network order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for s in _CONVS:
        shapes[f"{s.name}.conv.kernel"] = (*s.kernel, s.c_in, s.c_out)
        for key, _ in _BN_KEYS:
            shapes[f"{s.name}.bn.{key}"] = (s.c_out,)
    shapes["fc.kernel"] = (POOL_DIM, NUM_CLASSES)
    shapes["fc.bias"] = (NUM_CLASSES,)
    return shapes


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor or array-like as a float32 numpy array (torch is never imported)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


def convert_torch_state_dict(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Maps a torch FID-Inception state dict to the `.npz` arrays.

    Accepts the state dict of pytorch-fid's `FIDInceptionV3` / torch-fidelity's
    `FeatureExtractorInceptionV3` (tensors or arrays): `NAME.conv.weight`
    `[C_out, C_in, kh, kw]`, `NAME.bn.{weight, bias, running_mean, running_var}`,
    `fc.weight` `[1008, 2048]`, `fc.bias`. `num_batches_tracked` and `AuxLogits.*`
    entries are ignored.

    Raises:
      KeyError: a required key is missing, or a key belongs to no FID Inception.
    """
    expected = {f"{s.name}.conv.weight" for s in _CONVS}
    expected |= {f"{s.name}.bn.{src}" for s in _CONVS for _, src in _BN_KEYS}
    expected |= {"fc.weight", "fc.bias"}
    missing = sorted(expected - set(state))
    unknown = sorted(
        k
        for k in set(state) - expected
        if not k.endswith(_IGNORED_TORCH_SUFFIXES) and not k.startswith(_IGNORED_TORCH_PREFIXES)
    )
    if missing or unknown:
        raise KeyError(
            f"not a FID InceptionV3 state dict: missing keys {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected keys {unknown[:8]}"
            f"{'...' if len(unknown) > 8 else ''}"
        )
    out: dict[str, np.ndarray] = {}
    for s in _CONVS:
        out[f"{s.name}.conv.kernel"] = _to_numpy(state[f"{s.name}.conv.weight"]).transpose(
            2, 3, 1, 0
        )
        for key, src in _BN_KEYS:
            out[f"{s.name}.bn.{key}"] = _to_numpy(state[f"{s.name}.bn.{src}"])
    out["fc.kernel"] = _to_numpy(state["fc.weight"]).T
    out["fc.bias"] = _to_numpy(state["fc.bias"])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _validate(weights: Mapping[str, np.ndarray]) -> None:
    shapes = inception_npz_shapes()
    missing = [k for k in shapes if k not in weights]
    unexpected = sorted(set(weights) - set(shapes))
    if missing or unexpected:
        raise ValueError(
            f"bad Inception weights: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}"
            f", unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for key, shape in shapes.items():
        if tuple(weights[key].shape) != shape:
            raise ValueError(f"{key}: expected shape {list(shape)}, got {list(weights[key].shape)}")


def _tf1_bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices `lo`, `hi` and weights `frac` `[out_size]` of TF 1.x bilinear resizing.

    Computed in float32 exactly as torch-fidelity does (`arange * float32(in / out)`),
    so the sampling positions, and hence the resized pixels, are the same bits.
    """
    scale = np.float32(in_size / out_size)
    grid = np.arange(out_size, dtype=np.float32) * scale
    lo = grid.astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, grid - lo.astype(np.float32)


def resize_bilinear_tf1(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """TensorFlow 1.x bilinear resize (`align_corners=False`) of `[B, H, W, C]` floats.

    Returns `[B, size[0], size[1], C]`; interpolates along W, then along H, in
    the operation order of torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`.
    """
    _, h, w, _ = images.shape
    ylo, yhi, dy = _tf1_bilinear_taps(h, size[0])
    xlo, xhi, dx = _tf1_bilinear_taps(w, size[1])
    rows_lo, rows_hi = images[:, ylo], images[:, yhi]
    dx = jnp.asarray(dx)[None, None, :, None]
    dy = jnp.asarray(dy)[None, :, None, None]
    top = rows_lo[:, :, xlo] + (rows_lo[:, :, xhi] - rows_lo[:, :, xlo]) * dx
    bottom = rows_hi[:, :, xlo] + (rows_hi[:, :, xhi] - rows_hi[:, :, xlo]) * dx
    return top + (bottom - top) * dy


def _max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
    """3x3 max pool of `[B, H, W, C]`; padding (if any) never wins, as in torch."""
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), padding
    )


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool of `[B, H, W, C]`, padded by 1, padding not counted.

    This is torch's `avg_pool2d(..., padding=1, count_include_pad=False)`, the
    patch that makes the torch blocks agree with TensorFlow's average pool.
    """
    padding = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), padding)
    count_h = np.convolve(np.ones(x.shape[1]), np.ones(3), "same")
    count_w = np.convolve(np.ones(x.shape[2]), np.ones(3), "same")
    counts = np.outer(count_h, count_w).astype(np.float32)[None, :, :, None]
    return total / counts


class InceptionFeatures(NamedTuple):
    """Outputs of `InceptionV3`, float32."""

    pool: jax.Array  # [B, 2048] FID features
    logits_unbiased: jax.Array  # [B, 1008] pool @ fc.kernel, the IS logits
    logits: jax.Array  # [B, 1008] logits_unbiased + fc.bias


class InceptionV3(nnx.Module):
    """The FID InceptionV3 with frozen weights; see the module docstring."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        """Builds the network from arrays in the `.npz` layout (BatchNorm folded here).

        Raises:
          ValueError: a key is missing or unexpected, or an array has the wrong shape.
        """
        _validate(weights)
        kernels, biases = [], []
        for s in _CONVS:
            gamma, beta, mean, var = (
                np.asarray(weights[f"{s.name}.bn.{key}"], np.float64) for key, _ in _BN_KEYS
            )
            scale = gamma / np.sqrt(var + BN_EPS)
            kernel = np.asarray(weights[f"{s.name}.conv.kernel"], np.float64) * scale
            kernels.append(Frozen(jnp.asarray(kernel, jnp.float32)))
            biases.append(Frozen(jnp.asarray(beta - mean * scale, jnp.float32)))
        self.kernels = nnx.List(kernels)
        self.biases = nnx.List(biases)
        self.fc_kernel = Frozen(jnp.asarray(weights["fc.kernel"], jnp.float32))
        self.fc_bias = Frozen(jnp.asarray(weights["fc.bias"], jnp.float32))

    def _conv(self, x: jax.Array, name: str) -> jax.Array:
        """`BasicConv2d` NAME: conv with folded BatchNorm, then ReLU, on `[B, H, W, C]`."""
        i = _INDEX[name]
        spec = _CONVS[i]
        kh, kw = spec.kernel
        ph, pw = ((kh - 1) // 2, (kw - 1) // 2) if spec.pad else (0, 0)
        y = jax.lax.conv_general_dilated(
            x,
            jax.lax.stop_gradient(self.kernels[i][...]),
            (spec.stride, spec.stride),
            ((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=_PRECISION,
        )
        return jax.nn.relu(y + jax.lax.stop_gradient(self.biases[i][...]))

    def _block_a(self, x: jax.Array, p: str) -> jax.Array:
        b1 = self._conv(x, f"{p}.branch1x1")
        b5 = self._conv(self._conv(x, f"{p}.branch5x5_1"), f"{p}.branch5x5_2")
        b3 = self._conv(x, f"{p}.branch3x3dbl_1")
        b3 = self._conv(self._conv(b3, f"{p}.branch3x3dbl_2"), f"{p}.branch3x3dbl_3")
        bp = self._conv(_avg_pool_exclude_pad(x), f"{p}.branch_pool")
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)

    def _block_b(self, x: jax.Array, p: str) -> jax.Array:
        b3 = self._conv(x, f"{p}.branch3x3")
        bd = self._conv(x, f"{p}.branch3x3dbl_1")
        bd = self._conv(self._conv(bd, f"{p}.branch3x3dbl_2"), f"{p}.branch3x3dbl_3")
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)

    def _block_c(self, x: jax.Array, p: str) -> jax.Array:
        b1 = self._conv(x, f"{p}.branch1x1")
        b7 = x
        for k in (1, 2, 3):
            b7 = self._conv(b7, f"{p}.branch7x7_{k}")
        bd = x
        for k in (1, 2, 3, 4, 5):
            bd = self._conv(bd, f"{p}.branch7x7dbl_{k}")
        bp = self._conv(_avg_pool_exclude_pad(x), f"{p}.branch_pool")
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)

    def _block_d(self, x: jax.Array, p: str) -> jax.Array:
        b3 = self._conv(self._conv(x, f"{p}.branch3x3_1"), f"{p}.branch3x3_2")
        b7 = x
        for k in (1, 2, 3, 4):
            b7 = self._conv(b7, f"{p}.branch7x7x3_{k}")
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)

    def _block_e(self, x: jax.Array, p: str, max_pool: bool) -> jax.Array:
        b1 = self._conv(x, f"{p}.branch1x1")
        b3 = self._conv(x, f"{p}.branch3x3_1")
        b3 = [self._conv(b3, f"{p}.branch3x3_2a"), self._conv(b3, f"{p}.branch3x3_2b")]
        bd = self._conv(self._conv(x, f"{p}.branch3x3dbl_1"), f"{p}.branch3x3dbl_2")
        bd = [self._conv(bd, f"{p}.branch3x3dbl_3a"), self._conv(bd, f"{p}.branch3x3dbl_3b")]
        # E_2 (Mixed_7c) max-pools here: a quirk of the TF graph the FID numbers come from.
        pooled = _max_pool(x, 1, pad=1) if max_pool else _avg_pool_exclude_pad(x)
        bp = self._conv(pooled, f"{p}.branch_pool")
        return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)

    def __call__(self, images: jax.Array) -> InceptionFeatures:
        """FID features and IS logits of `images`.

        Args:
          images: `[B, H, W, 3]` on the 0-255 scale (uint8, or floats holding
            integer values as a saved 8-bit image would), any H and W.

        Returns:
          `InceptionFeatures`: `pool` `[B, 2048]`, `logits_unbiased` and
          `logits` `[B, 1008]`, float32, never differentiated into the weights.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images [B, H, W, 3], got shape {images.shape}")
        x = resize_bilinear_tf1(images.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE))
        x = (x - 128.0) / 128.0
        x = self._conv(x, "Conv2d_1a_3x3")  # [B, 149, 149, 32]
        x = self._conv(x, "Conv2d_2a_3x3")  # [B, 147, 147, 32]
        x = self._conv(x, "Conv2d_2b_3x3")  # [B, 147, 147, 64]
        x = _max_pool(x, 2)  # [B, 73, 73, 64]
        x = self._conv(x, "Conv2d_3b_1x1")  # [B, 73, 73, 80]
        x = self._conv(x, "Conv2d_4a_3x3")  # [B, 71, 71, 192]
        x = _max_pool(x, 2)  # [B, 35, 35, 192]
        for p in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = self._block_a(x, p)  # [B, 35, 35, 256 | 288 | 288]
        x = self._block_b(x, "Mixed_6a")  # [B, 17, 17, 768]
        for p in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = self._block_c(x, p)  # [B, 17, 17, 768]
        x = self._block_d(x, "Mixed_7a")  # [B, 8, 8, 1280]
        x = self._block_e(x, "Mixed_7b", max_pool=False)  # [B, 8, 8, 2048]
        x = self._block_e(x, "Mixed_7c", max_pool=True)  # [B, 8, 8, 2048]
        pool = jnp.mean(x, axis=(1, 2))
        fc_kernel = jax.lax.stop_gradient(self.fc_kernel[...])
        logits_unbiased = jnp.dot(pool, fc_kernel, precision=_PRECISION)
        logits = logits_unbiased + jax.lax.stop_gradient(self.fc_bias[...])
        return InceptionFeatures(pool, logits_unbiased, logits)


def load_inception_weights(path: str) -> dict[str, np.ndarray]:
    """The `.npz`-layout arrays of a local `.npz`, or of a `.pth` (needs torch).

    Raises:
      FileNotFoundError: naming the file that is needed and how to convert it.
      ImportError: a `.pth` was given but torch is not installed.
      ValueError: the file extension is neither `.npz` nor `.pth`/`.pt`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID Inception weights not found: {path!r}. {_HOW_TO_MAKE}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        # allow_pickle=False (the default) so a weights file can never run code.
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if ext in (".pth", ".pt"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"reading {path!r} needs torch, which evaluation does not otherwise use. "
                f"Convert it once where torch is installed:\n"
                f"  python -m evals.convert_inception {path} inception_fid.npz"
            ) from e
        return convert_torch_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    raise ValueError(f"Inception weights must be a .npz or a .pth file, got {path!r}")


def load_inception(path: str) -> InceptionV3:
    """Builds the FID `InceptionV3` from a local `.npz` (or `.pth`, with torch)."""
    return InceptionV3(load_inception_weights(path))
