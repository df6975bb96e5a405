r"""Trains any task from a config file.

  python -m launch.train --config configs/titok.py:tiny --workdir outputs/titok_tiny \
      [--config.train.steps=500 --config.data.batch_size=64]

The config is locked: an unknown `--config.key` fails naming the key. The
whole config is validated (and a generator's tokenizer checkpoint resolved
and pinned) before anything in the workdir is written; then the resolved
config goes to `<workdir>/config.json`. A workdir with checkpoints resumes
from the latest, with its stored pins; a config that would change the stored
run is refused, listing the keys, unless `--allow_config_change`. SIGTERM /
SIGINT save a checkpoint and exit.

Exit codes: 0 done; 2 bad input (one line on stderr); 3 stopped on a
non-finite loss (the last good checkpoint stays); 143 stopped by SIGTERM or
SIGINT after saving a checkpoint (run the same command again to resume).
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
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir with a config that changes its run."
)
flags.mark_flags_as_required(["config", "workdir"])

# Exit codes (see the module docstring).
EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_PREEMPTED = 2, 3, 143


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
        result = train_config(
            _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value
        )
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (FileNotFoundError, KeyError, ValueError) as e:
        # Bad input (missing dataset or file, unknown component, bad shape): one clear line.
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_PREEMPTED if result.stopped_by else 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    app.run(main)
