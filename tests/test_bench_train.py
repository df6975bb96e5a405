"""The generator train-step benchmark runs the loop's step on token batches."""

import jax
import numpy as np
from flax import nnx

from evals.bench_ar import SHAPES, TokenBatchTask, bench_train


def test_bench_train_times_the_configured_tiny_generator():
    row = bench_train("tiny", batch=2, repeats=1)
    spec = SHAPES["tiny"]
    task = TokenBatchTask(_tiny_generator(), spec["vocab_size"], spec["layout"])
    model = task.build(nnx.Rngs(0))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert row["params"] == params
    assert row["tokens"] == np.prod(spec["layout"]) and row["batch"] == 2
    assert row["step_seconds"] > 0 and row["step_flops"] > 0


def _tiny_generator() -> dict:
    from visgen.config import load_config_file

    config = load_config_file("configs/ar.py:tiny")
    return dict(config.generator, num_classes=SHAPES["tiny"]["num_classes"])
