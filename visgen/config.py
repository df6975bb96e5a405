"""Config helpers shared by `configs/*.py`: variant strings and the common sections.

`get_config(arg)` in a config file receives the text after the colon in
`--config configs/titok.py:size=S,tokens=128`; `parse_variant` turns it into a
dict, rejecting keys the file does not know.

The typed sections come from light modules (`visgen.data.config`,
`visgen.train.config`), so reading a config file imports neither orbax nor
grain nor TFDS (tests/test_config.py checks every `configs/*.py`).
"""

import dataclasses
from typing import Any

import ml_collections

from visgen.data.config import DataConfig
from visgen.train.config import OptimConfig, TrainConfig


def parse_variant(arg: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """`"tiny,size=S,tokens=128"` -> defaults updated; a bare word sets `word=True`.

    Values are converted to the type of the default; unknown keys fail listing
    the valid ones.
    """
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config variant {key!r}; valid: {', '.join(defaults)}")
        default = defaults[key]
        if not value:
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif default is None:
            out[key] = value
        else:
            out[key] = type(default)(value)
    return out


def section(cls, **overrides) -> ml_collections.ConfigDict:
    """A ConfigDict with every field of the typed dataclass `cls` (defaults + overrides)."""
    values = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def base_config(task: str) -> ml_collections.ConfigDict:
    """The sections every training config has: data, train, optim (typed defaults)."""
    config = ml_collections.ConfigDict()
    config.task = task
    config.dtype = "float32"
    config.data = section(DataConfig)
    config.train = section(TrainConfig)
    config.optim = section(OptimConfig)
    return config


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`"configs/titok.py:tiny"` -> that file's `get_config("tiny")`, locked."""
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_visgen_config", path)
    if module_spec is None or not path.endswith(".py"):
        raise FileNotFoundError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    config.lock()
    return config
