"""Token caches: a frozen tokenizer's token ids of a train split, computed once.

A generator trained "on the fly" runs the tokenizer's encoder inside every
train step. A cache runs it once over the train split and stores the ids in
an array_record file that the input pipeline then reads instead of images
(`DataConfig.token_cache`). Layout of a cache directory:

- `tokens.array_record`: one record per example, little-endian int32
  `[1 + N]`: the class label (-1 if none), then the `N` token ids in the
  raster order of the tokenizer's layout. With `flips`, every example is
  stored twice, as is and mirrored (records `2i` and `2i + 1`), so the
  shuffle's pick among the `2M` records plays the pipeline's random flip (an
  epoch is then `2M` records).
- `metadata.json` (format `visgen-token-cache-v2`): what made it: the
  tokenizer's workdir, checkpoint step and `fingerprint` (SHA-256 of its EMA
  weights), its token spec (`TokenSpec.to_dict()`: kind, layout, vocabulary),
  and the dataset, split and image size. `check_cache` refuses a cache made
  by any other tokenizer checkpoint, with another token spec or from other
  data, naming both; a v1 cache (no spec recorded) must be rebuilt.

Written to a temporary name and renamed into place, so an interrupted build
leaves no cache that looks complete. The build reads the split in order on
one process (other processes of a multi-process run must find it built).
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from visgen.token_spec import TokenSpec

CACHE_FILE = "tokens.array_record"
METADATA_FILE = "metadata.json"
FORMAT = "visgen-token-cache-v2"
# Earlier formats, each with why it can no longer be read.
OLD_FORMATS = {"visgen-token-cache-v1": "it does not record the token spec"}
# What must agree between a cache and the run that reads it.
DATA_KEYS = ("name", "builder_config", "folder", "train_split", "image_size", "random_flip")


def fingerprint(state: Any) -> str:
    """SHA-256 over a pytree's leaves (paths, dtypes, shapes and bytes), hex."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class TokenizerRecord:
    """Which tokenizer checkpoint made (or must have made) a cache, and its tokens' spec."""

    workdir: str
    step: int
    fingerprint: str
    spec: TokenSpec

    def describe(self) -> str:
        return f"{self.workdir} step {self.step} (fingerprint {self.fingerprint[:12]})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe values, as `metadata.json` stores them."""
        return {
            "workdir": self.workdir,
            "step": self.step,
            "fingerprint": self.fingerprint,
            "spec": self.spec.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TokenizerRecord":
        return cls(**{**values, "spec": TokenSpec.from_dict(values["spec"])})


def _data_record(data_cfg) -> dict[str, Any]:
    return {key: getattr(data_cfg, key) for key in DATA_KEYS}


def read_metadata(directory: str) -> dict[str, Any] | None:
    """The cache's metadata, or None if `directory` holds no complete cache."""
    path = os.path.join(directory, METADATA_FILE)
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(directory, CACHE_FILE))):
        return None
    with open(path) as f:
        metadata = json.load(f)
    made = metadata.get("format")
    if made in OLD_FORMATS:
        raise ValueError(
            f"{path} is a {made} token cache, which this version cannot read "
            f"({OLD_FORMATS[made]}): rebuild it (delete {directory} or point "
            "data.token_cache at a new directory; it is built there)"
        )
    if made != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} token cache (format {made})")
    return metadata


def check_cache(directory: str, tokenizer: TokenizerRecord, data_cfg) -> dict[str, Any]:
    """The metadata of the cache in `directory`, after checking it fits the run.

    Raises:
      FileNotFoundError: no complete cache there.
      ValueError: made by another tokenizer checkpoint, with another token
        spec, from other data, or in an older format.
    """
    metadata = read_metadata(directory)
    if metadata is None:
        raise FileNotFoundError(f"no token cache in {directory} (build it with build_token_cache)")
    made_by = TokenizerRecord.from_dict(metadata["tokenizer"])
    if made_by.fingerprint != tokenizer.fingerprint:
        raise ValueError(
            f"the token cache in {directory} was made by tokenizer {made_by.describe()}, "
            f"but this run tokenizes with {tokenizer.describe()}; point "
            "data.token_cache at a new directory (it is built there) or use that tokenizer"
        )
    if made_by.spec != tokenizer.spec:
        raise ValueError(
            f"the token cache in {directory} holds tokens of spec {made_by.spec.describe()} "
            f"({made_by.spec.to_dict()}), but this run's tokenizer makes "
            f"{tokenizer.spec.describe()} ({tokenizer.spec.to_dict()}); point "
            "data.token_cache at a new directory (it is built there)"
        )
    wanted = _data_record(data_cfg)
    if metadata["data"] != wanted:
        cached = metadata["data"]
        diff = {k: (cached.get(k), v) for k, v in wanted.items() if cached.get(k) != v}
        raise ValueError(
            f"the token cache in {directory} was made from other data: (cache, run) = {diff}"
        )
    return metadata


