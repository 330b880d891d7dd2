"""Generating from a CharGPT (gpt.py) one character at a time against a key/value cache.

    sampler = KVSampler(model, batch_size=B)
    logits = sampler.prime(ids)                # ids (B, n), n <= context_length -> logits (B, V) after them
    logits = sampler.step(next_ids)            # next_ids (B,) -> logits (B, V)
    sampler.reorder(rows)                      # rows (B,): text b goes on from text rows[b]'s cache

``CharGPT.start_sampling`` primes one with a seed's last ``context_length`` characters.
"""

import math
from typing import NamedTuple

import numpy as np

from ..blas import blas_threads
from ..nn import attention as L


class KVSampler:
    """Generates one character at a time with a key/value cache: each new character runs one position
    through each block, attending to the cached keys and values of the characters before it.

    When the window is full (``context_length`` characters), it keeps the last ``context_length // 2``
    characters, recomputes their keys and values at positions 0.. in one batched pass, and goes on: every
    character is predicted from at least half a context of the characters before it (all of them, while
    they fit). Position embeddings are absolute, so a cache cannot be shifted: it must be recomputed.

    The cache holds one row per block, text and position: the position's query, key and value as the
    block's qkv product wrote them, (3C,). A step's product writes straight into its position's row,
    and what a step at position n reads of the cache (that row, its query by head, the keys and values
    of positions 0..n by head) are views made once per sampler, for every n: no copies, no slicing.

    A step reads the weights folded once per sampler, so a block costs fewer numpy calls per character:
    each LayerNorm's gain, shift and centering into the product after it (with x̂ = (x - mean x) / σ,
    ``(x̂ g + b) W + c = (x / σ) M + (b W + c)``, M being g W less its column means), the attention scale
    into the query columns, GELU's factor 1/2 into the MLP's second product, and the bias of every
    product after the embeddings into a last row of its weights, read by a column of ones kept beside
    the product's input (``normed``, ``heads``, ``hidden``: (B, C+1), (B, C+1), (B, 4C+1)).
    """

    def __init__(self, model, batch_size=1):
        cfg = model.config
        self.model, self.P, B, C = model, cfg.context_length, batch_size, cfg.hidden_size
        self.nh, self.hs = cfg.num_heads, C // cfg.num_heads
        dtype = model.dtype
        self.cache = np.zeros((cfg.num_layers, B, self.P, 3 * C), dtype)  # (L, B, P, 3C): q, k, v by position
        self.ids = np.zeros((B, self.P), np.intp)  # (B, P): the ids whose keys and values are cached,
        self.n = 0  # in the first n columns
        self.blocks = [self._folded(k) for k in range(cfg.num_layers)]
        p = model.params
        self.W_out = np.concatenate([_centered(p["ln_f.g"][:, None] * p["W_hy"]),
                                     (p["ln_f.b"] @ p["W_hy"] + p["b_y"])[None]])  # (C+1, V)
        # a step's buffers; for one text, their single rows, so that np.dot runs matrix-vector products (a
        # third less time per product than a (1, K) matrix through matmul) and a step has no batch axis
        one = (lambda a: a[0]) if B == 1 else (lambda a: a)
        self.product = np.dot if B == 1 else np.matmul  # matmul writes into (B, 4C) columns of ``hidden``
        self.x = one(np.empty((B, C), dtype))  # the residual stream
        self.normed = one(np.ones((B, C + 1), dtype))  # a LayerNorm's x / σ, then a column of ones
        self.heads = one(np.ones((B, C + 1), dtype))  # the heads' outputs side by side, then a column of ones
        self.hidden = one(np.ones((B, 4 * C + 1), dtype))  # 2 GELU(x W_fc), then a column of ones
        self.fc_out = self.hidden[..., : 4 * C]  # where the MLP's first product writes
        self.heads_out = self.heads[..., :C].reshape(*self.x.shape[:-1], self.nh, self.hs, 1)  # (B?, nh, hs, 1)
        self.gelu_tmp = np.empty_like(self.fc_out)
        self.normalize = _normalizer(self.normed[..., :C])  # normalize(x) writes x / σ into ``normed``
        self.views = [[self._views(k, n, one) for n in range(self.P)] for k in range(cfg.num_layers)]

    def _folded(self, k):
        """Block k's weights as a step reads them (see the class docstring)."""
        p, h, C = self.model.params, f"h{k}.", self.model.config.hidden_size
        W_qkv = np.concatenate([  # (C+1, 3C): ln1's gain and centering, then its shift and the bias as the last row
            _centered(p[h + "ln1.g"][:, None] * p[h + "attn.W_qkv"]),
            (p[h + "ln1.b"] @ p[h + "attn.W_qkv"] + p[h + "attn.b_qkv"])[None]])
        W_qkv[:, :C] *= 1.0 / math.sqrt(self.hs)  # the query columns
        W_proj = np.concatenate([p[h + "attn.W_proj"], p[h + "attn.b_proj"][None]])  # (C+1, C)
        W_fc = np.concatenate([  # (C+1, 4C): ln2 folded in, as ln1 into W_qkv
            _centered(p[h + "ln2.g"][:, None] * p[h + "mlp.W_fc"]),
            (p[h + "ln2.b"] @ p[h + "mlp.W_fc"] + p[h + "mlp.b_fc"])[None]])
        W_mlp = np.concatenate([0.5 * p[h + "mlp.W_proj"], p[h + "mlp.b_proj"][None]])  # (4C+1, C)
        return _BlockWeights(W_qkv, W_proj, W_fc, W_mlp)

    def _views(self, k, n, one):
        """What a step at position n reads and writes of block k's cache: (row (B?, 3C), query (B?, nh, hs, 1),
        keys (B?, nh, n+1, hs), values (B?, nh, hs, n+1)); B? is no axis for one text."""
        B, C, nh, hs = self.cache.shape[1], self.x.shape[-1], self.nh, self.hs
        cache = self.cache[k]  # (B, P, 3C)
        row = cache[:, n]  # (B, 3C)
        query = row[:, :C].reshape(B, nh, hs, 1)
        keys = cache[:, : n + 1, C : 2 * C].reshape(B, n + 1, nh, hs).transpose(0, 2, 1, 3)
        values = cache[:, : n + 1, 2 * C :].reshape(B, n + 1, nh, hs).transpose(0, 2, 3, 1)
        return one(row), one(query), one(keys), one(values)

    def prime(self, ids):
        """Fill the cache from ``ids`` (B, n), 1 <= n <= P, all positions in one pass; the logits (B, V) after them."""
        ids = np.asarray(ids, np.intp)
        B, n = ids.shape
        C, nh, hs, p, dtype = self.model.config.hidden_size, self.nh, self.hs, self.model.params, self.model.dtype
        future = np.triu(np.full((n, n), -np.inf, dtype), 1)  # (n, n): -inf above the diagonal
        x = (p["wte"][ids] + p["wpe"][:n]).reshape(B * n, C)  # (B n, C), then (B, C) in the last block
        for k, w in enumerate(self.blocks):
            qkv = self.cache[k, :, :n]  # (B, n, 3C): the product writes the keys and values in place
            np.matmul(_with_ones(_normalize_rows(x)).reshape(B, n, C + 1), w.W_qkv, out=qkv)
            q, key, value = (qkv[..., j * C : (j + 1) * C].reshape(B, n, nh, hs).transpose(0, 2, 1, 3)
                             for j in range(3))  # (B, nh, n, hs) each
            mask = future
            if k == len(self.blocks) - 1:  # the last block: only the last position's output is needed
                q, mask, x = q[:, :, -1:], future[-1:], x.reshape(B, n, C)[:, -1]
            att = q @ key.swapaxes(2, 3)  # (B, nh, rows per text, n)
            att += mask
            att -= att.max(axis=-1, keepdims=True)
            np.exp(att, out=att)
            att /= att.sum(axis=-1, keepdims=True)
            heads = (att @ value).transpose(0, 2, 1, 3).reshape(len(x), C)  # (rows, C)
            x = x + _with_ones(heads) @ w.W_proj
            hidden = _with_ones(_normalize_rows(x)) @ w.W_fc  # (rows, 4C)
            _double_gelu(hidden, np.empty_like(hidden))
            x += _with_ones(hidden) @ w.W_mlp
        self.ids[:, :n] = ids
        self.n = n
        return _with_ones(_normalize_rows(x)) @ self.W_out  # (B, V)

    @property
    def window(self):
        """(B, n): the ids the cache holds, oldest first."""
        return self.ids[:, : self.n]

    def reorder(self, rows):
        """Text b goes on from text ``rows[b]``'s cache and window (rows (B,), repeats allowed): beam search's
        step. The step's views read the cache in place, so it is copied into itself."""
        n = self.n
        self.cache[:, :, :n] = self.cache[:, rows, :n]
        self.ids[:, :n] = self.ids[rows, :n]

    def step(self, ids):
        """Feed character ids (B,); return the logits (B, V) for the next characters."""
        with blas_threads(1):  # products of a few rows: threads only wait for each other (blas.py)
            return self._step(np.asarray(ids, np.intp).reshape(-1))

    def _step(self, ids):
        if self.n == self.P:  # slide: the last P // 2 characters, ids the newest, recomputed
            keep = max(1, self.P // 2)
            return self.prime(np.concatenate([self.ids[:, self.P - keep + 1 :], ids[:, None]], axis=1))
        # the hot path: numpy's functions and the buffers as locals (a Python lookup each costs a call's tenth)
        p, n, x, product, normalize = self.model.params, self.n, self.x, self.product, self.normalize
        normed = self.normed
        heads, heads_out, hidden, fc_out, gelu_tmp = self.heads, self.heads_out, self.hidden, self.fc_out, self.gelu_tmp
        matmul, subtract, exp, divide, add, maximum = np.matmul, np.subtract, np.exp, np.divide, np.add, np.maximum
        add(p["wte"][ids[0] if x.ndim == 1 else ids], p["wpe"][n], out=x)  # (B?, C)
        for (W_qkv, W_proj, W_fc, W_mlp), views in zip(self.blocks, self.views):
            row, query, keys, values = views[n]
            normalize(x)
            product(normed, W_qkv, out=row)  # (B?, 3C), into the cache: ln1, its bias and the scale folded in
            att = matmul(keys, query)  # (B?, nh, n+1, 1)
            subtract(att, maximum.reduce(att, axis=-2, keepdims=True), out=att)
            exp(att, out=att)
            matmul(values, att, out=heads_out)  # (B?, nh, hs, 1): the weighted sum, not yet normalized
            divide(heads_out, add.reduce(att, axis=-2, keepdims=True), out=heads_out)
            x += product(heads, W_proj)  # its bias folded in
            normalize(x)
            product(normed, W_fc, out=fc_out)  # (B?, 4C): ln2 and its bias folded in
            _double_gelu(fc_out, gelu_tmp)
            x += product(hidden, W_mlp)  # the 1/2 and the bias folded in
        self.ids[:, n] = ids
        self.n = n + 1
        normalize(x)
        return product(normed, self.W_out).reshape(len(ids), -1)  # (B, V): ln_f and the output bias folded in


class _BlockWeights(NamedTuple):
    """A block's weights as ``KVSampler`` reads them (its docstring): folded, with bias rows."""

    W_qkv: np.ndarray  # (C+1, 3C)
    W_proj: np.ndarray  # (C+1, C)
    W_fc: np.ndarray  # (C+1, 4C)
    W_mlp: np.ndarray  # (4C+1, C)


def _normalizer(out):
    """normalize(x): what a LayerNorm leaves to compute once its gain, shift and centering are folded into
    the next weights, into ``out``: x / σ for one text's row (C,), in three numpy calls; (x - mean x) / σ
    for rows (B, C). σ is the LayerNorm's: the row's variance plus eps, square-rooted."""
    if out.ndim > 1:
        return lambda x: _normalize_rows(x, out)
    C, dot, multiply = len(out), np.dot, np.multiply
    averaging = np.full(C, 1.0 / C, out.dtype)  # x · averaging is x's mean

    def normalize_row(x):
        mean = float(dot(x, averaging))
        var = float(dot(x, x)) / C - mean * mean
        multiply(x, 1.0 / math.sqrt(max(var, 0.0) + L.LN_EPS), out=out)
    return normalize_row


def _centered(W):
    """W (C, N) less the mean of its rows: x W_centered = (x - mean x) W, so a LayerNorm need not center."""
    return W - W.mean(axis=0, keepdims=True)


def _with_ones(x):
    """x (R, K) with a column of ones after it, (R, K+1): what reads a bias folded into a last weight row."""
    return np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)


def _normalize_rows(x, out=None):
    """(x - mean) / sqrt(var + eps) of each row of x (R, C), into ``out`` or a new array: LayerNorm before its
    gain and shift."""
    out = np.subtract(x, np.add.reduce(x, axis=1, keepdims=True) * (1.0 / x.shape[1]), out=out)
    var = np.add.reduce(out * out, axis=1, keepdims=True)  # (R, 1): C times the variance
    var *= 1.0 / x.shape[1]
    var += L.LN_EPS
    out /= np.sqrt(var, out=var)
    return out


def _double_gelu(x, t, multiply=np.multiply, add=np.add, tanh=np.tanh):
    """x <- 2 GELU(x) = x (1 + tanh(k (x + a x^3))), in place; ``t``, x's shape, is scratch (as
    attention.gelu_tanh, with numpy's functions bound once: this runs once per block and character)."""
    multiply(x, x, out=t)
    multiply(t, L.GELU_A * L.GELU_K, out=t)
    add(t, L.GELU_K, out=t)
    multiply(t, x, out=t)
    tanh(t, out=t)
    add(t, 1.0, out=t)
    multiply(x, t, out=x)
