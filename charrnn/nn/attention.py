"""The Transformer's layers, each forward beside its backward (CS231n style).

    out, cache = layernorm_forward(x, g, b)          # x (N, C)
    grads = layernorm_backward(dout, cache)          # {"x": (N, C), "g": (C,), "b": (C,)}

Shapes: B batch, T positions, C width, nh heads of hs = C / nh, V vocabulary, P the context length
(rows of the position table). Activations are (B, T, C), or (N, C) with N = B·T where a layer treats
positions alike. Every product runs over all positions at once; attention runs all heads of all
sequences as one batched product. GELU is the tanh approximation (GPT-2's, and PyTorch's
``nn.GELU(approximate="tanh")``): numpy has no erf, and it costs one tanh.

Backward functions may overwrite the arrays of their cache: each cache serves one backward pass.
"""

import math

import numpy as np

from .numerics import scatter_rows

GELU_K = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715
LN_EPS = 1e-5


# ---- embeddings: a character's row plus its position's row ------------------------------------------------


def embedding_forward(ids, wte, wpe):
    """ids (B, T) ints, wte (V, C), wpe (P, C) with P >= T -> x (B, T, C)."""
    x = np.take(wte, ids, axis=0)  # (B, T, C)
    x += wpe[: ids.shape[1]]
    return x, (ids, wte.shape, wpe.shape)


def embedding_backward(dx, cache):
    """dx (B, T, C) -> {"wte": (V, C), "wpe": (P, C)}."""
    ids, wte_shape, wpe_shape = cache
    B, T, C = dx.shape
    dwte = np.empty(wte_shape, dx.dtype)
    scatter_rows(ids.reshape(-1), dx.reshape(B * T, C), dwte)
    dwpe = np.zeros(wpe_shape, dx.dtype)
    np.add.reduce(dx, axis=0, out=dwpe[:T])
    return {"wte": dwte, "wpe": dwpe}


# ---- LayerNorm over the last axis ----------------------------------------------------------------------------


def layernorm_forward(x, g, b):
    """x (N, C), g (C,), b (C,) -> (x - mean) / sqrt(var + eps) * g + b, (N, C)."""
    C = x.shape[-1]
    mean = x.sum(axis=-1, keepdims=True)  # (N, 1)
    mean *= 1.0 / C
    xhat = x - mean  # (N, C)
    var = np.einsum("nc,nc->n", xhat, xhat)[:, None]  # (N, 1)
    var *= 1.0 / C
    var += LN_EPS
    rstd = np.sqrt(var, out=var)
    np.reciprocal(rstd, out=rstd)  # (N, 1)
    xhat *= rstd
    out = xhat * g
    out += b
    return out, (xhat, rstd, g)


def layernorm_backward(dout, cache):
    """dout (N, C) -> {"x": (N, C), "g": (C,), "b": (C,)}."""
    xhat, rstd, g = cache
    C = xhat.shape[-1]
    dg = np.einsum("nc,nc->c", dout, xhat)
    db = dout.sum(axis=0)
    dxhat = dout * g  # (N, C)
    mean_d = dxhat.sum(axis=-1, keepdims=True)  # (N, 1)
    mean_dx = np.einsum("nc,nc->n", dxhat, xhat)[:, None]  # (N, 1)
    mean_d *= 1.0 / C
    mean_dx *= 1.0 / C
    xhat *= mean_dx  # the cache's xhat is spent here
    dxhat -= mean_d
    dxhat -= xhat
    dxhat *= rstd
    return {"x": dxhat, "g": dg, "b": db}


# ---- GELU, tanh form: 0.5 x (1 + tanh(k (x + a x^3))) ----------------------------------------------------------


def gelu_tanh(x, out=None):
    """tanh(k (x + a x^3)) of x (any shape), into ``out`` if given: GELU(x) is 0.5 x (1 + this)."""
    u = np.multiply(x, x, out=out)
    u *= GELU_A * GELU_K
    u += GELU_K
    u *= x  # k (x + a x^3)
    return np.tanh(u, out=u)


def gelu_forward(x):
    """x (any shape) -> GELU(x), same shape."""
    t = gelu_tanh(x)
    out = t + 1.0
    out *= x
    out *= 0.5
    return out, (x, t)


def gelu_backward(dout, cache):
    """dout -> {"x": dout * GELU'(x)}, with GELU'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2)."""
    x, t = cache
    x2 = x * x
    x2 *= 3 * GELU_A * GELU_K
    x2 += GELU_K  # k (1 + 3 a x^2)
    x2 *= x
    s = t * t
    np.subtract(1.0, s, out=s)  # 1 - t^2
    s *= x2
    s += t
    s += 1.0
    s *= 0.5
    s *= dout
    return {"x": s}


# ---- linear -------------------------------------------------------------------------------------------------


def linear_forward(x, W, b):
    """x (N, Cin), W (Cin, Cout), b (Cout,) -> x W + b, (N, Cout)."""
    out = x @ W
    out += b
    return out, (x, W)


def linear_backward(dout, cache):
    """dout (N, Cout) -> {"x": (N, Cin), "W": (Cin, Cout), "b": (Cout,)}."""
    x, W = cache
    return {"x": dout @ W.T, "W": x.T @ dout, "b": dout.sum(axis=0)}


