"""Generator training: an AR generator on the tokens of a frozen, trained tokenizer.

Each step tokenizes the batch with the tokenizer's EMA weights (embedded in
the model as `Frozen` variables, so they are neither trained nor saved again)
inside the same jitted step, then minimises the next-token cross-entropy
given the condition (the head's loss: cross-entropy for categorical heads),
dropped to the null condition with the generator's `cond_dropout` for
classifier-free guidance. The generator is built from the tokenizer's
`TokenSpec` and the config's `generator.head` (which head, and its
arguments). The condition is the class label, or with a text encoder
(`visgen.text`, `text_encoder` below) the batch's captions: `host_batch`
encodes them on the host into `"text"` `[b, L, D]` float32 before the batch
enters the jitted step (`visgen.text.encode_batch_captions`; strings cannot),
and the generator is built with `text_dim = D` and `cls_token_num = L`. With
`config.data.token_cache = DIR` the train split is tokenized once into DIR
(`visgen.data.token_cache`; built on first use, refused if another tokenizer
checkpoint made it) and train steps read the ids from there, skipping the
encoder; evaluation still tokenizes the test images.

Evaluation reports the head's test loss per token. For discrete tokens it is
`cross_entropy` (nats), beside the frequency-only baseline: the entropy of
the test split's own token histogram, i.e. the best any model that ignores
context and condition can score. For continuous tokens (the diffusion head)
it is `diffusion_loss` (the head's training loss: epsilon MSE plus, with the
learned variance, the variational-bound term; a masked generator's over its
masked tokens under a fixed evaluation mask), with its epsilon MSE
`diffusion_mse` beside `mean_latent_baseline_mse`: the MSE of the best
denoiser that knows only the test latents' per-channel mean and variance
(`visgen.diffusion.gaussian_baseline_mse`), and `latent_std`, the test
latents' std before the head's `scale` (what the scale should undo). The
training loss is logged under the same name (`cross_entropy` or
`diffusion_loss`).

The generator is `config.generator.name` (`visgen.generators.GENERATORS`:
`ar`, the causal AR generator, or `mar`, MAR's masked generator); the preview
samples with its method (`visgen.sampling.METHODS`: `ar`, or `mar` for a
masked generator) one row per class with the configured options (text: one
row per caption of the first test examples).
"""

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.data import DataConfig, make_eval_iterator, num_examples
from visgen.data.token_cache import TokenizerRecord, build_token_cache, check_cache, read_metadata
from visgen.diffusion import cosine_schedule, gaussian_baseline_mse
from visgen.generators import MaskedGenerator, head_options_type, make_generator
from visgen.metrics import codebook
from visgen.sampling import METHODS, SampleOptions, sample_options
from visgen.tasks import TASKS
from visgen.tasks.restore import load_frozen
from visgen.text import TextEncoder, config_text_encoder, encode_batch_captions
from visgen.token_spec import TokenSpec
from visgen.train.progress import progress_bar
from visgen.train.task import Batch

# Preview rows of a text-conditional generator: the captions of the first test examples.
PREVIEW_CAPTIONS = 8


def config_sample_options(config, **overrides) -> SampleOptions:
    """`config.sample` (updated with the non-None `overrides`) as `SampleOptions` for the
    head `config.generator.head.name` names; unknown keys name the valid ones."""
    values = dict(config.sample)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return sample_options(values, head_options_type(config.generator.head.name))


class GeneratorModel(nnx.Module):
    """The trainable generator beside the frozen tokenizer that feeds it."""

    def __init__(self, generator: nnx.Module, tokenizer: nnx.Module):
        self.generator = generator
        self.tokenizer = tokenizer


