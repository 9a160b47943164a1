"""Benchmarks, run as `python -m atlas.bench.<name>`; never imported by the library."""
