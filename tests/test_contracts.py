"""Contracts that follow the registries: every tokenizer, head and sampler, end to end.

Each registered tokenizer trains two steps through the real task and loop
and its restored weights encode and decode with the shapes and dtypes its
`TokenSpec` promises, under `jax.jit`. Each registered head trains a
generator on the tiny grid tokenizer's tokens the same way, and every
sampler (`visgen.sampling.METHODS`) runs it through the sampling CLI, or
refuses it in one line when the head lacks what the sampler needs. Workdirs
are shared across the session (`conftest.trained_workdir`). Quantizers and
heads have unit contracts of their own (`test_quantizers.py`, `test_heads.py`).
"""

import json
import os

import jax
import numpy as np
import pytest
from conftest import HEAD_TOKENIZERS, HEAD_VARIANTS, TOKENIZER_CONFIGS
from flax import nnx

from visgen.generators import HEADS
from visgen.sampling import METHODS
from visgen.sampling.options import offers
from visgen.token_spec import TokenSpec
from visgen.tokenizers import TOKENIZERS

pytestmark = pytest.mark.slow


def test_every_registered_component_has_a_contract_case():
    assert sorted(TOKENIZER_CONFIGS) == TOKENIZERS.names()
    assert {case.split("-")[0] for case in HEAD_VARIANTS} == set(HEADS.names())


@pytest.mark.parametrize("name", sorted(TOKENIZER_CONFIGS))
def test_every_tokenizer_trains_restores_and_round_trips(name, trained_workdir):
    from visgen.tasks.restore import load_trained

    config, _, model, step = load_trained(trained_workdir(TOKENIZER_CONFIGS[name]))
    tokenizer, spec = model.tokenizer, model.tokenizer.spec
    assert step == 2 and config.tokenizer.name == name
    assert TokenSpec.from_dict(spec.to_dict()) == spec
    size = config.data.image_size
    x = jax.random.uniform(jax.random.key(0), (3, size, size, 3), minval=-1, maxval=1)
    graphdef, state = nnx.split(tokenizer)

    @jax.jit
    def round_trip(state, x):
        tok = nnx.merge(graphdef, state)
        enc = tok.encode(x)
        tokens = enc.tokens if spec.kind == "discrete" else enc.latents
        return enc, tokens, tok.decode(tokens)

    enc, tokens, pixels = round_trip(state, x)
    assert enc.latents.shape == (3, *spec.layout, spec.channels)
    if spec.kind == "discrete":
        assert tokens.shape == (3, *spec.layout) and tokens.dtype == np.int32
        assert int(tokens.min()) >= 0 and int(tokens.max()) < spec.vocab_size
    assert pixels.shape == x.shape and pixels.dtype == np.float32
    assert np.all(np.isfinite(np.asarray(pixels)))


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", sorted(HEAD_VARIANTS))
def test_every_sampler_runs_or_refuses_every_head_through_the_cli(
    case, method, trained_workdir, tmp_path
):
    from launch import sample as sample_cli
    from visgen.tasks.restore import load_trained

    tokenizer = trained_workdir(HEAD_TOKENIZERS.get(case, TOKENIZER_CONFIGS["vq2d"]))
    workdir = trained_workdir(HEAD_VARIANTS[case], tokenizer_workdir=tokenizer)
    _, _, model, _ = load_trained(workdir)
    head = model.generator.head
    needs = METHODS[method][1]
    argv = ["--workdir", workdir, "--out", str(tmp_path), "--num", "3", "--method", method]
    if needs is not None and not offers(head, head.Options(), needs):
        with pytest.raises(sample_cli.UsageError, match=f"--method {method} needs"):
            sample_cli.run(argv)
        assert not os.listdir(tmp_path)
        return
    stats = sample_cli.run(argv)
    with np.load(os.path.join(tmp_path, "samples.npz")) as f:
        assert f["images"].shape == (3, 32, 32, 3) and f["images"].dtype == np.uint8
    with open(os.path.join(tmp_path, "stats.json")) as f:
        assert json.load(f)["method"] == method
    steps = model.generator.num_steps
    tokens = model.generator.spec.num_tokens
    assert stats["steps_per_sample"] == steps and stats["tokens_generated"] == 3 * tokens
    assert stats["forward_passes"] <= steps and stats["step_compression"] >= 1.0
