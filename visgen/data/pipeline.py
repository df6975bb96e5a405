"""grain input pipelines: an endless shuffled train stream and one ordered eval pass.

Batches are dicts of numpy arrays, per process:

    "image":   float32 [b, H, W, 3] (images) or [b, T, H, W, 3] (videos), in [-1, 1]
    "label":   int32 [b], -1 where the dataset has no labels
    "caption": str [b], only when `with_captions`
    "mask":    bool [b], eval only: False on the padding that fills the last batch
    "tokens":  int32 [b, N], instead of "image" in train batches read from a
               token cache (`DataConfig.token_cache`, `visgen.data.token_cache`)

where b = batch_size // jax.process_count(). The train stream is a pure
function of the seed: the shuffle and every random crop/flip are seeded from
it and the example's position, so the iterator's `get_state()` (a few
integers, checkpointed with the model) resumes it exactly.
"""

import dataclasses
import math
import os
from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from visgen.data.config import DataConfig
from visgen.data.preprocess import mirror_caption, preprocess_image, preprocess_video
from visgen.data.sources import FolderSource, TfdsSource, make_source
from visgen.data.token_cache import TokenCacheSource


def _source(cfg: DataConfig, split: str) -> TfdsSource | FolderSource:
    source = make_source(
        cfg.name,
        split,
        builder_config=cfg.builder_config,
        data_dir=cfg.data_dir,
        manual_dir=cfg.manual_dir,
        folder=cfg.folder,
    )
    if cfg.num_frames > 0 and source.kind != "video":
        raise ValueError(
            f"num_frames={cfg.num_frames} asks for video clips but {source.name} holds "
            "images; set num_frames=0"
        )
    if cfg.num_frames == 0 and source.kind == "video":
        raise ValueError(
            f"{source.name} holds videos; set num_frames > 0 to read clips of that many frames"
        )
    if len(source) == 0:
        raise ValueError(f"split {split!r} of {source.name} is empty")
    # Preprocess one example here, so a shape or channel mismatch fails now,
    # naming the dataset, rather than later inside a reader thread.
    try:
        _Preprocess(cfg, train=False)(source[0])
    except ValueError as error:
        raise ValueError(f"split {split!r} of {source.name} does not fit {cfg}: {error}") from error
    return source


def _per_process(batch_size: int) -> int:
    count = jax.process_count()
    if batch_size < 1 or batch_size % count:
        raise ValueError(
            f"global batch size {batch_size} must be a positive multiple of the "
            f"process count {count}"
        )
    return batch_size // count


@dataclasses.dataclass(frozen=True)
class _Preprocess:
    """Record -> model example; random clip start and flip only when `train`."""

    cfg: DataConfig
    train: bool

    def __call__(self, record: dict[str, Any], rng: np.random.Generator | None = None) -> dict:
        cfg = self.cfg
        rng = rng if self.train else None
        flip = bool(rng is not None and cfg.random_flip and rng.random() < 0.5)
        if cfg.num_frames > 0:
            pixels = preprocess_video(
                record["video"], cfg.image_size, cfg.num_frames, cfg.frame_stride, rng, flip
            )
        else:
            pixels = preprocess_image(record["image"], cfg.image_size, flip)
        example = {"image": pixels, "label": np.int32(record["label"])}
        if cfg.with_captions:
            # A mirrored image swaps what is on the left and on the right.
            caption = mirror_caption(record["caption"]) if flip else record["caption"]
            example["caption"] = np.str_(caption)
        return example


def _read_options() -> grain.ReadOptions:
    # Each element is a whole batch by the time it is read ahead, so a small
    # buffer suffices; grain's default of 500 would hold 500 batches.
    threads = min(8, os.cpu_count() or 1)
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)


def _cached_tokens(record: dict, rng: np.random.Generator) -> dict:
    """A token-cache record is already model input (mirrored copies are records of their own)."""
    del rng
    return record


def make_train_iterator(cfg: DataConfig) -> grain.DatasetIterator:
    """Returns an endless iterator of shuffled, augmented train batches.

    The stream is one global stream, the same for any process count: the
    shuffle, crops and flips are seeded from `cfg.seed` and the example's
    global position, global batch k is positions `k*B ... (k+1)*B - 1`, and
    process p reads only its part of it, rows `p*b ... (p+1)*b - 1` (what
    `visgen.train.sharding.global_batch` puts on its devices). So P processes
    train on exactly the batches one process would, and in an epoch no example
    is read twice or skipped. Each process's iterator state is the number of
    global batches consumed, the same in every process. With `cfg.token_cache`
    the batches are `{"tokens": [b, N], "label": [b]}` from the cache.
    """
    per_process = _per_process(cfg.batch_size)
    if cfg.token_cache:
        source = TokenCacheSource(cfg.token_cache)
        preprocess = _cached_tokens
    else:
        source = _source(cfg, cfg.train_split)
        preprocess = _Preprocess(cfg, train=True)
    index, count = jax.process_index(), jax.process_count()
    # The seed of a one-process run before streams were global, so its batches are unchanged.
    seed = int(np.random.SeedSequence([cfg.seed, 0]).generate_state(1)[0])
    # Process p's batch k is slice number k*count + p of the global stream cut into
    # per-process slices; grain's map datasets are lazy, so only those records are read.
    dataset = (
        grain.MapDataset.source(source)
        .seed(seed)
        .shuffle()
        .repeat()
        .random_map(preprocess)
        .batch(per_process, drop_remainder=True)[index::count]
        .to_iter_dataset(_read_options())
    )
    if cfg.num_workers > 0:
        # grain's worker processes read absl flags; outside an absl app (tests,
        # notebooks) nothing has parsed them, so take their defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
    return iter(dataset)


@dataclasses.dataclass(frozen=True)
class _EvalExample:
    """Global position -> preprocessed example with a mask; pads past the end."""

    source: TfdsSource | FolderSource
    preprocess: _Preprocess
    num_real: int

    def __call__(self, position: int) -> dict:
        # Padding repeats the last real example, so it is valid model input.
        example = self.preprocess(self.source[min(position, self.num_real - 1)])
        example["mask"] = np.bool_(position < self.num_real)
        return example


def make_eval_iterator(
    cfg: DataConfig, *, batch_size: int | None = None, max_examples: int | None = None
) -> Iterator[dict]:
    """Returns one ordered pass over the eval split (the first `max_examples`).

    No random ops. Every batch has a "mask"; the last is padded to full size,
    and every process yields the same number of batches (batch k of process p
    holds global positions k*B + p*b ... k*B + (p+1)*b - 1).
    """
    global_batch = batch_size or cfg.batch_size
    per_process = _per_process(global_batch)
    source = _source(cfg, cfg.eval_split)
    num_real = len(source) if max_examples is None else min(max_examples, len(source))
    if num_real < 1:
        raise ValueError(f"max_examples must be positive, got {max_examples}")
    num_batches = math.ceil(num_real / global_batch)
    offset = jax.process_index() * per_process

    def position(i: int) -> int:
        return (i // per_process) * global_batch + offset + i % per_process

    dataset = (
        grain.MapDataset.range(num_batches * per_process)
        .map(position)
        .map(_EvalExample(source, _Preprocess(cfg, train=False), num_real))
        .batch(per_process)
        .to_iter_dataset(_read_options())
    )
    return iter(dataset)


def num_examples(cfg: DataConfig, split: str) -> int:
    """Number of examples in `split` of the configured dataset (all processes)."""
    return len(_source(cfg, split))
