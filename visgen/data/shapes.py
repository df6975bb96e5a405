"""Procedural coloured shapes: images and bouncing-shape videos with captions.

Pure numpy/PIL, so the embedded `shapes` and `shapes_video` datasets can be
generated anywhere in seconds with no download. Each scene holds 1 to 3 filled
shapes, each in its own cell of a 3x3 grid (so the position words in the
caption are true), on a background colour that no shape uses.

The *main* shape is the first one in the caption; shape sizes are sorted so it
is also the largest (ties keep caption order). It is drawn last, on top, and
its kind is the class label.

Shapes are drawn on a canvas 2-4x larger than the output and box-downsampled,
which anti-aliases edges so 32 px images look clean and 256 px ones stay sharp.
"""

import dataclasses
import math
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPE_KINDS = ("circle", "square", "triangle", "diamond", "cross")

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 220),
}

BACKGROUNDS = {"black": (10, 10, 10), "grey": (128, 128, 128), "white": (245, 245, 245)}

# Half-extent of a shape as a fraction of the image side; "large" still fits
# inside a grid cell, whose half-side is 1/6.
SIZES = {"small": 0.09, "medium": 0.12, "large": 0.155}

# Caption phrase for each cell of the 3x3 grid, indexed [row][column].
POSITIONS = (
    ("at the top left", "at the top", "at the top right"),
    ("on the left", "in the centre", "on the right"),
    ("at the bottom left", "at the bottom", "at the bottom right"),
)

# Unit steps of the 8 compass directions (image y grows downwards) and how
# the caption names them.
DIRECTIONS = {
    (1, 0): "right",
    (-1, 0): "left",
    (0, -1): "up",
    (0, 1): "down",
    (1, -1): "up and right",
    (-1, -1): "up and left",
    (1, 1): "down and right",
    (-1, 1): "down and left",
}


_COLOUR_NAMES = tuple(COLOURS)
_SIZE_NAMES = tuple(SIZES)
_DIRECTION_STEPS = tuple(DIRECTIONS)


