"""Process-level JAX setup shared by the entry points.

The persistent compilation cache matters on CPU, where compiling a train step
takes tens of seconds: a resumed or repeated run reuses the executable.
"""

import os

import jax

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "visgen", "jax")


def enable_compilation_cache(path: str | None = None) -> str:
    """Turns on JAX's persistent compilation cache (`$JAX_COMPILATION_CACHE_DIR` wins)."""
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or path or DEFAULT_CACHE_DIR
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path
