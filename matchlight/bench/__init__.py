"""Benchmarks, each reachable as ``matchlight bench NAME``, and the harness they share."""
