"""Decode-loop weights stored `[N, K]` on CPU: the loop's 1-16-row matmuls stream them faster.

`nnx.Linear` keeps its kernel `[K, N]` (inputs x outputs). A decode step
multiplies a handful of rows by every kernel, so it is bound by reading the
weights, and XLA CPU's default (YNNPACK) dot kernels read a kernel stored
`[N, K]` (torch's `nn.Linear` layout) markedly faster at these row counts:
GPT-B at batch 8 decoded 69 -> 92 tokens/s without guidance and 54 -> 69
with CFG 4, with identical samples (BENCHMARKS.md, "Decode-loop weights
stored transposed").

`loop_model(graphdef, state)` is called once, outside the loop: it
materialises the transposed copies (behind an optimisation barrier, so no
simplification may merge the two transposes; jaxlib 0.10 keeps the copies
without it too) and returns `get()`, which a loop body calls to
rebuild the module; there `w_t.T` folds into each dot's dimension numbers,
so the loop reads the `[N, K]` copies. Checkpoints and parameters keep their
layout; the copy lives only inside the jitted sampler (on a CPU: one extra
copy of the large kernels while it runs).

It is used only where it measured faster: on the CPU backend, and not when
`XLA_FLAGS` moves dots to Eigen (`--xla_cpu_experimental_ynn_fusion_type=
-individual_dot`), whose kernels measured 2x slower on `[N, K]` kernels.
"""

import os
from collections.abc import Callable

import jax
from flax import nnx

# Kernels with at least this many values are streamed transposed; smaller ones are
# cache resident and gain nothing.
MIN_SIZE = 2**16


def transposed_decode_weights() -> bool:
    """Whether decode loops on this backend read large kernels `[N, K]`."""
    eigen_dots = "-individual_dot" in os.environ.get("XLA_FLAGS", "")
    return jax.default_backend() == "cpu" and not eigen_dots


def _is_large_kernel(path, x: jax.Array) -> bool:
    keys = [getattr(k, "key", None) for k in path]
    return "kernel" in keys and x.ndim == 2 and x.size >= MIN_SIZE


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


def loop_model(graphdef: nnx.GraphDef, state: nnx.State) -> Callable[[], nnx.Module]:
    """Call outside a decode loop; the returned `get()` rebuilds the module inside it
    (from the `[N, K]` copies where `transposed_decode_weights()`)."""
    if not transposed_decode_weights():
        model = nnx.merge(graphdef, state)
        return lambda: model
    rows = to_rows_layout(state)
    return lambda: nnx.merge(graphdef, from_rows_layout(rows, state))
