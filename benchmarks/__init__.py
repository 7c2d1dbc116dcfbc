"""Benchmarks: the bundled backend beside LXD 5.0.2 in the same run (see benchmarks/README.md)."""