# ---- causal multi-head self-attention --------------------------------------------------------------------------


def causal_bias(T, dtype):
    """(T, T): 0 where a position may look (itself and earlier), -inf where it may not (later)."""
    return np.triu(np.full((T, T), -np.inf, dtype), k=1)


def attention_forward(x, W_qkv, b_qkv, W_proj, b_proj, num_heads, att_mask=None):
    """Causal self-attention over x (B, T, C) -> (B, T, C).

    q, k, v = x W_qkv + b_qkv split into nh heads; each position attends to itself and the positions
    before it: softmax(q k^T / sqrt(hs) + causal) v; the heads, side by side, go through W_proj.
    ``att_mask`` (B, nh, T, T), if given, multiplies the attention weights after the softmax (inverted
    dropout: zeros and 1 / keep), so a position reads a random subset of the values it attends to.
    """
    B, T, C = x.shape
    nh = num_heads
    hs = C // nh
    qkv = x.reshape(B * T, C) @ W_qkv  # (B·T, 3C)
    qkv += b_qkv
    # (B, T, 3, nh, hs) -> (3, B, nh, T, hs), one copy: heads become a batch axis
    q, k, v = np.ascontiguousarray(qkv.reshape(B, T, 3, nh, hs).transpose(2, 0, 3, 1, 4))
    q *= 1.0 / math.sqrt(hs)  # the scale folded into q
    att = np.matmul(q, k.transpose(0, 1, 3, 2))  # (B, nh, T, T)
    att += causal_bias(T, att.dtype)
    _softmax_in_place(att)
    dropped = att if att_mask is None else att * att_mask  # (B, nh, T, T): the weights v is read with
    y = np.matmul(dropped, v)  # (B, nh, T, hs)
    y = y.transpose(0, 2, 1, 3).reshape(B * T, C)  # (B·T, C): the heads side by side
    out = y @ W_proj
    out += b_proj
    cache = (x, q, k, v, att, att_mask, dropped, y, W_qkv, W_proj)
    return out.reshape(B, T, C), cache


def attention_backward(dout, cache):
    """dout (B, T, C) -> {"x": (B, T, C), "W_qkv", "b_qkv", "W_proj", "b_proj"}."""
    x, q, k, v, att, att_mask, dropped, y, W_qkv, W_proj = cache
    B, nh, T, hs = q.shape
    C = nh * hs
    dout = dout.reshape(B * T, C)
    dW_proj = y.T @ dout  # (C, C)
    db_proj = dout.sum(axis=0)
    dy = (dout @ W_proj.T).reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    dqkv = np.empty((B, T, 3, nh, hs), x.dtype)
    dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)  # views (B, nh, T, hs) into dqkv
    dv[...] = np.matmul(dropped.transpose(0, 1, 3, 2), dy)
    datt = np.matmul(dy, v.transpose(0, 1, 3, 2))  # (B, nh, T, T)
    if att_mask is not None:
        datt *= att_mask  # through the dropout, back to the softmax's output
    # softmax backward: dS = att * (datt - sum(datt * att)); masked entries have att = 0
    row = np.einsum("bhij,bhij->bhi", datt, att)[..., None]  # (B, nh, T, 1)
    datt -= row
    datt *= att
    dq[...] = np.matmul(datt, k)
    dq *= 1.0 / math.sqrt(hs)
    dk[...] = np.matmul(datt.transpose(0, 1, 3, 2), q)  # q already holds the scale
    dqkv = dqkv.reshape(B * T, 3 * C)
    x2 = x.reshape(B * T, C)
    return {
        "x": (dqkv @ W_qkv.T).reshape(B, T, C),
        "W_qkv": x2.T @ dqkv,
        "b_qkv": dqkv.sum(axis=0),
        "W_proj": dW_proj,
        "b_proj": db_proj,
    }


def _softmax_in_place(att):
    """Softmax over the last axis of ``att``, in place."""
    att -= att.max(axis=-1, keepdims=True)
    np.exp(att, out=att)
    att *= 1.0 / att.sum(axis=-1, keepdims=True)


# ---- the MLP: C -> 4C, GELU, -> C ----------------------------------------------------------------------------


def mlp_forward(x, W_fc, b_fc, W_proj, b_proj):
    """x (N, C), W_fc (C, 4C), W_proj (4C, C) -> GELU(x W_fc + b_fc) W_proj + b_proj, (N, C)."""
    h, fc_cache = linear_forward(x, W_fc, b_fc)  # (N, 4C)
    a, gelu_cache = gelu_forward(h)  # (N, 4C)
    out, proj_cache = linear_forward(a, W_proj, b_proj)  # (N, C)
    return out, (fc_cache, gelu_cache, proj_cache)


def mlp_backward(dout, cache):
    """dout (N, C) -> {"x": (N, C), "W_fc", "b_fc", "W_proj", "b_proj"}."""
    fc_cache, gelu_cache, proj_cache = cache
    proj = linear_backward(dout, proj_cache)
    dh = gelu_backward(proj["x"], gelu_cache)["x"]
    fc = linear_backward(dh, fc_cache)
    return {"x": fc["x"], "W_fc": fc["W"], "b_fc": fc["b"], "W_proj": proj["W"], "b_proj": proj["b"]}
