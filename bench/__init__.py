"""Benchmarks and sweeps (`python -m bench.bench_ar` etc.); nothing in visgen/, launch/ or tests/
imports them."""
