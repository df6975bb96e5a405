"""rFID and pFID of a tokenizer: FID of its reconstructions against the originals.

`reconstruction_fid` encodes every image of a split and decodes it from its
tokens (`decode(encode(x).tokens)`, or its latents for continuous
tokenizers); it reports the FID of the reconstructions against the originals,
global PSNR, mean per-image PSNR and SSIM (0-255 scale), and, with a dataset
classifier as the feature network, its class accuracy on originals and
reconstructions. pFID is the same with each token perturbed at rate alpha
first (`visgen.evaluation.perturbation`); alpha 0 is the rFID itself,
computed by the same compiled function. Per batch the perturbation of every
alpha uses one key, so a token replaced at a rate is also replaced at every
higher rate (nested perturbations make pFID across alphas less noisy).

Per batch, one jitted call encodes (and featurises the originals), and per
alpha one jitted call perturbs the tokens and one decodes and featurises the
reconstructions; every program is compiled once per process. Keeping the
perturbation out of the decode program means rFID and pFID at alpha 0 decode
the same tokens with the same program, so they agree exactly.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.evaluation.features import (
    FeatureNetwork,
    apply_features,
    check_batch_size,
    describe,
    fold_time,
)
from visgen.evaluation.perturbation import nearest_codes, perturb_counted


def has_codebook(tokenizer) -> bool:
    """Whether `tokenizer`'s tokens are ids into its quantizer's codebook `quantizer.codes()`."""
    return tokenizer.spec.kind == "discrete"


@functools.cache
def _tokenizer_fns(
    tok_graph, feat_graph, discrete: bool, num_tokens: int | None = None
) -> tuple[Callable, Callable]:
    """Jitted `encode(tok_state, feat_state, x) -> (codes, reference features)` and
    `decode(tok_state, feat_state, codes, x) -> per-frame features, predicted classes
    and metrics`. Reference features come with their logits.

    `x` is a batch `[B, H, W, 3]` (or `[B, T, H, W, 3]`) in [-1, 1]; codes are
    token ids `[B, *layout]` (discrete) or latents `[B, *layout, C]`. `num_tokens`
    decodes only that prefix of the tokens (1D tokenizers: FlexTok, TiTok).
    """
    from visgen.metrics import image

    prefix = {} if num_tokens is None else {"num_tokens": num_tokens}

    @jax.jit
    def encode(tok_state, feat_state, x):
        enc = nnx.merge(tok_graph, tok_state).encode(x)
        ref = image.to_255(fold_time(x))
        return enc.tokens if discrete else enc.latents, apply_features(feat_graph, feat_state, ref)

    @jax.jit
    def decode(tok_state, feat_state, codes, x):
        ref = image.to_255(fold_time(x))
        rec = image.to_255(fold_time(nnx.merge(tok_graph, tok_state).decode(codes, **prefix)))
        features, logits = apply_features(feat_graph, feat_state, rec)
        return {
            "features": features,
            "predicted": jnp.argmax(logits, axis=-1),
            "squared_error": image.squared_error(rec, ref),
            "psnr": image.psnr(rec, ref),
            "ssim": image.ssim(rec, ref),
        }

    return encode, decode


def reconstruction_fid(
    tokenizer,
    data,
    features: FeatureNetwork,
    *,
    alphas: Sequence[float] = (),
    delta: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    max_examples: int = 0,
    num_tokens: int | None = None,
) -> dict:
    """rFID, PSNR and SSIM of `tokenizer` on `data.eval_split`, and pFID at `alphas`.

    Args:
      tokenizer: a `visgen.tokenizers.Tokenizer` module (images or videos;
        video frames count as images).
      data: the `DataConfig` to read (`eval_split`, first `max_examples`).
      features: the feature network.
      alphas: perturbation rates for pFID (needs a codebook); rFID is alpha 0.
      delta: neighbours per code (clipped to the codebook size - 1).
      seed: seeds the perturbations (batch `i` uses `fold_in(key(seed), i)`).
      num_tokens: decode only the first `num_tokens` tokens (a 1D tokenizer's prefix);
        None decodes them all.

    Returns:
      JSON-able dict: `rfid`, `psnr`, `psnr_per_image`, `ssim`, `frames` and,
      with alphas, `pfid` and `replaced_fraction` keyed by `f"{alpha:g}"`.
      With the feature network a classifier of this dataset (`info["dataset"]`),
      also `class_accuracy` (of the reconstructions; keyed by alpha with
      alphas) and `class_accuracy_originals`: how often the classifier finds
      each image's class after and before the round trip through the tokens.
    """
    from visgen.data import make_eval_iterator, num_examples
    from visgen.metrics import image
    from visgen.metrics.fid import FeatureStats, frechet_distance
    from visgen.train.progress import progress_bar
    from visgen.train.sharding import global_batch, make_mesh, replicated

    discrete = has_codebook(tokenizer)
    if alphas and not discrete:
        raise ValueError(
            f"pfid perturbs tokens within a codebook, but this tokenizer's tokens are "
            f"{tokenizer.spec.kind} with no codebook (quantizer "
            f"{type(tokenizer.quantizer).__name__})"
        )
    mesh = make_mesh(-1, 1)
    check_batch_size(batch_size, mesh)
    rates = [0.0, *(float(a) for a in alphas)]
    tok_graph, tok_state = nnx.split(tokenizer)
    tok_state = jax.device_put(tok_state, replicated(mesh))
    feat_state = jax.device_put(features.state, replicated(mesh))
    neighbours = None
    if alphas:
        codebook = tokenizer.quantizer.codes()  # [K, D], in the space tokens are searched in
        neighbours = jax.device_put(nearest_codes(codebook, delta), replicated(mesh))
    if num_tokens is not None and (
        len(tokenizer.spec.layout) != 1 or not 1 <= num_tokens <= tokenizer.spec.num_tokens
    ):
        raise ValueError(
            f"num_tokens decodes a prefix of a 1D tokenizer's tokens: it must be in "
            f"1..{tokenizer.spec.num_tokens} for layout {tuple(tokenizer.spec.layout)}, "
            f"got {num_tokens}"
        )
    encode, decode = _tokenizer_fns(tok_graph, features.graphdef, discrete, num_tokens)

    total = num_examples(data, data.eval_split)
    if max_examples:
        total = min(total, max_examples)
    num_batches = math.ceil(total / batch_size)
    batches = make_eval_iterator(data, batch_size=batch_size, max_examples=total)
    ref_stats = FeatureStats()
    rec_stats = [FeatureStats() for _ in rates]
    sums = [dict(replaced=0.0, squared_error=0.0, psnr=0.0, ssim=0.0, hits=0) for _ in rates]
    # Class accuracy only from a classifier trained on this very dataset's labels.
    classify = features.info.get("dataset") == data.name
    original_hits = 0
    frames = pixels = tokens_seen = 0
    base_key = jax.random.PRNGKey(seed)
    bar = progress_bar(batches, total=num_batches, desc="reconstruct")
    for i, local in enumerate(bar):
        batch = global_batch(local, mesh)
        x = batch["image"]
        per_example = x.shape[1] if x.ndim == 5 else 1  # video frames per clip
        keep = np.repeat(np.asarray(batch["mask"]), per_example)
        codes, (ref_features, ref_logits) = encode(tok_state, feat_state, x)
        ref_stats.update(np.asarray(ref_features)[keep])
        labels = np.repeat(np.asarray(batch["label"]), per_example)
        if classify:
            original_hits += int((np.asarray(ref_logits).argmax(-1) == labels)[keep].sum())
        frames += int(keep.sum())
        pixels += int(keep.sum()) * math.prod(x.shape[-3:])
        tokens_seen += int(np.asarray(batch["mask"]).sum()) * math.prod(codes.shape[1:])
        key = jax.random.fold_in(base_key, i)
        mask = np.asarray(batch["mask"])
        for j, alpha in enumerate(rates):
            # rFID decodes the encoder's own tokens; every alpha > 0 perturbs them
            # first (with one key per batch), then runs the same decode program.
            perturbed = codes
            if j > 0:
                perturbed, replaced = perturb_counted(codes, neighbours, jnp.float32(alpha), key)
                sums[j]["replaced"] += float(np.asarray(replaced)[mask].sum())
            out = jax.device_get(decode(tok_state, feat_state, perturbed, x))
            rec_stats[j].update(out["features"][keep])
            if classify:
                sums[j]["hits"] += int((out["predicted"] == labels)[keep].sum())
            for name in ("squared_error", "psnr", "ssim"):
                sums[j][name] += float(np.asarray(out[name], np.float64)[keep].sum())
    if frames < 2:
        raise ValueError(f"FID needs at least 2 images, the split gave {frames}")
    mu_ref, sigma_ref = ref_stats.stats()
    fids = [frechet_distance(*s.stats(), mu_ref, sigma_ref) for s in rec_stats]
    result = {
        "rfid": fids[0],
        "psnr": float(image.psnr_from_mse(sums[0]["squared_error"] / pixels)),
        "psnr_per_image": sums[0]["psnr"] / frames,
        "ssim": sums[0]["ssim"] / frames,
        "frames": frames,
    }
    if classify:
        result["class_accuracy_originals"] = original_hits / frames
        result["class_accuracy"] = sums[0]["hits"] / frames
    if alphas:
        keys = [f"{a:g}" for a in rates]
        result["delta"] = int(neighbours.shape[1])
        result["pfid"] = dict(zip(keys, fids, strict=True))
        result["replaced_fraction"] = {
            k: s["replaced"] / tokens_seen for k, s in zip(keys, sums, strict=True)
        }
        result["psnr_perturbed"] = {
            k: float(image.psnr_from_mse(s["squared_error"] / pixels))
            for k, s in zip(keys, sums, strict=True)
        }
        if classify:
            result["class_accuracy"] = {
                k: s["hits"] / frames for k, s in zip(keys, sums, strict=True)
            }
    return result


def workdir_fid(
    workdir: str,
    features: FeatureNetwork,
    *,
    split: str = "",
    data_dir: str = "",
    alphas: Sequence[float] = (),
    delta: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    max_examples: int = 0,
    num_tokens: int | None = None,
) -> dict:
    """`reconstruction_fid` of a tokenizer workdir's EMA weights on its own data config
    (`num_tokens`: decode that prefix of the tokens)."""
    from visgen.data import DataConfig
    from visgen.tasks import make_task
    from visgen.tasks.restore import load_trained
    from visgen.train.workdir import load_config

    config = load_config(workdir)
    if config.task != "tokenizer":
        raise ValueError(f"{workdir} holds a {config.task!r} task, not a tokenizer")
    if alphas:
        # Checked on the abstract model, before any weights or data are read.
        abstract = nnx.eval_shape(lambda: make_task(config).build(nnx.Rngs(0)))
        if not has_codebook(abstract.tokenizer):
            raise ValueError(
                f"pfid needs a tokenizer with a codebook; {workdir} has "
                f"{abstract.tokenizer.spec.kind} tokens ({config.tokenizer.name}, "
                f"quantizer {config.tokenizer.quantizer.name!r})"
            )
    config, _, model, step = load_trained(workdir)
    data = DataConfig(**config.data)
    data = dataclasses.replace(
        data,
        eval_split=split or data.eval_split,
        data_dir=data_dir or data.data_dir,
        random_flip=False,
    )
    tokenizer = model.tokenizer
    result = reconstruction_fid(
        tokenizer,
        data,
        features,
        alphas=alphas,
        delta=delta,
        seed=seed,
        batch_size=batch_size,
        max_examples=max_examples,
        num_tokens=num_tokens,
    )
    head = {
        "mode": "pfid" if alphas else "rfid",
        **describe(features),
        "workdir": workdir,
        "step": step,
        "dataset": data.name,
        "split": data.eval_split,
        "seed": seed,
    }
    if num_tokens is not None:
        head["num_tokens"] = num_tokens
    return {**head, **result}
