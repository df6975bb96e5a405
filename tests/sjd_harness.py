"""The chi-square harness of the SJD tests: tiny random generators whose sample
distribution is enumerated exactly, and a goodness-of-fit test against it.

A model small enough to enumerate (`V ** N` sequences) gets its exact sequence
probabilities from its teacher-forced conditionals under the same guidance and
filtering as a sampler (`exact_probs`; for a causal window head, token `j`'s
conditional reads the window's earlier tokens, as in sampling); draws of many
rows in one batched call are compared with them by a chi-square test
(`p_value`) at significance level `ALPHA`.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from flax import nnx

from visgen.generators import ARGenerator, guide
from visgen.generators.categorical import filter_logits
from visgen.sampling import SampleOptions, guidance_scale
from visgen.token_spec import TokenSpec

ALPHA = 1e-3  # per test: a correct sampler fails one with probability 0.1%
LABEL = 1
TRUNK = dict(width=16, depth=1, heads=2, mlp_multiple_of=16)


def random_model(std: float, *, vocab_size: int, layout, **kwargs) -> ARGenerator:
    """`vocab_size` ids on `layout`, numpy random weights (`std`; norm scales near 1) on
    abstractly evaluated shapes."""
    spec = TokenSpec(kind="discrete", layout=tuple(layout), vocab_size=vocab_size, channels=8)
    abstract = nnx.eval_shape(lambda: ARGenerator(spec=spec, rngs=nnx.Rngs(0), **kwargs))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)

    def fill(path, x):
        mean = 1.0 if "weight" in jax.tree_util.keystr(path) else 0.0
        scale = 0.1 if mean else std
        return jnp.asarray(mean + scale * rng.normal(size=x.shape), jnp.float32)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def key(seed: int, impl: str = "unsafe_rbg") -> jax.Array:
    """A PRNG key: RBG by default (fast on a CPU). A causal window head's draws (token `j`
    with `fold_in(key, j)`) need `threefry2x32`: under `unsafe_rbg` those chained keys
    give correlated draws, and plain AR itself fails the chi-square test."""
    return jax.random.key(seed, impl=impl)


def labels(count: int) -> jax.Array:
    return jnp.full((count,), LABEL, jnp.int32)


@nnx.jit(static_argnames="options")
def _exact_log_probs(model: ARGenerator, options: SampleOptions) -> jax.Array:
    vocab, n = model.spec.vocab_size, model.num_tokens
    seqs = jnp.asarray(list(itertools.product(range(vocab), repeat=n)), jnp.int32)
    cond = jnp.full((seqs.shape[0],), LABEL, jnp.int32)
    logits = model.logits(seqs, cond)
    if options.guided:
        uncond = model.logits(seqs, cond, drop=jnp.ones_like(cond, bool))
        # The schedule runs over steps: token i's step is its window's (itself unshuffled).
        g = model.tokens_per_step
        step_of = (jnp.arange(n) // g).reshape(1, model.num_steps, g)
        steps = model.trunk_input.from_steps(step_of)[0]
        scale = guidance_scale(
            options.cfg_schedule, options.cfg_scale, steps, model.num_steps, options.cfg_interval
        )
        # A constant schedule gives a scalar.
        logits = guide(logits, uncond, jnp.broadcast_to(scale, steps.shape)[:, None])
    head = options.head_options(model.head)  # top-k and top-p are the head's options
    filtered = filter_logits(logits / options.temperature, head.top_k, head.top_p)
    logp = jax.nn.log_softmax(filtered, axis=-1)
    return jnp.take_along_axis(logp, seqs[..., None], axis=-1)[..., 0]


def exact_probs(model: ARGenerator, options: SampleOptions) -> np.ndarray:
    """Probability of each of the `V ** N` sequences (itertools.product order), from
    the teacher-forced conditionals after guidance, temperature and filtering."""
    picked = np.asarray(_exact_log_probs(model, options), np.float64)
    return np.exp(picked.sum(axis=1))


def p_value(tokens: jax.Array, probs: np.ndarray) -> float:
    """Chi-square goodness of fit of sampled sequences `[M, N]` to `probs`.

    Sequences expected fewer than 5 times are pooled into one bin (merged into
    the smallest other bin if the pool itself is under 5); a sample of a
    probability-0 sequence fails outright.
    """
    n = tokens.shape[1]
    vocab = round(probs.size ** (1 / n))
    index = np.asarray(tokens) @ (vocab ** np.arange(n - 1, -1, -1))
    observed = np.bincount(index, minlength=probs.size)
    assert observed[probs == 0].sum() == 0, "sampled a sequence of probability 0"
    expected = probs * observed.sum()
    small = expected < 5
    obs, exp = list(observed[~small]), list(expected[~small])
    if small.any():
        pool_obs, pool_exp = observed[small].sum(), expected[small].sum()
        if pool_exp < 5:
            i = int(np.argmin(exp))
            obs[i], exp[i] = obs[i] + pool_obs, exp[i] + pool_exp
        else:
            obs.append(pool_obs)
            exp.append(pool_exp)
    exp = np.asarray(exp) * sum(obs) / sum(exp)
    return float(scipy.stats.chisquare(obs, exp).pvalue)