@TASKS.register("generator")
class GeneratorTask:
    """Trains a class- or text-conditional generator from `visgen.generators` on
    tokenizer tokens.

    Args:
      generator: keyword arguments of `make_generator` (`name` and `head`
        included); `spec` comes from the tokenizer, and with a text encoder
        `text_dim` and `cls_token_num` come from it.
      tokenizer_workdir: a trained tokenizer's workdir.
      tokenizer_step: its checkpoint to use; -1: the latest (resolved and recorded
        in the generator's workdir on first training, see `pins`).
      tokenizer_fingerprint: the SHA-256 of that checkpoint's weights the generator was
        trained on; a tokenizer whose weights differ is refused. Empty: not pinned yet.
      sample: decoding options for previews (and the sampling CLI's defaults).
      preview_per_class: samples per class (per caption for text) in the preview grid.
      dtype: compute dtype of the generator.
      text_encoder: conditions on captions encoded by it instead of class labels.
    """

    def __init__(
        self,
        generator: dict[str, Any],
        tokenizer_workdir: str,
        sample: SampleOptions,
        preview_per_class: int,
        dtype: str,
        text_encoder: TextEncoder | None = None,
        tokenizer_step: int = -1,
        tokenizer_fingerprint: str = "",
    ):
        if not tokenizer_workdir:
            raise ValueError(
                "config.tokenizer_workdir is empty: a generator trains on the tokens of a "
                "trained tokenizer (--config.tokenizer_workdir=DIR)"
            )
        try:
            self.frozen_tokenizer = load_frozen(
                tokenizer_workdir, step=None if tokenizer_step < 0 else tokenizer_step
            )
        except FileNotFoundError as e:
            if tokenizer_step < 0:
                raise
            raise FileNotFoundError(
                f"the tokenizer checkpoint this generator is pinned to ({tokenizer_workdir} step "
                f"{tokenizer_step}) is gone: {e}"
            ) from None
        found = self.frozen_tokenizer.fingerprint
        if tokenizer_fingerprint and found != tokenizer_fingerprint:
            raise ValueError(
                f"the tokenizer in {tokenizer_workdir} at step {self.frozen_tokenizer.step} is "
                f"not the one this generator was trained on: its weights' fingerprint is "
                f"{found[:12]}, the generator's config pins {tokenizer_fingerprint[:12]}"
            )
        # The head checks that it can model these tokens when the generator is built.
        self.spec = self.frozen_tokenizer.build().tokenizer.spec
        self.generator_args = dict(generator)
        self.num_classes = int(self.generator_args.get("num_classes", 0))
        self.text_encoder = text_encoder
        if text_encoder is not None:
            self.generator_args.update(_text_args(self.generator_args, text_encoder))
        self.sample_options = sample
        self.loss_name = "cross_entropy" if self.spec.kind == "discrete" else "diffusion_loss"
        self.latent_scale = float(dict(self.generator_args.get("head", {})).get("scale", 1.0))
        self.preview_per_class = preview_per_class
        self.dtype = jnp.dtype(dtype)

    @classmethod
    def from_config(cls, config) -> "GeneratorTask":
        missing = [k for k in cls.UNPINNED if k not in config]
        if missing:
            raise ValueError(
                f"the generator config has no {' or '.join(missing)}: it was written before "
                "generators pinned their tokenizer checkpoint; add "
                '"tokenizer_step": -1, "tokenizer_fingerprint": "" to its config.json to use '
                "the tokenizer's latest checkpoint (and pin it on the next training run)"
            )
        return cls(
            generator=config.generator.to_dict(),
            tokenizer_workdir=config.tokenizer_workdir,
            sample=config_sample_options(config),
            preview_per_class=config.preview_per_class,
            dtype=config.dtype,
            text_encoder=config_text_encoder(config),
            tokenizer_step=config.tokenizer_step,
            tokenizer_fingerprint=config.tokenizer_fingerprint,
        )

    # The tokenizer checkpoint a generator trains on, resolved on first training.
    UNPINNED: dict[str, Any] = {"tokenizer_step": -1, "tokenizer_fingerprint": ""}

    def pins(self) -> dict[str, Any]:
        """The tokenizer's checkpoint step and weights fingerprint."""
        frozen = self.frozen_tokenizer
        return {"tokenizer_step": int(frozen.step), "tokenizer_fingerprint": frozen.fingerprint}

    def tokenizer_record(self) -> TokenizerRecord:
        """The frozen tokenizer's identity and token spec, as token caches record them."""
        frozen = self.frozen_tokenizer
        return TokenizerRecord(
            workdir=os.path.abspath(frozen.workdir),
            step=int(frozen.step),
            fingerprint=frozen.fingerprint,
            spec=self.spec,
        )

    def prepare_data(self, data_cfg: DataConfig, batch_size: int = 64) -> dict | None:
        """With `data_cfg.token_cache`: builds the cache from the train split if it is
        missing, then checks that this task's tokenizer and data made it; returns
        its metadata (None without a cache). A text-conditional task checks that
        the data carries captions and refuses a token cache (it stores no captions)."""
        if self.text_encoder is not None:
            if not data_cfg.with_captions:
                raise ValueError(
                    "a text-conditional generator trains on captions: set "
                    "--config.data.with_captions=True"
                )
            if data_cfg.token_cache:
                raise ValueError(
                    f"data.token_cache={data_cfg.token_cache!r}: token caches store class "
                    "labels, not captions, so a text-conditional generator cannot read one "
                    "(leave it empty)"
                )
        if not data_cfg.token_cache:
            return None
        record = self.tokenizer_record()
        directory = data_cfg.token_cache
        if read_metadata(directory) is None:
            if jax.process_count() > 1:
                raise ValueError(
                    f"no token cache in {directory}: build it in a single-process run first"
                )
            split = data_cfg.train_split
            read_cfg = dataclasses.replace(data_cfg, eval_split=split, token_cache="")
            graphdef, state = nnx.split(self.frozen_tokenizer.build().tokenizer)
            encode = jax.jit(
                lambda s, x: nnx.merge(graphdef, s).encode(x).tokens.reshape(x.shape[0], -1)
            )
            count = num_examples(read_cfg, split)
            build_token_cache(
                directory,
                lambda images: np.asarray(encode(state, images)),
                make_eval_iterator(read_cfg, batch_size=batch_size),
                math.ceil(count / batch_size),
                record,
                data_cfg,
                progress=progress_bar,
            )
        return check_cache(directory, record, data_cfg)

    def host_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """With a text encoder: adds `"text"` float32 `[b, L, D]`, the encoded
        `"caption"`s (str `[b]`); otherwise the batch as is, once its `"label"`s are
        checked against the class count (on the host: an out-of-range label would
        otherwise surface as a non-finite loss)."""
        if self.text_encoder is None:
            labels = np.asarray(batch["label"])
            if (
                self.num_classes
                and labels.size
                and not 0 <= labels.min() <= labels.max() < self.num_classes
            ):
                raise ValueError(
                    f"a batch has labels {int(labels.min())}..{int(labels.max())}, outside the "
                    f"generator's {self.num_classes} classes (generator.num_classes)"
                )
            return batch
        return encode_batch_captions(batch, self.text_encoder)

    def condition(self, batch: Batch) -> jax.Array:
        """The generator's condition from a batch: `"text"` `[B, L, D]` or `"label"` `[B]`."""
        return batch["text"] if self.text_encoder is not None else batch["label"]

    def build(self, rngs: nnx.Rngs) -> GeneratorModel:
        generator = make_generator(
            **self.generator_args, spec=self.spec, dtype=self.dtype, rngs=rngs
        )
        return GeneratorModel(generator, self.frozen_tokenizer.build().tokenizer)

    def _tokens(self, model: GeneratorModel, images: jax.Array) -> jax.Array:
        """Images -> ids `[B, N]`, or for a continuous spec latents `[B, N, C]` (the
        posterior mean), in raster order of the tokenizer's layout."""
        encoded = model.tokenizer.encode(images)
        if self.spec.kind == "continuous":
            tokens = encoded.latents.reshape(images.shape[0], -1, self.spec.channels)
        else:
            tokens = encoded.tokens.reshape(images.shape[0], -1)
        return jax.lax.stop_gradient(tokens)

    def loss(self, model: GeneratorModel, batch: Batch, rng: jax.Array, step: jax.Array):
        if "tokens" in batch:  # from a token cache
            tokens = batch["tokens"].astype(jnp.int32)
        else:
            tokens = self._tokens(model, batch["image"])
        loss = model.generator.loss(tokens, self.condition(batch), train=True, rng=rng)
        return loss, {self.loss_name: loss}, None

    def after_update(self, model: GeneratorModel, aux, rng: jax.Array) -> None:
        del model, aux, rng

    def eval_batch(self, model: GeneratorModel, batch: Batch) -> dict[str, jax.Array]:
        m = batch["mask"].astype(jnp.float32)
        tokens = self._tokens(model, batch["image"])
        if self.spec.kind == "continuous":
            return _diffusion_sums(model.generator, tokens, self.condition(batch), m)
        losses = model.generator.token_losses(tokens, self.condition(batch))
        sums = {
            "loss_sum": jnp.sum(m[:, None] * losses),
            "tokens": jnp.sum(m) * tokens.shape[1],
        }
        if self.spec.kind == "discrete":
            sums["code_histogram"] = codebook.code_histogram(
                tokens, self.spec.vocab_size, batch["mask"]
            )
        return sums

    def eval_summary(self, sums: dict[str, Any]) -> dict[str, float]:
        if "mse_sum" in sums:
            return _diffusion_summary(sums, self.latent_scale)
        test_loss = float(sums["loss_sum"]) / float(sums["tokens"])
        out = {"cross_entropy": test_loss, "tokens": float(sums["tokens"])}
        if "code_histogram" in sums:
            counts = np.asarray(sums["code_histogram"], np.float64)
            p = counts[counts > 0] / counts.sum()
            frequency_ce = float(-np.sum(p * np.log(p)))
            out.update(
                frequency_baseline_cross_entropy=frequency_ce,
                nats_below_baseline=frequency_ce - test_loss,
            )
        return out

    def class_labels(self, per_class: int) -> np.ndarray:
        """`[num_classes * per_class]` labels, class-major (one preview row per class)."""
        return np.repeat(np.arange(self.num_classes, dtype=np.int32), per_class)

    def decode(
        self, model: GeneratorModel, tokens: jax.Array, num_tokens: int | None = None
    ) -> jax.Array:
        """Tokens `[B, N, ...]` -> images in [-1, 1] through the frozen tokenizer;
        `num_tokens` decodes only that prefix of a 1D tokenizer's tokens (FlexTok)."""
        grid = tokens.reshape(tokens.shape[0], *self.spec.layout, *tokens.shape[2:])
        prefix = {} if num_tokens is None else {"num_tokens": num_tokens}
        return jnp.clip(model.tokenizer.decode(grid, **prefix), -1.0, 1.0)

    def preview(self, model: GeneratorModel, batch: Batch) -> jax.Array:
        """Samples, one row per class: `[num_classes, per_class, H, W, 3]`; for text,
        one row per caption of the batch's first `R = min(PREVIEW_CAPTIONS, B)`
        examples: `[R, per_class, H, W, 3]`."""
        per = self.preview_per_class
        if self.text_encoder is not None:
            text = batch["text"][:PREVIEW_CAPTIONS]
            rows, cond = text.shape[0], jnp.repeat(text, per, axis=0)
        else:
            rows, cond = self.num_classes, jnp.asarray(self.class_labels(per))
        sampler = METHODS[model.generator.method][0]
        tokens, _ = sampler(model.generator, cond, jax.random.key(0), self.sample_options)
        images = self.decode(model, tokens)
        return images.reshape(rows, per, *images.shape[1:])


