"""Named arrays stored as views into one contiguous vector.

    params = Packed({"W": (3, 4), "b": (4,)}, np.float32)
    params["W"][...] = 1.0          # writes into params.flat
    params.flat                      # (16,): every parameter, one after another

Parameters, gradients and optimizer slots are all ``Packed`` with the same layout, so clipping and an
optimizer update are a few passes over ``flat`` rather than a few per parameter, which is most of an
update's cost for a small model. Assign into the views (``p[name][...] = v``); replacing a dict entry
would cut it loose from ``flat``.
"""

import math

import numpy as np

from .numerics import check_params


class Packed(dict):
    """A dict of named arrays, each a view into the contiguous vector ``self.flat``."""

    def __init__(self, shapes, dtype, values=None, flat=None):
        """``flat``: an existing (N,) vector of ``dtype`` to lay the arrays over (shared memory, say);
        by default a new one of zeros."""
        sizes = [math.prod(shape) for shape in shapes.values()]
        if flat is None:
            flat = np.zeros(sum(sizes), dtype)
        elif flat.shape != (sum(sizes),) or flat.dtype != np.dtype(dtype):
            raise ValueError(f"flat vector is {flat.dtype}{flat.shape}, expected {np.dtype(dtype)}({sum(sizes)},)")
        self.flat = flat  # (N,)
        self.spans = {}  # name -> (start, stop): where its elements lie in ``flat``
        offset = 0
        for (name, shape), size in zip(shapes.items(), sizes):
            self[name] = self.flat[offset : offset + size].reshape(shape)
            self.spans[name] = (offset, offset + size)
            offset += size
        for name, value in (values or {}).items():
            self[name][...] = value

    def shapes(self):
        return {name: value.shape for name, value in self.items()}


def model_params(config, shapes, init, params=None, rng=None):
    """A model's parameters, a ``Packed`` of ``shapes`` in ``config.dtype``: ``params`` (copied; ValueError
    unless their names, shapes and dtype fit), or None for fresh ones, ``init(config, rng)`` (a new
    generator if ``rng`` is None)."""
    if params is None:
        params = init(config, rng if rng is not None else np.random.default_rng())
    check_params(params, shapes, config.dtype)
    return Packed(shapes, config.dtype, params)