def build_token_cache(
    directory: str,
    encode: Callable[[np.ndarray], np.ndarray],
    batches: Iterator[dict],
    num_batches: int,
    tokenizer: TokenizerRecord,
    data_cfg,
    *,
    progress: Callable[..., Iterable[dict]] | None = None,
) -> dict[str, Any]:
    """Tokenizes a split into `directory` and returns the cache's metadata.

    Args:
      directory: where the cache goes (created; a complete cache there is an error).
      encode: images `[B, H, W, 3]` in [-1, 1] -> token ids `[B, N]` int, `N` the
        spec's `ids_per_example`.
      batches: one ordered pass over the split, `{"image", "label", "mask"}`
        (`visgen.data.make_eval_iterator` over the train split).
      num_batches: how many `batches` yields (for `progress`).
      tokenizer: what is encoding, recorded in the metadata; its spec must have
        integer ids (not `continuous`).
      data_cfg: the `DataConfig` it was read with (its flip setting decides
        whether mirrored copies are stored).
      progress: wraps the batches to report progress,
        `progress(batches, total=num_batches, desc=...)` (e.g.
        `visgen.train.progress.progress_bar`, which the data layer may not
        import itself); None reads them silently.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    if read_metadata(directory) is not None:
        raise ValueError(f"{directory} already holds a token cache")
    per_record = tokenizer.spec.ids_per_example
    if per_record == 0:
        raise ValueError(
            f"token caches store integer ids; the tokenizer makes {tokenizer.spec.describe()}"
        )
    if progress is not None:
        batches = progress(batches, total=num_batches, desc="token cache")
    os.makedirs(directory, exist_ok=True)
    partial = os.path.join(directory, CACHE_FILE + ".partial")
    writer = ArrayRecordWriter(partial, "group_size:1")
    count = 0
    try:
        for batch in batches:
            keep = np.asarray(batch["mask"])
            images = np.asarray(batch["image"])
            versions = [encode(images)]
            if data_cfg.random_flip:
                versions.append(encode(images[..., ::-1, :]))
            if np.shape(versions[0])[1:] != (per_record,):
                raise ValueError(
                    f"encode returned ids {np.shape(versions[0])}, expected [B, {per_record}] "
                    f"for {tokenizer.spec.describe()}"
                )
            labels = np.asarray(batch["label"], np.int32)
            for i in np.flatnonzero(keep):
                for tokens in versions:
                    record = np.concatenate([labels[i : i + 1], np.asarray(tokens[i], np.int32)])
                    writer.write(record.astype("<i4").tobytes())
                    count += 1
    finally:
        writer.close()
    if count == 0:
        os.remove(partial)
        raise ValueError("the split to cache is empty")
    metadata = {
        "format": FORMAT,
        "tokenizer": tokenizer.to_dict(),
        "data": _data_record(data_cfg),
        "flips": bool(data_cfg.random_flip),
        "records": count,
        "tokens_per_record": per_record,
    }
    os.replace(partial, os.path.join(directory, CACHE_FILE))
    tmp = os.path.join(directory, METADATA_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(metadata, f, indent=2)
    os.replace(tmp, os.path.join(directory, METADATA_FILE))
    return metadata


class TokenCacheSource(Sequence):
    """The records of a cache as `{"tokens": int32 [N], "label": int32}` (a grain source)."""

    def __init__(self, directory: str):
        import grain

        metadata = read_metadata(directory)
        if metadata is None:
            raise FileNotFoundError(f"no token cache in {directory}")
        self.name = f"token cache {directory}"
        self.tokens_per_record = metadata["tokens_per_record"]
        self._source = grain.sources.ArrayRecordDataSource(os.path.join(directory, CACHE_FILE))
        if len(self._source) != metadata["records"]:
            raise ValueError(
                f"{directory}: {len(self._source)} records, metadata says {metadata['records']}"
            )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        record = np.frombuffer(self._source[index], "<i4")
        if record.shape != (1 + self.tokens_per_record,):
            raise ValueError(f"{self.name}: record {index} has {record.size} values")
        return {"tokens": record[1:].astype(np.int32), "label": np.int32(record[0])}