class TokenBatchTask:
    """The generator task's training loss on token batches (`{"tokens", "label"}`, what a
    token cache feeds), with no tokenizer: a `visgen.train.task.Task` for timing the
    step and for tests. `generator`: `make_generator` arguments; `spec`: the tokens'."""

    def __init__(self, generator: dict[str, Any], spec: TokenSpec):
        self.generator = dict(generator, spec=spec)

    def build(self, rngs: nnx.Rngs) -> nnx.Module:
        return make_generator(**self.generator, rngs=rngs)

    def loss(self, model, batch: Batch, rng: jax.Array, step: jax.Array):
        del step
        loss = model.loss(batch["tokens"], batch["label"], train=True, rng=rng)
        return loss, {"cross_entropy": loss}, None

    def after_update(self, model, aux, rng: jax.Array) -> None:
        del model, aux, rng


def _diffusion_sums(
    generator: nnx.Module, tokens: jax.Array, cond: jax.Array, m: jax.Array
) -> dict[str, jax.Array]:
    """The diffusion head's evaluation sums over a batch of latents `[B, N, C]` (example
    weights `m` `[B]`): its loss and epsilon MSE over the counted tokens (a masked
    generator's masked ones), and the latents' per-channel sums for the baseline."""
    if isinstance(generator, MaskedGenerator):
        mse, bound, counted = generator.loss_terms(tokens, cond)
    else:
        hidden = generator.hidden_states(tokens, cond)
        steps = generator.trunk_input.to_steps(tokens)
        mse, bound = (
            generator.trunk_input.from_steps(x)
            for x in generator.head.loss_terms(hidden, steps, None)
        )
        counted = jnp.ones_like(mse)
    w = m[:, None] * counted
    x = tokens.astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(w * (mse + bound)),
        "mse_sum": jnp.sum(w * mse),
        "tokens": jnp.sum(w),
        "latent_sum": jnp.einsum("b,bnc->c", m, x),
        "latent_sq_sum": jnp.einsum("b,bnc->c", m, x * x),
        "latent_count": jnp.sum(m) * x.shape[1],
    }


