"""Rank-generic patchify / unpatchify for images and videos.

A ViT splits an image `[B, H, W, C]` into non-overlapping `p x p` patches, and a
video ViT splits `[B, T, H, W, C]` into `pt x p x p` tubelets (ViViT, Arnab et
al. 2021). Both are the same reshape/transpose over any number of spatial axes,
so one pair of functions serves every tokenizer and a tokenizer supports video
by config rather than by fork.

Within a patch the features are ordered `(*patch, C)`, i.e. the row-major
flattening of a `[*patch, C]` block; a linear layer on these features is
exactly a convolution with kernel = stride = patch.
"""

import math

import jax


def grid_shape(spatial: tuple[int, ...], patch: tuple[int, ...]) -> tuple[int, ...]:
    """Patch grid `(S_0 / p_0, ..., S_n / p_n)`; a clear error when not divisible."""
    if len(spatial) != len(patch):
        raise ValueError(
            f"patch {patch} has {len(patch)} axes but the input has {len(spatial)} "
            f"spatial axes {spatial}"
        )
    bad = [(s, p) for s, p in zip(spatial, patch, strict=True) if p <= 0 or s % p]
    if bad:
        raise ValueError(f"spatial shape {spatial} is not divisible by patch {patch}")
    return tuple(s // p for s, p in zip(spatial, patch, strict=True))


def patchify(x: jax.Array, patch: tuple[int, ...]) -> jax.Array:
    """`[B, *S, C]` -> `[B, N, prod(patch) * C]` with `N = prod(S / patch)`.

    Images: `S = (H, W)`, `patch = (p, p)`. Videos: `S = (T, H, W)`,
    `patch = (pt, p, p)`. Patches are ordered row-major over the grid.
    """
    b, *spatial, c = x.shape
    grid = grid_shape(tuple(spatial), tuple(patch))
    n = len(grid)
    # [B, g0, p0, g1, p1, ..., C] -> [B, g0, g1, ..., p0, p1, ..., C]
    split = [b] + [d for g, p in zip(grid, patch, strict=True) for d in (g, p)] + [c]
    x = x.reshape(split)
    perm = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    x = x.transpose(perm)
    return x.reshape(b, math.prod(grid), math.prod(patch) * c)


def unpatchify(
    tokens: jax.Array, grid: tuple[int, ...], patch: tuple[int, ...], channels: int
) -> jax.Array:
    """Inverse of `patchify`: `[B, N, prod(patch) * C]` -> `[B, *(grid * patch), C]`."""
    b, num, dim = tokens.shape
    if len(grid) != len(patch):
        raise ValueError(f"grid {grid} and patch {patch} have different ranks")
    if num != math.prod(grid) or dim != math.prod(patch) * channels:
        raise ValueError(
            f"tokens {tokens.shape} do not match grid {grid}, patch {patch} and "
            f"{channels} channels (expected [B, {math.prod(grid)}, "
            f"{math.prod(patch) * channels}])"
        )
    n = len(grid)
    x = tokens.reshape(b, *grid, *patch, channels)
    # [B, g0, g1, ..., p0, p1, ..., C] -> [B, g0, p0, g1, p1, ..., C]
    perm = [0] + [a for i in range(n) for a in (1 + i, 1 + n + i)] + [2 * n + 1]
    x = x.transpose(perm)
    return x.reshape(b, *(g * p for g, p in zip(grid, patch, strict=True)), channels)
