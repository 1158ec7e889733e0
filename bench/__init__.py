"""Benchmarks for the Geopera kernel: `make bench` (`python -m bench.run`).

Each bench is a module of this package with a `run(results, options)` function
(see `bench/run.py`); it owns one `## ` section of `bench/RESULTS.md`.
"""
