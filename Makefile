# The README's two commands. Each creates .venv on first use and installs
# the package (editable) with what it needs, so a fresh clone with only
# python3 and make works.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Huge pages for XLA CPU's per-run temporary buffers (see visgen/huge_pages.py):
# the test suite runs JAX in-process, so it gets them from here.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: test test-fast demo lint format bench

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@# torch only for the cross-check tests against torch-fidelity and LPIPS (never imported
	@# by visgen); its CPU wheel is on local disk on these machines. A failed install stops
	@# here: CI must not go green with those tests skipped.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q --no-deps "torch-fidelity==0.4.0"
	touch $(STAMP)

# `make test` is what CI runs: a cross-check test that cannot import torch or torch-fidelity
# fails instead of skipping (tests/conftest.py: import_crosscheck).
test: export VISGEN_REQUIRE_CROSSCHECKS = 1
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -c "import sys, visgen; assert 'tensorflow' not in sys.modules, 'import visgen pulled in TensorFlow'"
	$(PY) -m pytest -q

# The quick lane: every test not marked `slow` (the real launcher's runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) -m launch.demo --out outputs/demo

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) -m bench.bench_titok
