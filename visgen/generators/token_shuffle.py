"""Token-Shuffle's input side: fuse each `s x s` window of grid tokens into one step.

Ma et al. 2025, "Token-Shuffle: Towards High-Resolution Image Generation with
Autoregressive Models" (arXiv 2504.17789; no official code). An AR transformer
over an `(h, w)` grid of tokens runs over the `(h/s, w/s)` grid of windows
instead, `s^2` times fewer positions, and predicts the `s^2` tokens of the
next window in one step:

- token-shuffle (input side, `TokenShuffle`, in `WindowSteps`): a shared MLP
  compresses each token embedding `D -> D/s^2`, the `s^2` tokens of a window
  are concatenated along channels (space-to-depth) into one token of width
  `D`, then residual MLP blocks (2 in the paper) mix them;
- token-unshuffle (output side, `TokenUnshuffle`, used by
  `visgen.generators.window_head.WindowHead`): residual MLP blocks, a split
  (depth-to-space) into `s^2` vectors of width `D/s^2`, and an MLP back to
  `D` per vector. The head and the `token_shuffle` registry entry live there.

Order: windows are in raster order of the fused grid, and a window's `s^2`
tokens in raster order within it (`shuffle` / `unshuffle`). For a video
`(t, h, w)` layout the window is spatial, within a frame: fused layout
`(t, h/s, w/s)`.

Choices the paper leaves open, made here: every MLP is `Linear -> GELU(tanh)
-> Linear` with biases and hidden width `D` (the larger side); a residual
block is `x + MLP(RMSNorm(x))` with its last layer zero-initialised, so it
starts as the identity; the other MLPs use LeCun-normal init (variance
preserving). The paper's z-loss (used at 2048 px) is not implemented.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.nn.llama import RMSNorm


def fused_layout(layout: tuple[int, ...], window: int) -> tuple[int, ...]:
    """The layout of the fused positions: `(h/s, w/s)` or `(t, h/s, w/s)`.

    Raises a ValueError naming the layout and window when `window` does not
    divide both spatial sizes, or when a window > 1 meets a 1D layout.
    """
    layout = tuple(int(n) for n in layout)
    if window < 1:
        raise ValueError(f"the Token-Shuffle window must be >= 1, got {window}")
    if window == 1:
        return layout
    if len(layout) < 2:
        raise ValueError(
            f"token shuffling needs a 2D (h, w) or 3D (t, h, w) token grid; layout {layout} "
            f"is 1D, so a Token-Shuffle window of {window} does not apply"
        )
    h, w = layout[-2:]
    if h % window or w % window:
        raise ValueError(
            f"the Token-Shuffle window {window} does not divide the token grid {h} x {w} of layout "
            f"{layout}: the window must divide both spatial sizes"
        )
    return (*layout[:-2], h // window, w // window)


def _split_shape(layout: tuple[int, ...], window: int) -> tuple[int, ...]:
    """`(*lead, h/s, s, w/s, s)`: the raster axes with each spatial axis split by the window."""
    *lead, h, w = layout
    return (*lead, h // window, window, w // window, window)


def shuffle(x: jax.Array, layout: tuple[int, ...], window: int) -> jax.Array:
    """Raster order to windows: `[B, N, *C]` -> `[B, N/s^2, s^2, *C]`.

    Row `j` holds window `j` of the fused grid (raster order), its `s^2`
    entries in raster order within the window. Works for token ids (`C = ()`)
    and embeddings or logits (`C = (D,)`). `window = 1` adds a unit axis.
    """
    fused = fused_layout(layout, window)
    b, channels = x.shape[0], x.shape[2:]
    k = len(layout) - 2  # leading (time) axes
    x = x.reshape(b, *_split_shape(layout, window), *channels)
    # [B, *lead, h/s, s, w/s, s, *C] -> [B, *lead, h/s, w/s, s, s, *C]
    x = jnp.swapaxes(x, k + 2, k + 3)
    return x.reshape(b, math.prod(fused), window * window, *channels)


def unshuffle(x: jax.Array, layout: tuple[int, ...], window: int) -> jax.Array:
    """Windows to raster order, the inverse of `shuffle`: `[B, N/s^2, s^2, *C]` -> `[B, N, *C]`."""
    fused = fused_layout(layout, window)
    b, channels = x.shape[0], x.shape[3:]
    if x.shape[1:3] != (math.prod(fused), window * window):
        raise ValueError(
            f"expected [B, {math.prod(fused)}, {window * window}, ...] windows of layout "
            f"{layout}, got {tuple(x.shape)}"
        )
    k = len(layout) - 2
    x = x.reshape(b, *fused[:-2], fused[-2], fused[-1], window, window, *channels)
    x = jnp.swapaxes(x, k + 2, k + 3)
    return x.reshape(b, math.prod(layout), *channels)


class MLP(nnx.Module):
    """`Linear -> GELU(tanh) -> Linear`: `[..., d_in]` -> `[..., d_out]` float32."""

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        d_out: int,
        *,
        zero_out: bool = False,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.fc1 = nnx.Linear(d_in, d_hidden, dtype=dtype, rngs=rngs)
        out_init = nnx.initializers.zeros_init() if zero_out else nnx.initializers.lecun_normal()
        self.fc2 = nnx.Linear(d_hidden, d_out, kernel_init=out_init, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.fc1(x.astype(self.dtype)), approximate=True)
        return self.fc2(h).astype(jnp.float32)


class ResidualMLP(nnx.Module):
    """`x + MLP(RMSNorm(x))`, identity at init: `[..., D]` -> `[..., D]` float32."""

    def __init__(self, width: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.norm = RMSNorm(width)
        self.mlp = MLP(width, width, width, zero_out=True, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.astype(jnp.float32) + self.mlp(self.norm(x))


def _blocks(width: int, count: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([ResidualMLP(width, dtype=dtype, rngs=rngs) for _ in range(count)])


def _part(width: int, window: int) -> int:
    """`D / s^2`, the width of one token inside a fused position."""
    if width % (window * window):
        raise ValueError(
            f"width {width} is not divisible by window^2 = {window * window}: each "
            "token of a window gets width / s^2 channels of the fused position"
        )
    return width // (window * window)


class TokenShuffle(nnx.Module):
    """Token-shuffle: window embeddings `[B, M, s^2, D]` -> fused tokens `[B, M, D]` float32."""

    def __init__(self, width: int, window: int, *, blocks: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.window = window
        self.compress = MLP(width, width, _part(width, window), dtype=dtype, rngs=rngs)
        self.blocks = _blocks(width, blocks, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, m, _, d = x.shape
        x = self.compress(x).reshape(b, m, d)  # concatenation along channels
        for block in self.blocks:
            x = block(x)
        return x


class TokenUnshuffle(nnx.Module):
    """Token-unshuffle: fused hidden states `[B, M, D]` -> per-token states `[B, M, s^2, D]`."""

    def __init__(self, width: int, window: int, *, blocks: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.window = window
        self.blocks = _blocks(width, blocks, dtype, rngs)
        self.expand = MLP(_part(width, window), width, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        b, m, _ = x.shape
        return self.expand(x.reshape(b, m, self.window * self.window, -1))


class WindowSteps(nnx.Module):
    """Token-Shuffle's step embedding: a step is one `s x s` window of `g = s^2` tokens.

    Steps `[B, m, s^2]` (ids) -> per-token embeddings -> `TokenShuffle` ->
    `[B, m, D]`; `step_layout` is the fused grid.
    """

    def __init__(
        self,
        layout: tuple[int, ...],
        window: int,
        token_embed: nnx.Module,
        width: int,
        *,
        blocks: int,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.layout = tuple(int(n) for n in layout)
        self.window = window
        self.step_layout = fused_layout(self.layout, window)
        self.tokens_per_step = window * window
        self.token_embed = token_embed
        self.fuse = TokenShuffle(width, window, blocks=blocks, dtype=dtype, rngs=rngs)

    def to_steps(self, tokens: jax.Array) -> jax.Array:
        """Raster `[B, N, ...]` -> windows `[B, M, s^2, ...]` (`shuffle`)."""
        return shuffle(tokens, self.layout, self.window)

    def from_steps(self, steps: jax.Array) -> jax.Array:
        """Windows `[B, M, s^2, ...]` -> raster `[B, N, ...]` (`unshuffle`)."""
        return unshuffle(steps, self.layout, self.window)

    def __call__(self, steps: jax.Array) -> jax.Array:
        return self.fuse(self.token_embed(steps))
