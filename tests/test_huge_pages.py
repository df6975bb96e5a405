"""The entry points' huge-page re-exec: environment handling and the re-executed command."""

import os
import subprocess
import sys

import pytest

from visgen.huge_pages import TUNABLES_VAR, huge_pages_environment, is_glibc


def test_adds_the_tunable_and_keeps_others():
    assert huge_pages_environment({})[TUNABLES_VAR] == "glibc.malloc.hugetlb=1"
    env = huge_pages_environment({TUNABLES_VAR: "glibc.malloc.arena_max=2", "A": "1"})
    assert env == {TUNABLES_VAR: "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "1"}


def test_an_explicit_setting_is_respected():
    assert huge_pages_environment({TUNABLES_VAR: "glibc.malloc.hugetlb=0"}) is None
    assert huge_pages_environment({TUNABLES_VAR: "glibc.malloc.hugetlb=1"}) is None


@pytest.mark.skipif(not is_glibc(), reason="the re-exec only happens with glibc")
def test_reexecutes_the_same_command_once_with_the_same_pid(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(
        "import os, sys\n"
        "print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], flush=True)\n"
        "from visgen.huge_pages import use_huge_pages\n"
        "use_huge_pages()\n"
        "print('main', os.getpid(), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != TUNABLES_VAR}
    out = subprocess.run(
        [sys.executable, str(script), "--x", "a b"], env=env, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout.splitlines()  # fmt: skip
    first, second, main = out
    pid = first.split()[1]
    assert first == f"start {pid} None ['--x', 'a b']"
    assert second == f"start {pid} glibc.malloc.hugetlb=1 ['--x', 'a b']"
    assert main == f"main {pid}"
