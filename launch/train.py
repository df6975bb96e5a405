r"""Trains any task from a config file.

  python -m launch.train --config configs/titok.py:tiny --workdir outputs/titok_tiny \
      [--config.train.steps=500 --config.data.batch_size=64]

The config is locked: an unknown `--config.key` fails naming the key. The
resolved config goes to `<workdir>/config.json`; a workdir with checkpoints
resumes from the latest. SIGTERM / SIGINT save a checkpoint and exit cleanly.
Multi-process jobs (TPU pods, SLURM, `JAX_COORDINATOR_ADDRESS`) call
`jax.distributed.initialize()` first (`--distributed=auto`).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and images.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"], "Call jax.distributed.initialize()."
)
flags.mark_flags_as_required(["config", "workdir"])


def _wants_distributed() -> bool:
    if _DISTRIBUTED.value != "auto":
        return _DISTRIBUTED.value == "yes"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or bool(
        os.environ.get("JAX_COORDINATOR_ADDRESS")
    )


def main(argv) -> int:
    del argv
    import jax

    from visgen.runtime import enable_compilation_cache

    logging.set_verbosity(logging.WARNING)
    if _wants_distributed():
        jax.distributed.initialize()
    enable_compilation_cache()

    from visgen.tasks.run import train_config
    from visgen.train.loop import NonFiniteError

    try:
        train_config(_CONFIG.value, _WORKDIR.value)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, KeyError, ValueError) as e:
        # Bad input (missing dataset or file, unknown component, bad shape): one clear line.
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    app.run(main)
