"""Sampling: jitted decode loops from a generator's condition to tokens.

Each method is a function `(model, cond, rng, options) -> (tokens, stats)`
whose whole loop runs as one `jax.jit` program with static shapes and an
explicit KV-cache pytree: `sample` (plain AR, any head), `sample_no_cache`
(AR without the cache, a reference), `sample_mar` (MAR's masked generator:
a random order revealed over `num_iter` bidirectional passes) and
`sample_sjd` (speculative Jacobi decoding with coupled drafts, lossless and
fewer forward passes; heads with per-token probabilities, independent or
causal within a step). `stats` counts forward passes and generated tokens
so comparisons are hardware independent as well as timed. `require` is
where a sampler refuses a head that lacks a capability it needs.
"""

from visgen.generators import ANY_ORDER
from visgen.sampling import weight_layout
from visgen.sampling.ar import sample, sample_no_cache
from visgen.sampling.guidance import SCHEDULES, guidance_scale
from visgen.sampling.mar import DEFAULT_NUM_ITER, reveal_counts, sample_mar
from visgen.sampling.options import (
    SampleOptions,
    UnsupportedHead,
    fit_to,
    offers,
    require,
    sample_options,
)
from visgen.sampling.sjd import (
    COUPLINGS,
    DEFAULT_COUPLING,
    DEFAULT_WINDOW,
    acceptance_rates,
    check_sjd_args,
    default_init,
    inits_for,
    sample_sjd,
)
from visgen.sampling.sjd import NEEDS as SJD_NEEDS

# What `launch.sample --method` names: each sampler and the capability it needs (None: any
# head; a tuple: any one of them).
METHODS: dict[str, tuple] = {
    "ar": (sample, None),
    "sjd": (sample_sjd, SJD_NEEDS),
    "mar": (sample_mar, ANY_ORDER),  # a masked generator's (configs/mar.py)
}

__all__ = [
    "COUPLINGS",
    "DEFAULT_NUM_ITER",
    "DEFAULT_COUPLING",
    "DEFAULT_WINDOW",
    "METHODS",
    "SCHEDULES",
    "SampleOptions",
    "UnsupportedHead",
    "acceptance_rates",
    "check_sjd_args",
    "default_init",
    "guidance_scale",
    "inits_for",
    "fit_to",
    "offers",
    "require",
    "reveal_counts",
    "sample",
    "sample_no_cache",
    "sample_mar",
    "sample_options",
    "sample_sjd",
    "weight_layout",
]
