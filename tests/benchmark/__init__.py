"""The benchmark behind ``make bench``: the connector's throughput, CPU, memory and latency.

Not a test suite (no file here starts with ``test_``): run ``python -m tests.benchmark``.
See docs/benchmark.md.
"""
