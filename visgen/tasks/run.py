"""Train a resolved config in a workdir: what `launch.train`, the demo and tests call.

`train_config(config, workdir)` validates everything before it writes
anything: it builds the task the config names (which loads and checks what
the task depends on), records the task's pins (the exact checkpoints of its
frozen dependencies, e.g. a generator's tokenizer step and weights
fingerprint) in the config, and, when the workdir already holds a run,
refuses a config that would change that run (`ConfigChangeError`, listing
the keys) unless `allow_config_change`, and opens the data's train and eval
splits (checking a class-conditional task's labels). Only then does it run
the shared loop (`visgen.train.loop.train`), which writes
`<workdir>/config.json` (from process 0) once the model is initialised or
restored: a checkpoint that does not fit the model is refused with the stored
config left as it was. A resumed run reuses the stored pins, so it
continues on the same tokens. Running it in-process lets a caller use
components it registered itself (a test's toy head or quantizer) through the
same code path as the command line.
"""

import os
from typing import Any

import jax
import ml_collections

from visgen.data import DataConfig
from visgen.data.sources import check_splits
from visgen.tasks import make_task, task_class
from visgen.train.loop import TrainConfig, TrainResult, train
from visgen.train.optim import OptimConfig
from visgen.train.workdir import CONFIG_FILE, load_config, save_config

# Keys that change how a run is logged, checkpointed or where it reads its files, not what
# it computes: a resume may change them freely.
BOOKKEEPING = (
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.eval_examples",
    "train.keep_checkpoints",
    "train.async_checkpoints",
    "train.tensorboard",
    "data.data_dir",
    "preview_per_class",
)


class ConfigChangeError(ValueError):
    """A resume whose config would change the stored run."""


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict | dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def changed_keys(stored: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> list[str]:
    """The keys whose values differ between two configs, bookkeeping keys excluded."""
    old, new = _flat(stored), _flat(config)
    keys = sorted(k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>"))
    return [k for k in keys if k not in BOOKKEEPING]


def _has_run(workdir: str) -> bool:
    checkpoints = os.path.join(workdir, "checkpoints")
    return os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))


def train_config(
    config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> TrainResult:
    """Trains `config` in `workdir` (resuming from its latest checkpoint); see the module doc.

    Raises:
      ConfigChangeError: `workdir` holds a run of another config (the differing keys
        are listed); nothing in the workdir changes.
      ValueError, FileNotFoundError, KeyError: bad input found while building the task.
    """
    if config.train.steps <= 0:
        raise ValueError(f"train.steps must be positive, got {config.train.steps}")
    stored = load_config(workdir) if _has_run(workdir) else None
    config = ml_collections.ConfigDict(config.to_dict())  # ours to resolve; the caller's stays
    task = make_task(_with_stored_pins(config, stored))
    config.update(task.pins())
    if stored is not None and not allow_config_change:
        changed = changed_keys(stored, config)
        if changed:
            old, new = _flat(stored), _flat(config)
            detail = "; ".join(
                f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in changed[:6]
            )
            raise ConfigChangeError(
                f"{workdir} holds a run of another config ({len(changed)} keys differ: {detail}); "
                f"resume with the stored config ({os.path.join(workdir, CONFIG_FILE)}), or pass "
                "--allow_config_change to continue with this one"
            )
    # Both splits exist, and a class-conditional task's labels fit its classes, before the
    # workdir is touched (a folder without eval images, `--config.data.name=digits` on a
    # 5-class generator). Tasks without classes (tokenizers) have no `num_classes`.
    check_splits(DataConfig(**config.data), num_classes=getattr(task, "num_classes", 0))
    # config.json is written once the model is initialised or restored from the workdir's
    # checkpoint: a checkpoint that does not fit (a changed model under
    # --allow_config_change) is refused with the stored config left as it was.
    on_start = (lambda: save_config(workdir, config)) if jax.process_index() == 0 else None
    return train(
        task,
        workdir,
        TrainConfig(**config.train),
        DataConfig(**config.data),
        OptimConfig(**config.optim),
        on_start=on_start,
    )


def _with_stored_pins(config, stored) -> ml_collections.ConfigDict:
    """`config` with the stored run's pins where `config` leaves them unresolved (at the
    task's `UNPINNED` values)."""
    if stored is None:
        return config
    for key, unset in task_class(config.task).UNPINNED.items():
        if key in config and config[key] == unset and key in stored:
            config[key] = stored[key]
    return config
