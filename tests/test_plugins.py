"""A quantizer and a head defined here, registered here, run through the real code paths.

The redesign's promise: a new kind of bottleneck or head is one new module and
one registry line. `SignQuantizer` (binary codes from the signs of the
features, LFQ-like) and `GreedyHead` (a linear classifier drawn by argmax or
from its softmax, with an option of its own and no capabilities) live only in
this file; a tiny tokenizer trains with the sign quantizer and a generator
trains with the greedy head on its tokens through `visgen.tasks.run`
(the launcher's path: task, loop, checkpoints, evaluation, preview), then
`launch.sample` samples it, and refuses SJD for it with the head's own words.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

from visgen.generators import HEADS, DrawContext
from visgen.generators.categorical import Classifier, TokenSteps, cross_entropy
from visgen.quantizers import QUANTIZERS, Quantized

pytestmark = pytest.mark.slow


class SignQuantizer(nnx.Module):
    """`z: [..., D]` -> the signs `{-1, 1}^D` (straight-through) and ids `sum_d bit_d 2^d`."""

    kind = "discrete"
    revivable = False

    def __init__(self, *, dim: int, rngs: nnx.Rngs):
        del rngs
        self.dim = self.input_dim = dim
        self.codebook_size = 2**dim

    def __call__(self, z, *, train=False, rng=None) -> Quantized:
        del train, rng
        z = z.astype(jnp.float32)
        signs = jnp.where(z >= 0, 1.0, -1.0)
        ids = jnp.sum((signs > 0) * 2 ** jnp.arange(self.dim), axis=-1).astype(jnp.int32)
        sg = jax.lax.stop_gradient
        losses = {"commitment": 0.1 * jnp.mean(jnp.square(z - sg(signs)))}
        return Quantized(latents=z + sg(signs - z), indices=ids, losses=losses, stats={})

    def embed(self, indices):
        bits = (indices[..., None] >> jnp.arange(self.dim)) & 1
        return 2.0 * bits.astype(jnp.float32) - 1.0

    def codes(self):
        return self.embed(jnp.arange(self.codebook_size))

    def revive(self, features, rng=None) -> None:
        del features, rng


@dataclasses.dataclass(frozen=True)
class GreedyOptions:
    greedy: bool = True


class GreedyHead(nnx.Module):
    """One id per step; `greedy` takes the argmax, else a softmax draw at the temperature."""

    Options = GreedyOptions

    def __init__(self, width: int, vocab_size: int, *, rngs: nnx.Rngs):
        self.classifier = Classifier(width, vocab_size, zero_init=False, rngs=rngs)

    def capabilities(self, options) -> frozenset[str]:
        return frozenset()

    def describe(self, options) -> str:
        return f"the test's greedy head (greedy={options.greedy})"

    def loss(self, hidden, targets, rng):
        return cross_entropy(self.classifier(hidden)[..., None, :], targets)

    def draw(self, hidden, rng, context: DrawContext):
        logits = self.classifier(hidden)
        if context.guided:
            b = logits.shape[0] // 2
            logits = logits[b:] + (logits[:b] - logits[b:]) * context.scale
        if context.options.greedy or context.temperature == 0:
            ids = jnp.argmax(logits, axis=-1)
        else:
            ids = jax.random.categorical(rng, logits / context.temperature)
        return ids.astype(jnp.int32)[:, None]


class Greedy:
    Options = GreedyOptions

    @staticmethod
    def build(spec, width, *, token_embed, dtype, rngs):
        del dtype
        return TokenSteps(spec.layout, token_embed), GreedyHead(width, spec.vocab_size, rngs=rngs)


@pytest.fixture
def registered():
    """`test_sign` and `test_greedy` in the library's registries for one test only."""
    QUANTIZERS.register("test_sign")(SignQuantizer)
    HEADS.register("test_greedy")(Greedy)
    yield
    QUANTIZERS.unregister("test_sign")
    HEADS.unregister("test_greedy")


def test_a_registered_quantizer_and_head_train_and_sample_through_the_real_paths(
    registered, shapes_dir, tmp_path
):
    from launch import sample as sample_cli
    from visgen.tasks.run import train_config

    tokenizer = tiny_config("configs/vq2d.py:tiny", shapes_dir)
    with tokenizer.unlocked():
        tokenizer.tokenizer.token_dim = 4
        tokenizer.tokenizer.quantizer = ml_collections.ConfigDict({"name": "test_sign"})
    tok_dir = str(tmp_path / "tokenizer")
    result = train_config(tokenizer, tok_dir)
    assert result.step == 2 and 0 < result.eval_metrics["codebook_usage"] <= 1

    generator = tiny_config(
        "configs/ar.py:tokenizer=vq2d,tiny", shapes_dir, tokenizer_workdir=tok_dir
    )
    with generator.unlocked():
        generator.generator.head = ml_collections.ConfigDict({"name": "test_greedy"})
        sample = dict(cfg_scale=2.0, cfg_schedule="constant", greedy=True)
        generator.sample = ml_collections.ConfigDict(sample)
    gen_dir = str(tmp_path / "generator")
    result = train_config(generator, gen_dir)
    metrics = result.eval_metrics
    assert result.step == 2 and np.isfinite(metrics["cross_entropy"])
    assert metrics["frequency_baseline_cross_entropy"] <= np.log(16) + 1e-6  # 16 sign codes
    assert os.path.isfile(os.path.join(gen_dir, "images", "preview_0000002.png"))

    out = str(tmp_path / "samples")
    stats = sample_cli.run(["--workdir", gen_dir, "--out", out, "--num", "5", "--batch-size", "5"])
    assert stats["options"]["greedy"] is True and stats["steps_per_sample"] == 256
    with np.load(os.path.join(out, "samples.npz")) as f:
        assert f["images"].shape == (5, 32, 32, 3) and f["images"].dtype == np.uint8
    with open(os.path.join(out, "stats.json")) as f:
        assert json.load(f)["forward_passes"] == 256

    with pytest.raises(sample_cli.UsageError, match="the test's greedy head"):
        sample_cli.run(["--workdir", gen_dir, "--out", out, "--num", "5", "--method", "sjd"])
    with pytest.raises(sample_cli.UsageError, match="unknown sampling option 'top_k'"):
        sample_cli.run(["--workdir", gen_dir, "--out", out, "--num", "5", "--top-k", "3"])
