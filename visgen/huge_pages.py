"""Transparent huge pages for the host allocator, set by the command-line entry points.

On the CPU backend XLA allocates one temporary buffer per executable run
(163 MB for the tiny TiTok train step) with glibc's `malloc`, which serves
anything over 32 MB with a fresh `mmap` and returns it with `munmap`. Every
step then touches tens of thousands of new 4 KiB pages, and each page fault
is expensive under a virtual machine. glibc's `glibc.malloc.hugetlb=1`
tunable asks the kernel for transparent huge pages on those mappings
(`madvise(MADV_HUGEPAGE)`): far fewer faults and a faster step
(docs/notes/2026-11-26-huge-pages.md).

glibc reads tunables only when a process starts, so `use_huge_pages()` puts
the tunable in the environment and re-executes the same command line (same
PID, so signals and process managers are unaffected). It does nothing when the
tunable is already set, either way: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`
opts out. It does nothing off Linux/glibc. Call it first thing in a
`__main__` block only, never from library code: re-executing replaces the
process.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
TUNABLES_VAR = "GLIBC_TUNABLES"


def huge_pages_environment(environ: dict[str, str]) -> dict[str, str] | None:
    """The environment with the huge-page tunable added, or None if it needs no change.

    Keeps any other tunables already in `GLIBC_TUNABLES` (colon separated).
    """
    current = environ.get(TUNABLES_VAR, "")
    if TUNABLE in current:
        return None
    env = dict(environ)
    env[TUNABLES_VAR] = f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"
    return env


def is_glibc() -> bool:
    """Whether this process runs on GNU libc (whose tunables `use_huge_pages` sets)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a GNU libc system
        return False


def use_huge_pages() -> None:
    """Re-executes this Python command with glibc's huge-page tunable, once; no-op if set."""
    if not is_glibc():
        return
    env = huge_pages_environment(dict(os.environ))
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
