"""The Transformer's layers (nn/attention.py): float64 gradient checks, and attention against a naive oracle."""

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error

from charrnn.nn import attention as L


def check_layer(forward, backward, inputs, dout_shape, rng, tol=1e-6):
    """loss = sum(w * forward(**inputs)): every analytic gradient against the numerical one."""
    w = rng.normal(size=dout_shape)

    def loss():
        out, _ = forward(**{k: v.copy() for k, v in inputs.items()})
        return float((out * w).sum())

    _, cache = forward(**{k: v.copy() for k, v in inputs.items()})
    grads = backward(w.copy(), cache)
    for name, value in inputs.items():
        numeric = numerical_grad(loss, value)
        assert grads[name].shape == value.shape
        assert rel_error(grads[name], numeric) < tol, name


def test_layernorm_gradients():
    rng = np.random.default_rng(0)
    N, C = 5, 6
    inputs = {"x": rng.normal(1, 2, (N, C)), "g": rng.normal(1, 0.3, C), "b": rng.normal(0, 0.3, C)}
    check_layer(L.layernorm_forward, L.layernorm_backward, inputs, (N, C), rng)


def test_layernorm_normalises():
    rng = np.random.default_rng(1)
    out, _ = L.layernorm_forward(rng.normal(3, 5, (4, 32)), np.ones(32), np.zeros(32))
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), 1, rtol=1e-3)


def test_gelu_gradients_and_values():
    rng = np.random.default_rng(2)
    inputs = {"x": rng.normal(0, 2, (4, 7))}
    check_layer(L.gelu_forward, L.gelu_backward, inputs, (4, 7), rng)
    x = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    # the tanh form, written out
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(L.gelu_forward(x.copy())[0], expected, rtol=1e-14)


def test_mlp_gradients():
    rng = np.random.default_rng(3)
    N, C = 4, 3
    inputs = {
        "x": rng.normal(size=(N, C)),
        "W_fc": rng.normal(0, 0.5, (C, 4 * C)),
        "b_fc": rng.normal(0, 0.5, 4 * C),
        "W_proj": rng.normal(0, 0.5, (4 * C, C)),
        "b_proj": rng.normal(0, 0.5, C),
    }
    check_layer(L.mlp_forward, L.mlp_backward, inputs, (N, C), rng)


def dropout_mask(rng, shape, rate=0.4):
    return (rng.random(shape) >= rate) / (1 - rate)


@pytest.mark.parametrize("dropout", [False, True])
def test_attention_gradients(dropout):
    rng = np.random.default_rng(4)
    B, T, C, nh = 2, 5, 6, 2
    att_mask = dropout_mask(rng, (B, nh, T, T)) if dropout else None
    inputs = {
        "x": rng.normal(size=(B, T, C)),
        "W_qkv": rng.normal(0, 0.5, (C, 3 * C)),
        "b_qkv": rng.normal(0, 0.5, 3 * C),
        "W_proj": rng.normal(0, 0.5, (C, C)),
        "b_proj": rng.normal(0, 0.5, C),
    }

    def forward(**kw):
        return L.attention_forward(**kw, num_heads=nh, att_mask=att_mask)

    check_layer(forward, L.attention_backward, inputs, (B, T, C), rng)


def naive_attention(x, W_qkv, b_qkv, W_proj, b_proj, nh, att_mask=None):
    """One sequence, one head, one position at a time: the oracle for the batched version (``att_mask``:
    attention dropout, each position's weights times its row of the mask)."""
    B, T, C = x.shape
    hs = C // nh
    out = np.zeros((B, T, C))
    for b in range(B):
        q, k, v = np.split(x[b] @ W_qkv + b_qkv, 3, axis=1)
        heads = []
        for h in range(nh):
            cols = slice(h * hs, (h + 1) * hs)
            rows = []
            for t in range(T):
                scores = k[: t + 1, cols] @ q[t, cols] / np.sqrt(hs)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                if att_mask is not None:
                    p *= att_mask[b, h, t, : t + 1]
                rows.append(p @ v[: t + 1, cols])
            heads.append(np.array(rows))
        out[b] = np.concatenate(heads, axis=1) @ W_proj + b_proj
    return out


def test_attention_is_causal_and_matches_naive():
    rng = np.random.default_rng(5)
    B, T, C, nh = 2, 6, 8, 4
    x = rng.normal(size=(B, T, C))
    weights = (rng.normal(0, 0.5, (C, 3 * C)), rng.normal(0, 0.5, 3 * C), rng.normal(0, 0.5, (C, C)),
               rng.normal(0, 0.5, C))
    out, _ = L.attention_forward(x, *weights, nh)
    np.testing.assert_allclose(out, naive_attention(x, *weights, nh), rtol=1e-12, atol=1e-12)
    later = x.copy()
    later[:, 3:] += 1.0  # changing positions 3.. leaves positions 0..2 alone
    out2, _ = L.attention_forward(later, *weights, nh)
    np.testing.assert_array_equal(out2[:, :3], out[:, :3])
    assert not np.allclose(out2[:, 3:], out[:, 3:])
    att_mask = dropout_mask(rng, (B, nh, T, T))
    dropped, _ = L.attention_forward(x, *weights, nh, att_mask=att_mask)
    np.testing.assert_allclose(dropped, naive_attention(x, *weights, nh, att_mask), rtol=1e-12, atol=1e-12)
    assert not np.allclose(dropped, out)
