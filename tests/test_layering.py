"""Layering that `lint-imports` cannot see: tests/ is not a package, so this checks
that no test imports the benchmarks (`bench/`); the rest is in pyproject.toml."""

import ast
import glob
import os

from conftest import REPO


def _imported(path: str) -> set[str]:
    """Top-level names of the modules `path` imports (anywhere in the file)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_imports_the_benchmarks():
    paths = sorted(glob.glob(os.path.join(REPO, "tests", "**", "*.py"), recursive=True))
    assert paths
    offenders = [os.path.relpath(p, REPO) for p in paths if "bench" in _imported(p)]
    assert not offenders, f"tests import bench/ (benchmarks are imported by nothing): {offenders}"
