"""Every registered head trains and samples; head options and the samplers' capability check.

Tiny models (width 32, one layer, 64 codes on a 4 x 4 grid; 4-channel latents
for a head of continuous tokens, `HEAD_SPECS`) with numpy random weights from
`test_ar_generator._build`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_ar_generator import _build, _cond, _tokens, shuffle_head

from visgen.generators import (
    EXACT_PROBS,
    HEADS,
    CategoricalHead,
    CategoricalOptions,
    CountsEvaluations,
    WindowHead,
    WindowOptions,
    head_options_type,
)
from visgen.generators.base import CAUSAL_PROBS
from visgen.sampling import (
    METHODS,
    SampleOptions,
    UnsupportedHead,
    require,
    sample,
    sample_options,
)
from visgen.token_spec import TokenSpec

# Each registered head's `generator.head` arguments (one case per entry). A new head
# registered in `HEADS` fails `test_every_head_trains_one_step_and_samples` until it has one.
HEAD_ARGS: dict[str, list[dict]] = {
    "categorical": [{}],
    "token_shuffle": [{"window": 2}, {"window": 2, "causal": True}],
    "diffusion": [
        {"depth": 1, "mlp_width": 16},
        {"depth": 1, "mlp_width": 16, "learn_sigma": False},
    ],
}
# Heads of another token kind than the 64 discrete codes, and the spec they train on.
HEAD_SPECS: dict[str, TokenSpec] = {"diffusion": TokenSpec.continuous((4, 4), 4)}
HEAD_CASES = [(name, args) for name in HEADS.names() for args in HEAD_ARGS.get(name, [None])]


def _case_id(case) -> str:
    name, args = case
    return "-".join([name, *(f"{k}={v}" for k, v in (args or {}).items())])


@pytest.mark.parametrize("case", HEAD_CASES, ids=[_case_id(c) for c in HEAD_CASES])
def test_every_head_trains_one_step_and_samples(case):
    name, args = case
    assert args is not None, f"give the head {name!r} its arguments in HEAD_ARGS"
    spec = HEAD_SPECS.get(name)
    kind = {} if spec is None else {"spec": spec}
    model = _build(layout=(4, 4), depth=1, head={"name": name, **args}, **kind)
    assert model.head_name == name
    assert model.num_steps * model.tokens_per_step == model.num_tokens == 16
    labels = _cond(model, 4)
    if spec is None:
        tokens = _tokens(model, 4)
    else:
        tokens = jax.random.normal(jax.random.key(2), (4, 16, spec.channels))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, rng):
        loss_fn = lambda m: m.loss(tokens, labels, train=True, rng=rng)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, jax.tree.map(jnp.linalg.norm, grads)

    head_before = jax.tree.map(np.asarray, nnx.state(model.head, nnx.Param))
    loss, norms = train_step(model, optimizer, jax.random.key(0, impl="unsafe_rbg"))
    assert np.isfinite(float(loss)) and float(loss) > 0
    leaves = jax.tree.leaves_with_path(norms)
    norms = {jax.tree_util.keystr(p): float(g) for p, g in leaves}
    assert all(np.isfinite(g) for g in norms.values()), norms
    # Gradients reach every parameter of the head, and the step moves them.
    head_norms = {k: g for k, g in norms.items() if k.startswith("['head']")}
    assert head_norms and all(g > 0 for g in head_norms.values()), head_norms
    head_after = nnx.state(model.head, nnx.Param)
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), head_before, head_after)
    assert all(jax.tree.leaves(moved))
    # Plain AR sampling through the head's `draw`, guided.
    ids, stats = sample(
        model, labels[:3], jax.random.key(1, impl="unsafe_rbg"), SampleOptions(cfg_scale=2.0)
    )
    expected = {"forward_passes": model.num_steps, "tokens_generated": 3 * 16}
    if spec is None:
        assert ids.shape == (3, 16) and ids.dtype == jnp.int32
        assert int(ids.min()) >= 0 and int(ids.max()) < model.spec.vocab_size
    else:
        assert ids.shape == (3, 16, spec.channels) and ids.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(ids)))
    if isinstance(model.head, CountsEvaluations):
        options = model.head.Options()
        expected["head_evaluations"] = model.head.evaluations(options, model.num_steps)
    assert stats == expected


def test_sample_options_send_each_key_to_its_place():
    assert head_options_type("categorical") is CategoricalOptions
    assert head_options_type("token_shuffle") is WindowOptions
    values = dict(temperature=0.5, cfg_scale=3.0, cfg_schedule="linear", top_k=4, top_p=0.9)
    options = sample_options(values, CategoricalOptions)
    assert options == SampleOptions(
        temperature=0.5,
        cfg_scale=3.0,
        cfg_schedule="linear",
        head=CategoricalOptions(top_k=4, top_p=0.9),
    )
    # The flat record puts the head's options inline and builds the same options back.
    assert options.to_dict() == {**values, "cfg_interval": None}
    assert sample_options(options.to_dict(), CategoricalOptions) == options
    window = sample_options({"cfg_scale": 2.0, "top_k": 3, "coupled": True}, WindowOptions)
    assert window == SampleOptions(cfg_scale=2.0, head=WindowOptions(top_k=3, coupled=True))
    assert window.to_dict()["coupled"] is True
    # No head keys: the head's defaults.
    assert sample_options({"cfg_scale": 4.0}, CategoricalOptions).head == CategoricalOptions()
    # A key neither the shared options nor the head's take is refused, naming the valid ones.
    valid = "valid: temperature, cfg_scale, cfg_schedule, cfg_interval, top_k, top_p"
    with pytest.raises(ValueError, match=rf"unknown sampling option 'coupled'.*{valid}$"):
        sample_options({"cfg_scale": 2.0, "coupled": True}, CategoricalOptions)
    with pytest.raises(ValueError, match=r"unknown sampling option 'top_q'.*coupled"):
        sample_options({"top_q": 0.5}, WindowOptions)
    # Bad values are refused by the options that own them.
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        sample_options({"top_k": -1}, WindowOptions)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample_options({"temperature": -1.0}, CategoricalOptions)


def _heads() -> dict[str, object]:
    """The heads of abstractly evaluated models: categorical, independent and causal windows."""

    def head(**kwargs):
        return nnx.eval_shape(lambda: _build(depth=1, **kwargs)).head

    return {
        "categorical": head(),
        "independent": head(head=shuffle_head()),
        "causal": head(head=shuffle_head(causal=True)),
    }


def test_require_refuses_heads_without_exact_probabilities():
    heads = _heads()
    assert isinstance(heads["categorical"], CategoricalHead)
    assert isinstance(heads["independent"], WindowHead) and not heads["independent"].causal
    assert METHODS["sjd"][1] == (EXACT_PROBS, CAUSAL_PROBS) and METHODS["ar"][1] is None
    assert issubclass(UnsupportedHead, ValueError)
    # Accepted: categorical (defaults or its own options) and independent window draws.
    for options in (SampleOptions(), SampleOptions(head=CategoricalOptions(top_k=3))):
        require(heads["categorical"], options, EXACT_PROBS, "SJD")
    for options in (SampleOptions(), SampleOptions(head=WindowOptions(top_k=3))):
        require(heads["independent"], options, EXACT_PROBS, "SJD")
    # Refused, naming the reason: a causal window head, and coupled window draws.
    needs = r"SJD needs exact per-token probabilities .*; this generator's head is "
    with pytest.raises(UnsupportedHead, match=needs + r"a causal 2 x 2 window head \("):
        require(heads["causal"], SampleOptions(), EXACT_PROBS, "SJD")
    coupled = SampleOptions(cfg_scale=3.0, head=WindowOptions(coupled=True))
    with pytest.raises(
        UnsupportedHead,
        match=needs + r"a 2 x 2 window head with coupled draws \(option coupled=True\)",
    ):
        require(heads["independent"], coupled, EXACT_PROBS, "SJD")
    # Another head's options do not fit.
    with pytest.raises(ValueError, match="CategoricalOptions do not fit .* WindowOptions"):
        require(heads["independent"], SampleOptions(head=CategoricalOptions()), EXACT_PROBS, "SJD")
