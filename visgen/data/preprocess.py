"""Numpy preprocessing of records into model inputs, and back to uint8.

Models take images `[H, W, 3]` / videos `[T, H, W, 3]` as float32 in [-1, 1].
Everything here works on one example (the pipeline batches afterwards) and
is deterministic given its arguments: the caller decides whether to flip and
passes a seeded `np.random.Generator` for a random clip start, so a pipeline
that seeds per example is a pure function of its seed. A flip also mirrors
the caption (`mirror_caption`), since left and right trade places.
"""

import re

import numpy as np
from PIL import Image


def _check_channels(pixels: np.ndarray, what: str) -> None:
    if pixels.shape[-1] not in (1, 3):
        raise ValueError(
            f"{what} must have 1 (grayscale) or 3 (RGB) channels in its last axis, "
            f"got shape {pixels.shape}"
        )


def resize_and_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side to `size` (bicubic, antialiased) and centre-crops.

    Args:
      image: uint8 [H, W, C], C in {1, 3}.
    Returns:
      uint8 [size, size, C]; the input itself when it already has that size.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an image [H, W, C], got shape {image.shape}")
    _check_channels(image, "an image")
    height, width, channels = image.shape
    if height == width == size:
        return image
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    # PIL widens the bicubic kernel when shrinking, which is what antialiases.
    resized = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    cropped = resized[top : top + size, left : left + size]
    return cropped[..., None] if channels == 1 else cropped


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """[..., 1] grayscale -> [..., 3]; [..., 3] passes through unchanged."""
    _check_channels(pixels, "pixels")
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def flip_left_right(pixels: np.ndarray) -> np.ndarray:
    """Mirrors `[..., H, W, C]` along W (every frame of a video alike)."""
    return pixels[..., ::-1, :]


def mirror_caption(caption: str) -> str:
    """Swaps the words left and right, so a caption still fits a mirrored image."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    return re.sub(r"\b(left|right|Left|Right)\b", lambda m: swap[m.group(0)], caption)


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] -> float32 in [-1, 1]."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    return pixels.astype(np.float32) * (2 / 255) - 1


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> uint8 in [0, 255] (clipped, rounded), for saving images."""
    return np.clip(np.round((np.asarray(x, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def select_clip(
    video: np.ndarray,
    num_frames: int,
    frame_stride: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Takes `num_frames` frames `frame_stride` apart from video [T, H, W, C].

    The clip starts at a random frame when `rng` is given (training), else at
    frame 0 (evaluation).
    """
    if video.ndim != 4:
        raise ValueError(f"expected a video [T, H, W, C], got shape {video.shape}")
    span = (num_frames - 1) * frame_stride + 1
    if num_frames < 1 or frame_stride < 1 or span > video.shape[0]:
        raise ValueError(
            f"cannot take {num_frames} frames with stride {frame_stride} (a span of {span}) "
            f"from a video of {video.shape[0]} frames"
        )
    start = int(rng.integers(video.shape[0] - span + 1)) if rng is not None else 0
    return video[start : start + span : frame_stride]


def preprocess_image(image: np.ndarray, image_size: int, flip: bool = False) -> np.ndarray:
    """uint8 [H, W, C] -> float32 [S, S, 3] in [-1, 1], mirrored if `flip`."""
    image = resize_and_crop(image, image_size)
    return to_float(to_rgb(flip_left_right(image) if flip else image))


def preprocess_video(
    video: np.ndarray,
    image_size: int,
    num_frames: int,
    frame_stride: int = 1,
    rng: np.random.Generator | None = None,
    flip: bool = False,
) -> np.ndarray:
    """uint8 [T, H, W, C] -> float32 [num_frames, S, S, 3] in [-1, 1].

    The clip starts at a random frame when `rng` is given (training), else at
    frame 0; `flip` mirrors every frame alike.
    """
    clip = select_clip(video, num_frames, frame_stride, rng)
    clip = np.stack([resize_and_crop(frame, image_size) for frame in clip])
    return to_float(to_rgb(flip_left_right(clip) if flip else clip))
