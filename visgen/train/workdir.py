"""A training workdir's resolved config: `<workdir>/config.json`.

`launch.train` writes it beside `checkpoints/`; everything that reads a
workdir back starts here. Restoring the trained model is a task-level step
(`visgen.tasks.restore`), since only a task knows how to build the model.
"""

import json
import os

import ml_collections

CONFIG_FILE = "config.json"


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{workdir} is not a training workdir: {CONFIG_FILE} is missing "
            "(train one with `python -m launch.train --config ... --workdir DIR`)"
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
