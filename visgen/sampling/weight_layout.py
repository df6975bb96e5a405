"""Decode-loop weights stored `[N, K]` on CPU, read as the dots' left operand: faster streaming.

`nnx.Linear` keeps its kernel `[K, N]` (inputs x outputs). A decode step
multiplies a handful of rows by every kernel, so it is bound by reading the
weights. XLA CPU's dot kernels stream a kernel much faster at these row
counts when it is stored `[N, K]` (torch's `nn.Linear` layout) and is the
dot's left operand, `w_t [N, K] . x [M, K] -> [N, M]` (measured with
`python -m bench.bench_decode_matmul`, rows `stream_wt`, and on GPT-B's decode
loop: docs/notes/2026-11-26-weights-first-dots-growing-cache.md).

`loop_model(graphdef, state)` is called once, outside the loop: it
materialises the transposed copies (behind an optimisation barrier, so no
simplification may merge the two transposes) and returns `get()`, which a
loop body calls to rebuild the module with every large `nnx.Linear`
computing through `weights_first_dot`; there `w_t.T.T` folds away, so the
dot reads the `[N, K]` copy as stored. A second barrier on the small
`[N, M]` result keeps XLA from folding the transpose back into the dot,
which would swap the operands again. Checkpoints and parameters keep their
layout; the copy lives only inside the jitted sampler (on a CPU: one extra
copy of the large kernels while it runs). Accelerators never make it.
"""

from collections.abc import Callable

import jax
from flax import nnx

# Kernels with at least this many values are streamed transposed; smaller ones are
# cache resident and gain nothing.
MIN_SIZE = 2**16


def transposed_decode_weights() -> bool:
    """Whether decode loops on this backend read large kernels `[N, K]`."""
    return jax.default_backend() == "cpu"


def _is_large(kernel: jax.Array) -> bool:
    return kernel.ndim == 2 and kernel.size >= MIN_SIZE


def _is_large_kernel(path, x: jax.Array) -> bool:
    return "kernel" in [getattr(k, "key", None) for k in path] and _is_large(x)


def to_rows_layout(state: nnx.State) -> nnx.State:
    """Large kernels `[K, N]` -> materialised `[N, K]` copies; other leaves as they are."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jax.lax.optimization_barrier(x.T) if _is_large_kernel(p, x) else x, state
    )


def from_rows_layout(rows: nnx.State, like: nnx.State) -> nnx.State:
    """The inverse of `to_rows_layout` (`like`: the original state, for the paths)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, t, x: t.T if _is_large_kernel(p, x) else t, rows, like
    )


def weights_first_dot(x, kernel, dimension_numbers, precision=None, **kwargs) -> jax.Array:
    """`nnx.Linear`'s `x @ kernel` computed as `(kernel.T @ x.T).T`: the `[N, K]` weights
    are the dot's left operand (`x [..., K]`, `kernel [K, N]` -> `[..., N]`).

    Inside a decode loop `kernel` is `w_t.T` with `w_t` the `[N, K]` copy, so the dot
    reads `w_t` as stored; only the small `[N, M]` result is transposed back."""
    if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())):
        return jax.lax.dot_general(x, kernel, dimension_numbers, precision, **kwargs)
    rows = x.reshape(-1, x.shape[-1])
    y = jax.lax.dot_general(kernel.T, rows, (((1,), (1,)), ((), ())), precision, **kwargs)
    y = jax.lax.optimization_barrier(y)  # else XLA folds the `.T` below back into the dot
    return y.T.reshape(*x.shape[:-1], kernel.shape[1])


def _read_weights_first(model: nnx.Module) -> nnx.Module:
    """Every `nnx.Linear` with a large kernel computes through `weights_first_dot`."""
    for _, module in nnx.iter_graph(model):
        if isinstance(module, nnx.Linear) and _is_large(module.kernel[...]):
            module.dot_general = weights_first_dot
    return model


def loop_model(graphdef: nnx.GraphDef, state: nnx.State) -> Callable[[], nnx.Module]:
    """Call outside a decode loop; the returned `get()` rebuilds the module inside it
    (from the `[N, K]` copies, read as the dots' left operand, where
    `transposed_decode_weights()`)."""
    if not transposed_decode_weights():
        model = nnx.merge(graphdef, state)
        return lambda: model
    rows = to_rows_layout(state)
    return lambda: _read_weights_first(nnx.merge(graphdef, from_rows_layout(rows, state)))
