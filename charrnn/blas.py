"""How many threads numpy's BLAS uses, set per region of code.

numpy exposes no such control, so this finds the OpenBLAS library numpy loaded and calls its own
``set_num_threads``. The per-timestep products of a recurrence are small: run on one thread each
(while the batch is split across our own threads), they avoid OpenBLAS's thread hand-off, which
costs more than the product and turns pathological when another process holds the other core.
Where no OpenBLAS is found (another BLAS, another platform) ``single_threaded_blas`` does nothing.
"""

import contextlib
import ctypes
import glob
import os

import numpy as np


def _openblas_functions():
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        pass
    numpy_dir = os.path.dirname(np.__file__)
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*", "../numpy/.dylibs/*openblas*"):
        paths += glob.glob(os.path.join(numpy_dir, pattern))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"), ("openblas_", "")):
            setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None, None


_SET_THREADS, _GET_THREADS = _openblas_functions()


def blas_threads():
    """The number of threads BLAS uses now (1 if it cannot be told)."""
    return _GET_THREADS() if _GET_THREADS else 1


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, BLAS products run on the calling thread only."""
    if _SET_THREADS is None:
        yield
        return
    previous = _GET_THREADS()
    _SET_THREADS(1)
    try:
        yield
    finally:
        _SET_THREADS(previous)
