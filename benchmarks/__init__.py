"""The benchmark suite behind ``python -m sepconv bench`` (see docs/benchmarks.md).

Timings are never unit tests: nothing here runs under pytest.
"""
