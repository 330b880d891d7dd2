"""The numerics the models share, against straightforward numpy: the row scatter of a large vocabulary, the
targets' -log p."""

import numpy as np
import pytest

from charrnn.nn.numerics import scatter_rows, softmax_cross_entropy, target_nlls


def test_scatter_of_a_large_vocabulary_is_add_at_bit_for_bit():
    """Above 256 rows the scatter adds row by row, in order: np.add.at's numbers, the sign of a zero included."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 299, 500)
    values = rng.normal(size=(500, 7)).astype(np.float32)
    ids[3], values[3] = 299, -0.0  # row 299, read once, whose gradient is a negative zero: 0 + -0 is +0
    expected = np.zeros((300, 7), np.float32)
    np.add.at(expected, ids, values)
    out = np.full((300, 7), np.nan, np.float32)
    scatter_rows(ids, values, out)
    np.testing.assert_array_equal(out, expected)
    assert not np.signbit(out[299]).any()


def naive_nlls(logits, targets):
    """The whole log-softmax, then the targets' entries, negated."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("T, B, V, dtype", [(512, 1, 9700, np.float32), (100, 32, 65, np.float32),
                                            (40, 8, 300, np.float64)])
def test_target_nlls_are_the_whole_log_softmax_picked(T, B, V, dtype):
    """Bit for bit the log-softmax's entries at the targets, over several blocks of rows, for a C-ordered
    (T, B, V) array and for gpt's (T, B, V) view of a (B, T, V) array; laid out as the targets, so that
    their sum (a chunk's loss) adds in the same order."""
    rng = np.random.default_rng(1)
    logits = (4 * rng.normal(size=(T, B, V))).astype(dtype)
    targets = rng.integers(0, V, (T, B))
    expected = naive_nlls(logits, targets)
    got = target_nlls(logits.copy(), targets)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    batch_major = np.ascontiguousarray(logits.transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_array_equal(target_nlls(batch_major, targets), expected)
    streams = np.asfortranarray(targets)  # a text's B streams gathered as (B, T + 1) then transposed
    assert target_nlls(logits.copy(), streams).sum() == naive_nlls(logits, streams).sum()  # laid out alike


def naive_cross_entropy(logits, targets):
    """Mean cross-entropy and its gradient, in whole-array passes."""
    N = len(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    target_logits = shifted[np.arange(N), targets]
    probs = np.exp(shifted)
    total = np.add.reduce(probs, axis=1, keepdims=True)
    loss = float((np.log(total).sum() - target_logits.sum()) / N)
    probs *= 1.0 / (total * N)
    probs[np.arange(N), targets] -= 1.0 / N
    return loss, probs


@pytest.mark.parametrize("N, V", [(1600, 9572), (3200, 65), (7, 300000)])
def test_cross_entropy_in_blocks_of_rows_is_the_whole_array_passes(N, V):
    """The loss and gradient, bit for bit, whether the rows take one block or many (a large vocabulary)."""
    rng = np.random.default_rng(2)
    logits = (3 * rng.normal(size=(N, V))).astype(np.float32)
    targets = rng.integers(0, V, N)
    loss, grad = softmax_cross_entropy(logits.copy(), targets)
    want_loss, want_grad = naive_cross_entropy(logits, targets)
    assert loss == want_loss
    np.testing.assert_array_equal(grad, want_grad)
