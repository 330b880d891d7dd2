"""Numerical gradients and the error measure every gradient check uses (float64)."""

import numpy as np


def rel_error(analytic, numeric):
    """Norm-wise relative error (element-wise ratios are noise where a gradient entry is ~0)."""
    return np.linalg.norm(analytic - numeric) / max(1e-12, np.linalg.norm(analytic) + np.linalg.norm(numeric))


def numerical_grad(f, x, eps=1e-6):
    """Centred differences of the scalar f() w.r.t. every element of x (changed in place and restored)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        plus = f()
        x[i] = old - eps
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad
