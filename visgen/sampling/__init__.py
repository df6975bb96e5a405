"""Sampling: jitted decode loops from a generator's condition to token ids.

Each method is a function `(model, cond, rng, options) -> (tokens, stats)`
whose whole loop runs as one `jax.jit` program with static shapes and an
explicit KV-cache pytree: `sample` (plain AR), `sample_no_cache` (AR
without the cache, a reference) and `sample_sjd` (speculative Jacobi
decoding, lossless and fewer forward passes); `stats` counts forward passes and generated tokens
so comparisons are hardware independent as well as timed.
"""

from visgen.sampling import weight_layout
from visgen.sampling.ar import (
    SampleOptions,
    filter_logits,
    sample,
    sample_logits,
    sample_no_cache,
    sample_window,
)
from visgen.sampling.guidance import SCHEDULES, guidance_scale, guide
from visgen.sampling.sjd import (
    DEFAULT_WINDOW,
    check_sjd_args,
    default_init,
    inits_for,
    sample_sjd,
)

__all__ = [
    "DEFAULT_WINDOW",
    "SCHEDULES",
    "SampleOptions",
    "check_sjd_args",
    "default_init",
    "filter_logits",
    "guidance_scale",
    "guide",
    "inits_for",
    "sample",
    "sample_logits",
    "sample_window",
    "sample_no_cache",
    "sample_sjd",
    "weight_layout",
]
