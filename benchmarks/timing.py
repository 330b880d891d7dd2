"""How the benchmarks time a piece of work: as many calls as fit in a time budget, after warm-up calls.

    rate(call, seconds)        # units per second over all the timed calls (a training step: its characters)
    best_rate(call, seconds)   # units per second of the fastest call (a whole sample: the least disturbed one)

``call()`` does one piece of work and returns how many units (characters, texts) it did.
"""

import time


def rate(call, seconds, warmup=2):
    """Units per second of ``call()`` over at least ``seconds`` of calls (one at the least), after ``warmup``
    untimed calls (buffers, worker processes, BLAS threads)."""
    for _ in range(warmup):
        call()
    done, start = 0, time.perf_counter()
    while True:
        done += call()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def best_rate(call, seconds, warmup=1):
    """Units per second of the fastest call of ``call()`` over at least ``seconds`` of calls (one at the least),
    after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    best, start = 0.0, time.perf_counter()
    while True:
        t = time.perf_counter()
        best = max(best, call() / (time.perf_counter() - t))
        if time.perf_counter() - start >= seconds:
            return best
