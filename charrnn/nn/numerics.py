"""Numerics both model families and the classifier share: row scatter, softmax cross-entropy,
each target's -log p, log-softmax, parameter checks, orthogonal initialisation, and the floating-point types a
model may have.

    loss, dlogits = softmax_cross_entropy(logits, targets)   # logits (N, V) -> dlogits (N, V), in place
    nlls = target_nlls(logits, targets)                      # (T, B, V), (T, B) -> (T, B); logits overwritten
    logp = log_softmax(logits)                               # (..., V) -> (..., V)
"""

import math

import numpy as np

from ..blas import blas_threads

DTYPES = ("float32", "float64")  # a model's parameters and activations
CACHED_ELEMENTS = 2**18  # logits ``target_nlls`` works on at a time (1 MB of float32): its passes stay in cache


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
    fastest; for a larger one (CJK, thousands of symbols) that product would cost more than adding
    each row where it goes, in order: what ``np.add.at`` does, bit for bit, but a row at a time (1,600
    rows of 1,536: 3 ms against 24 ms).
    """
    if out.shape[0] <= 256:
        indicator = np.zeros((out.shape[0], len(ids)), values.dtype)  # (V, N)
        indicator[ids, np.arange(len(ids))] = 1
        np.matmul(indicator, values, out=out)
    else:
        out.fill(0)
        for i, row in enumerate(np.asarray(ids).tolist()):
            target = out[row]
            np.add(target, values[i], target)


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy (nats) of (N, V) logits against (N,) targets, and its gradient.

    The logits array is overwritten: it becomes the gradient. Its passes run over a block of rows at a time,
    in cache (a vocabulary of thousands makes the logits tens of megabytes): the same numbers, row by row.
    """
    N, V = logits.shape
    target_logits, total = np.empty(N, logits.dtype), np.empty((N, 1), logits.dtype)  # (N,), (N, 1)
    step = max(1, CACHED_ELEMENTS // V)
    for a in range(0, N, step):
        x, t = logits[a : a + step], targets[a : a + step]
        x -= x.max(axis=1, keepdims=True)
        target_logits[a : a + step] = x[np.arange(len(x)), t]
        np.exp(x, out=x)
        np.add.reduce(x, axis=1, keepdims=True, out=total[a : a + step])
        x *= 1.0 / (total[a : a + step] * N)  # softmax / N: the gradient of the mean
    loss = float((np.log(total).sum() - target_logits.sum()) / N)
    logits[np.arange(N), targets] -= 1.0 / N
    return loss, logits


def target_nlls(logits, targets):
    """-log softmax(logits) at ``targets``: (T, ..., V) logits and (T, ...) int targets -> (T, ...) nats, in the
    logits' dtype. The logits are overwritten.

    The numbers of the whole log-softmax, picked at the targets, bit for bit (the same operations on each
    row: the shift by the row's maximum, then the log of the sum of exp), without forming it: a few passes
    over a block of rows at a time, in cache, instead of three (T, ..., V) arrays (for a vocabulary of
    thousands, more time than the output product).
    """
    nlls = np.empty_like(targets, logits.dtype)  # laid out as the targets (as indexing by them lays it out): sums agree
    rows = max(1, CACHED_ELEMENTS // math.prod(logits.shape[1:]))
    for a in range(0, len(logits), rows):
        x, t = logits[a : a + rows], targets[a : a + rows, ..., None]
        x -= x.max(axis=-1, keepdims=True)
        picked = np.take_along_axis(x, t, axis=-1)[..., 0]  # the target's shifted logit
        np.exp(x, out=x)
        np.subtract(np.log(x.sum(axis=-1)), picked, out=nlls[a : a + rows])  # -(picked - log sum exp)
    return nlls


def log_softmax(logits):
    """Log-probabilities of (..., V) logits, computed stably."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
