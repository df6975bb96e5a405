r"""Trains any task from a config file.

  python -m launch.train --config configs/titok.py:tiny --workdir outputs/titok_tiny \
      [--config.train.steps=500 --config.data.batch_size=64]

The config is locked: an unknown `--config.key` fails naming the key. The
whole config is validated (and a generator's tokenizer checkpoint resolved
and pinned) before anything in the workdir is written; then the resolved
config goes to `<workdir>/config.json`. A workdir with checkpoints resumes
from the latest, with its stored pins; a config that would change the stored
run is refused, listing the keys, unless `--allow_config_change`. SIGTERM /
SIGINT save a checkpoint and exit. A user error is one `error:` line on
stderr (`visgen.cli`); `--debug` or `VISGEN_DEBUG=1` shows its traceback.

Exit codes: 0 done; 2 bad input (one line on stderr); 3 stopped on a
non-finite loss (the last good checkpoint stays); 143 stopped by SIGTERM or
SIGINT after saving a checkpoint (run the same command again to resume).
Multi-process jobs (TPU pods, SLURM, `JAX_COORDINATOR_ADDRESS`, or
`VISGEN_COORDINATOR` / `VISGEN_NUM_PROCESSES` / `VISGEN_PROCESS_ID`) call
`visgen.distributed.initialize()` first (`--distributed=auto`).
"""

import sys

from absl import app, flags, logging

from visgen.cli import (
    DEBUG_FLAG,
    EXIT_BAD_INPUT,
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    debug_requested,
    one_line,
    user_errors,
)

_CONFIG = flags.DEFINE_string("config", None, "Config file[:variant], e.g. configs/vq2d.py:tiny.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and images.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"], "Call jax.distributed.initialize()."
)
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir with a config that changes its run."
)
flags.DEFINE_bool("debug", False, "Show the full traceback of a user error (or VISGEN_DEBUG=1).")
flags.mark_flags_as_required(["config", "workdir"])

# `--config.KEY=VALUE` / `--config.KEY VALUE` overrides, taken out of argv before absl
# parses the rest (`visgen.config.apply_overrides` applies them to the locked config).
_OVERRIDES: list[tuple[str, str]] = []
OVERRIDE_PREFIX = "--config."


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """`argv` -> (argv without the config overrides, `[(dotted key, value text)]`)."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(OVERRIDE_PREFIX):
            key, eq, value = arg[len(OVERRIDE_PREFIX) :].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"{arg} needs a value ({arg}=VALUE)")
                i, value = i + 1, argv[i + 1]
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every bad flag one `error:` line and exit status 2."""
    try:
        rest, overrides = split_overrides(argv)
        _OVERRIDES[:] = overrides
        return flags.FLAGS(rest)
    except (flags.Error, ValueError) as error:
        if debug_requested(argv):
            raise
        print(f"error: {one_line(error)} (--help lists the flags)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _wants_distributed() -> bool:
    from visgen.distributed import is_multiprocess_job

    if _DISTRIBUTED.value != "auto":
        return _DISTRIBUTED.value == "yes"
    return is_multiprocess_job()


def main(argv) -> int:
    del argv
    from visgen.config import apply_overrides, load_config_file

    argv = sys.argv[1:] + ([DEBUG_FLAG] if flags.FLAGS.debug else [])
    with user_errors(argv):  # the whole config is read and checked before JAX starts
        config = apply_overrides(load_config_file(_CONFIG.value), _OVERRIDES)

    from visgen.runtime import enable_compilation_cache

    logging.set_verbosity(logging.WARNING)
    if _wants_distributed():
        from visgen.distributed import initialize

        initialize()
    enable_compilation_cache()

    from visgen.tasks.run import train_config
    from visgen.train.loop import NonFiniteError

    try:
        with user_errors(argv):  # bad input (missing dataset or file, unknown component)
            result = train_config(config, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    return EXIT_PREEMPTED if result.stopped_by else 0


if __name__ == "__main__":
    from visgen.huge_pages import use_huge_pages

    use_huge_pages()
    app.run(main, flags_parser=_parse_flags)
