"""User errors as one line, tracebacks on request: what every entry point does on bad input.

A user error (a missing file, a mistyped config key, a bad flag value, a dataset
that does not fit the model) is printed as one line, `error: <what was wrong>`,
on stderr, and the command exits with status 2 (`EXIT_BAD_INPUT`). A bug (any
other exception) keeps its traceback. `--debug` on the command line, or
`VISGEN_DEBUG=1` in the environment, re-raises user errors too, so their full
traceback shows.

Used by `launch.train`, `launch.sample`, `evals.fid` and `evals.recon`:

    with user_errors(argv):
        ...  # raises UsageError, ValueError, FileNotFoundError, ...

Exit codes shared by the entry points: 0 done, 2 bad input; `launch.train`
adds 3 (stopped on a non-finite loss) and 143 (preempted: SIGTERM / SIGINT,
checkpoint saved).
"""

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

EXIT_OK, EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_PREEMPTED = 0, 2, 3, 143
DEBUG_FLAG = "--debug"
DEBUG_ENV = "VISGEN_DEBUG"
MAX_CHARS = 600  # a longer message is cut, with a pointer to --debug


class UsageError(ValueError):
    """Bad input to a command: printed as one `error: ...` line with exit status 2."""


class BadFileError(Exception):
    """A file in the input that cannot be used (a corrupt image in a dataset folder): a user
    error that is not a ValueError, so callers that wrap ValueErrors pass it on unchanged."""


# Exceptions that mean the input was wrong, not the code. `OSError`s other than these
# (a full disk, a dropped mount) keep their traceback.
USER_ERRORS = (
    ValueError,
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    BadFileError,
)


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether `--debug` is among `argv` (default `sys.argv`) or `VISGEN_DEBUG` is set."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return DEBUG_FLAG in argv or env not in ("", "0", "false", "no")


def one_line(error: BaseException) -> str:
    """`error`'s message on one line, cut to `MAX_CHARS` (`KeyError`'s quotes removed)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(text).split()) or type(error).__name__
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 3] + f"... ({DEBUG_FLAG} for the whole message)"
    return text


@contextlib.contextmanager
def user_errors(argv: Sequence[str] | None = None) -> Iterator[None]:
    """Turns a user error raised inside into `error: <one line>` on stderr and
    `SystemExit(2)`; with `--debug` / `VISGEN_DEBUG=1`, re-raises it instead."""
    try:
        yield
    except USER_ERRORS as error:
        if debug_requested(argv):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
