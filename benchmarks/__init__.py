"""kxform's benchmark: Triton (direct and as an ensemble), ``kxform serve``, kserve and the seeds' transformer.

Each gets the same wrk load, one implementation at a time, and all of them share one real Triton.

Run it with ``make bench`` (or ``python -m benchmarks --help``). It is not part of ``make test``:
nothing here asserts a wall-clock time; it measures, compares within one run and reports.
"""
