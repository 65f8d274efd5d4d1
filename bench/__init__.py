"""Benchmarks: each module has `main(argv=None) -> int`, prints a table and writes bench/results/<name>.json."""
