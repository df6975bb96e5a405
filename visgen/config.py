"""Config helpers shared by `configs/*.py`: variant strings and the common sections.

`get_config(arg)` in a config file receives the text after the colon in
`--config configs/titok.py:size=S,tokens=128`; `parse_variant` turns it into a
dict, rejecting keys the file does not know.

The typed sections come from light modules (`visgen.data.config`,
`visgen.train.config`), so reading a config file imports neither orbax nor
grain nor TFDS (tests/test_config.py checks every `configs/*.py`).
"""

import ast
import dataclasses
import difflib
import os
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
    """`"configs/titok.py:tiny"` -> that file's `get_config("tiny")`, locked.

    Raises FileNotFoundError for a missing file and ValueError for a file that is
    not a config file or a variant string it refuses, each with a one-line message.
    """
    import importlib.util

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found (--config FILE.py[:variant])")
    if not path.endswith(".py"):
        raise ValueError(f"--config must be a .py config file[:variant], got {spec!r}")
    module_spec = importlib.util.spec_from_file_location("_visgen_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config(arg) function")
    try:
        config = module.get_config(arg or None)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config {spec!r}: {e}") from e
    config.lock()
    return config


def _close_match(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _parse_value(key: str, text: str, current: Any, kind: type) -> Any:
    """`text` (a command-line value) as the type of the field it replaces."""
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in _BOOLS:
                raise ValueError(f"expected true or false, got {text!r}")
            return _BOOLS[lowered]
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if kind in (tuple, list):
            value = ast.literal_eval(text)
            if not isinstance(value, tuple | list):
                raise ValueError(f"expected a tuple such as (1, 2), got {text!r}")
            return kind(value)
        try:  # a field without a fixed type (default None): a Python literal, else text
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"--config.{key}={text}: not a valid {kind.__name__} ({e})") from None


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets the dotted `key` of a locked `config` to `text`, parsed as the field's type.

    Raises ValueError (one line) for a key the config lacks (naming the closest
    one), a section given a value, or a value that does not parse as the field's
    type.
    """
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise ValueError(f"unknown config key {here!r}{_close_match(part, keys)}")
        if depth < len(parts) - 1:
            node = node[part]
    leaf = parts[-1]
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ValueError(f"config key {key!r} is a section: set its keys ({', '.join(current)})")
    value = _parse_value(key, text, current, node.get_type(leaf))
    try:
        node[leaf] = value
    except TypeError as e:
        raise ValueError(f"--config.{key}={text}: {e}") from None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[tuple[str, str]]
) -> ml_collections.ConfigDict:
    """`config` with each `(dotted key, text)` of `overrides` applied (`apply_override`)."""
    for key, text in overrides:
        apply_override(config, key, text)
    return config
