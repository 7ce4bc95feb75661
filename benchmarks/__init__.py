"""kxform's benchmark: the real Triton, ``kxform serve`` and the seeds' hand-written transformer under one load.

Run it with ``make bench`` (or ``python -m benchmarks --help``). It is not part of ``make test``:
nothing here asserts a wall-clock time; it measures, compares within one run and reports.
"""