def _diffusion_summary(sums: dict[str, Any], scale: float) -> dict[str, float]:
    """`diffusion_loss`, `diffusion_mse`, the mean-latent baseline and `latent_std` from
    `_diffusion_sums`' totals (`scale`: the head's latent scale)."""
    count = float(sums["latent_count"])
    mean = np.asarray(sums["latent_sum"], np.float64) / count
    var = np.maximum(np.asarray(sums["latent_sq_sum"], np.float64) / count - mean**2, 0.0)
    tokens = float(sums["tokens"])
    mse = float(sums["mse_sum"]) / tokens
    baseline = gaussian_baseline_mse(cosine_schedule(), scale**2 * var)
    return {
        "diffusion_loss": float(sums["loss_sum"]) / tokens,
        "diffusion_mse": mse,
        "mean_latent_baseline_mse": baseline,
        "mse_below_baseline": baseline - mse,
        "latent_std": float(np.sqrt(np.mean(var))),
        "tokens": tokens,
    }


def _text_args(generator: dict[str, Any], encoder: TextEncoder) -> dict[str, int]:
    """The generator arguments a text encoder fixes: `text_dim = D`, `cls_token_num = L`.

    The encoder is their one source; a generator config that also gives them
    must agree, and a text generator has no classes."""
    args = {"text_dim": int(encoder.dim), "cls_token_num": int(encoder.length)}
    if int(generator.get("num_classes", 0)):
        raise ValueError(
            f"generator.num_classes={generator['num_classes']} with a text encoder: a "
            "generator is class- or text-conditional, not both (set num_classes=0)"
        )
    for key, value in args.items():
        if key in generator and int(generator[key]) != value:
            raise ValueError(
                f"generator.{key}={generator[key]} disagrees with the text encoder's "
                f"{value} (length L -> cls_token_num, dim D -> text_dim); the generator "
                "takes them from the encoder, so leave them out"
            )
    return args
