"""charrnn's benchmarks: one harness (harness.py) and the suites on top of it; run ``python -m benchmarks``."""
