"""blas.py: the OpenBLAS thread count, set for a block and restored."""

import pytest

from charrnn.blas import _openblas, blas_threads


def test_blas_threads_sets_and_restores():
    functions = _openblas()
    if functions is None:
        pytest.skip("numpy's BLAS here is not an OpenBLAS this module can find")
    set_threads, get_threads = functions
    before = get_threads()
    set_threads(2)
    try:
        with blas_threads(1):
            assert get_threads() == 1
        assert get_threads() == 2
    finally:
        set_threads(before)
