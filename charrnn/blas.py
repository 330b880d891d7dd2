"""How many threads numpy's OpenBLAS runs a product on, set for a stretch of code.

    with blas_threads(1):
        ...   # batch-1 products: one thread each

A product of one row by a (C, 3C) matrix takes microseconds; OpenBLAS still splits it across its
threads, and where the cores are busy (a loaded machine, other processes) the split waits for a
descheduled thread: sampling at batch 1 ran 10x slower on 2 threads than on 1 on a shared 2-core
machine. Best effort: where numpy's BLAS is not an OpenBLAS this module can find (Linux, by the
libraries mapped into the process), ``blas_threads`` changes nothing. ``available_cpus`` says how
many CPUs this process may use (worker processes, scoring threads).
"""

import contextlib
import ctypes
import functools
import os

_NAMES = (  # (setter, getter) as the OpenBLAS builds numpy ships name them
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@functools.cache
def _openblas():
    """(set, get) functions of the OpenBLAS mapped into this process, or None."""
    import numpy  # noqa: F401  (maps numpy's BLAS into the process)

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for setter, getter in _NAMES:
            if hasattr(lib, setter) and hasattr(lib, getter):
                set_threads, get_threads = getattr(lib, setter), getattr(lib, getter)
                set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
                get_threads.argtypes, get_threads.restype = [], ctypes.c_int
                return set_threads, get_threads
    return None


@contextlib.contextmanager
def blas_threads(n):
    """Within the block, OpenBLAS runs each product on at most ``n`` threads (where it can be told)."""
    functions = _openblas()
    if functions is None:
        yield
        return
    set_threads, get_threads = functions
    before = get_threads()
    if before <= n:
        yield
        return
    set_threads(n)
    try:
        yield
    finally:
        set_threads(before)


def available_cpus():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
