"""Benchmarks for guard; each is a package run with ``python -m bench.NAME``."""
