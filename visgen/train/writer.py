"""Metric and image writing: always a JSONL log and PNG files, and TensorBoard event files.

TensorBoard events (`<workdir>/tensorboard/`, for `tensorboard --logdir
WORKDIR`) are written by `tensorboardX`, which needs only protobuf, not
TensorFlow. It is imported lazily, when a training run opens its writer, and
skipped with one line saying so if it is missing.
"""

import json
import os

import numpy as np
from PIL import Image


def image_grid(rows: np.ndarray, pad: int = 1) -> np.ndarray:
    """`[R, N, H, W, C]` uint8 -> one `[R*(H+pad)+pad, N*(W+pad)+pad, C]` grid."""
    r, n, h, w, c = rows.shape
    grid = np.full((r * (h + pad) + pad, n * (w + pad) + pad, c), 255, np.uint8)
    for i in range(r):
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = rows[i, j]
    return grid


def save_png(path: str, image: np.ndarray, upscale: int = 1) -> None:
    """Writes a uint8 `[H, W, 3]` image, nearest-upscaled for small images."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = Image.fromarray(image)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    img.save(path)


class MetricWriter:
    """Writes scalars to `<workdir>/metrics.jsonl` (+ TensorBoard) and images as PNG."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, is_main: bool = True):
        self.workdir = workdir
        self.is_main = is_main
        jsonl = os.path.join(workdir, "metrics.jsonl")
        self._jsonl = open(jsonl, "a") if is_main else None  # noqa: SIM115 (closed in close())
        self._tb = None
        if tensorboard and is_main:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                print("TensorBoard logging off (needs tensorboardX); metrics go to metrics.jsonl")

    def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        if not self.is_main:
            return
        scalars = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, step)
            self._tb.flush()

    def write_image(self, step: int, name: str, image: np.ndarray) -> str:
        """Saves `image` (uint8 `[H, W, 3]`) as `<workdir>/images/<name>_<step>.png`."""
        path = os.path.join(self.workdir, "images", f"{name}_{step:07d}.png")
        if self.is_main:
            save_png(path, image, upscale=max(1, 256 // image.shape[1]))
            if self._tb is not None:
                self._tb.add_image(name, image, step, dataformats="HWC")
                self._tb.flush()
        return path

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
