"""Numerics both model families and the classifier share: row scatter, softmax cross-entropy,
log-softmax, parameter checks, orthogonal initialisation, and the floating-point types a model may have.

    loss, dlogits = softmax_cross_entropy(logits, targets)   # logits (N, V) -> dlogits (N, V), in place
    logp = log_softmax(logits)                               # (..., V) -> (..., V)
"""

import numpy as np

from ..blas import blas_threads

DTYPES = ("float32", "float64")  # a model's parameters and activations


def check_params(params, shapes, dtype):
    """Raise ValueError unless ``params`` has exactly the names, shapes and dtype of ``shapes``."""
    if set(shapes) != set(params):
        raise ValueError("parameter names do not match the model config")
    for name, shape in shapes.items():
        value = params[name]
        if value.shape != shape or value.dtype != dtype:
            raise ValueError(f"parameter {name} is {value.dtype}{value.shape}, expected {np.dtype(dtype)}{shape}")


def orthogonal(n, rng):
    """An (n, n) orthogonal matrix, uniformly distributed (QR of a Gaussian, signs fixed by R's diagonal). The
    QR runs on one BLAS thread: its many small products took seconds on two threads of a busy machine."""
    with blas_threads(1):
        q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def scatter_rows(ids, values, out):
    """Write into ``out`` (num_rows, D) the sums of the rows of ``values`` (N, D) by row id ``ids`` (N,).

    For a vocabulary of up to 256 symbols, one product with the (num_rows, N) one-hot matrix is
    fastest; for a larger one (CJK, thousands of symbols) that product would cost more than
    ``np.add.at``.
    """
    if out.shape[0] <= 256:
        indicator = np.zeros((out.shape[0], len(ids)), values.dtype)  # (V, N)
        indicator[ids, np.arange(len(ids))] = 1
        np.matmul(indicator, values, out=out)
    else:
        out.fill(0)
        np.add.at(out, ids, values)


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy (nats) of (N, V) logits against (N,) targets, and its gradient.

    The logits array is overwritten: it becomes the gradient.
    """
    N = logits.shape[0]
    rows = np.arange(N)
    logits -= logits.max(axis=1, keepdims=True)
    target_logits = logits[rows, targets]  # (N,)
    probs = np.exp(logits, out=logits)
    total = np.add.reduce(probs, axis=1, keepdims=True)  # (N, 1)
    loss = float((np.log(total).sum() - target_logits.sum()) / N)
    probs *= 1.0 / (total * N)  # softmax / N: the gradient of the mean
    probs[rows, targets] -= 1.0 / N
    return loss, probs


def log_softmax(logits):
    """Log-probabilities of (..., V) logits, computed stably."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