def _outline(kind: str) -> tuple[tuple[float, float], ...]:
    """Polygon vertices (x, y) of a shape of half-extent 1 centred at 0.

    Every outline fits in [-1, 1]^2, as a circle of radius 1 does.
    """
    if kind == "square":
        return ((-0.9, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9))
    if kind == "triangle":
        # Equilateral, pointing up, centroid at the centre.
        angles = [math.radians(a) for a in (-90.0, 30.0, 150.0)]
        return tuple((math.cos(a), math.sin(a)) for a in angles)
    if kind == "diamond":
        return ((0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0))
    if kind == "cross":
        w = 0.35
        return ((-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
                (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w))  # fmt: skip
    raise ValueError(f"unknown polygon kind {kind!r}")


# Plain tuples: numpy's per-call overhead exceeds the work for a dozen vertices.
_OUTLINES = {kind: _outline(kind) for kind in SHAPE_KINDS if kind != "circle"}


@dataclasses.dataclass
class _Shape:
    kind: str
    colour: str
    size: str
    cell: tuple[int, int]  # (row, column) in the 3x3 grid at the first frame
    centre: list[float]  # [x, y] in units of the image side
    velocity: list[float]  # [dx, dy] per frame, in units of the image side
    direction: tuple[int, int]

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    def phrase(self, with_motion: bool) -> str:
        text = f"a {self.size} {self.colour} {self.kind} {POSITIONS[self.cell[0]][self.cell[1]]}"
        return f"{text} moving {DIRECTIONS[self.direction]}" if with_motion else text


def _sample_scene(rng: np.random.Generator) -> tuple[list[_Shape], str]:
    # Python's `random` draws a scalar ~10x faster than numpy, which matters
    # at ~20k scenes a build; seeding it from `rng` keeps `rng` the one source.
    draw = random.Random(int(rng.integers(2**63)))
    count = draw.randint(1, 3)
    cells = draw.sample(range(9), count)
    colours = draw.sample(_COLOUR_NAMES, count)
    # Descending sizes make the first (main) shape also the largest.
    sizes = sorted((draw.randrange(len(SIZES)) for _ in range(count)), reverse=True)
    shapes = []
    for cell, colour, size in zip(cells, colours, sizes, strict=True):
        row, col = divmod(cell, 3)
        # Jitter the centre only as far as keeps the shape inside its cell.
        slack = 1 / 6 - SIZES[_SIZE_NAMES[size]]
        dx, dy = direction = draw.choice(_DIRECTION_STEPS)
        speed = draw.uniform(0.03, 0.06) / math.hypot(dx, dy)
        shapes.append(
            _Shape(
                kind=draw.choice(SHAPE_KINDS),
                colour=colour,
                size=_SIZE_NAMES[size],
                cell=(row, col),
                centre=[(col + 0.5) / 3 + draw.uniform(-slack, slack),
                        (row + 0.5) / 3 + draw.uniform(-slack, slack)],
                velocity=[dx * speed, dy * speed],
                direction=direction,
            )
        )  # fmt: skip
    return shapes, draw.choice(tuple(BACKGROUNDS))


def _render(shapes: list[_Shape], background: str, resolution: int) -> np.ndarray:
    """Draws `shapes` (main one on top) and returns uint8 [H, W, 3]."""
    factor = max(2, min(4, 512 // resolution))
    side = resolution * factor
    canvas = Image.new("RGB", (side, side), BACKGROUNDS[background])
    draw = ImageDraw.Draw(canvas)
    for shape in reversed(shapes):
        (cx, cy), r = (c * side for c in shape.centre), shape.radius * side
        colour = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon([(cx + x * r, cy + y * r) for x, y in _OUTLINES[shape.kind]], fill=colour)
    # Box-averaging factor x factor blocks is the anti-aliasing.
    return np.asarray(canvas.reduce(factor))


def _caption(shapes: list[_Shape], background: str, with_motion: bool) -> str:
    phrases = [shape.phrase(with_motion) for shape in shapes]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{listed}, on a {background} background"


def _check_resolution(resolution: int) -> None:
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8 pixels, got {resolution}")


def draw_shapes_image(rng: np.random.Generator, resolution: int) -> tuple[np.ndarray, int, str]:
    """Draws one random scene.

    Returns:
      image: uint8 [H, W, 3] with H = W = `resolution`.
      label: index in `SHAPE_KINDS` of the main (first, largest) shape.
      caption: e.g. "a large blue square in the centre and a small red circle
        at the top left, on a black background".
    """
    _check_resolution(resolution)
    shapes, background = _sample_scene(rng)
    image = _render(shapes, background, resolution)
    return image, SHAPE_KINDS.index(shapes[0].kind), _caption(shapes, background, False)


def draw_shapes_video(
    rng: np.random.Generator, resolution: int, num_frames: int
) -> tuple[np.ndarray, int, str]:
    """Draws one random scene whose shapes move and bounce off the borders.

    Each shape moves with a constant speed in one of 8 compass directions and
    is reflected where it would cross a border. The caption names each
    shape's starting cell and initial direction.

    Returns:
      video: uint8 [T, H, W, 3] with T = `num_frames`, H = W = `resolution`.
      label: index in `SHAPE_KINDS` of the main (first, largest) shape.
      caption: e.g. "a small red circle at the top left moving down and right,
        on a grey background".
    """
    _check_resolution(resolution)
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    shapes, background = _sample_scene(rng)
    caption = _caption(shapes, background, True)
    frames = []
    for _ in range(num_frames):
        frames.append(_render(shapes, background, resolution))
        for shape in shapes:
            _step(shape)
    return np.stack(frames), SHAPE_KINDS.index(shapes[0].kind), caption


def _step(shape: _Shape) -> None:
    """Advances `shape` one frame, reflecting off the borders of [0, 1]^2."""
    low, high = shape.radius, 1.0 - shape.radius
    for axis in range(2):
        position = shape.centre[axis] + shape.velocity[axis]
        if position < low or position > high:
            position = 2 * (low if position < low else high) - position
            shape.velocity[axis] *= -1
        shape.centre[axis] = position
