"""Sampling: jitted decode loops from a generator's condition to token ids.

Each method is a function `(model, cond, rng, options) -> (tokens, stats)`
whose whole loop runs as one `jax.jit` program with static shapes and an
explicit KV-cache pytree; `stats` counts forward passes and generated tokens
so comparisons are hardware independent as well as timed.
"""

from visgen.sampling.ar import (
    SampleOptions,
    filter_logits,
    sample,
    sample_logits,
    sample_no_cache,
)
from visgen.sampling.guidance import SCHEDULES, guidance_scale, guide

__all__ = [
    "SCHEDULES",
    "SampleOptions",
    "filter_logits",
    "guidance_scale",
    "guide",
    "sample",
    "sample_logits",
    "sample_no_cache",
]
