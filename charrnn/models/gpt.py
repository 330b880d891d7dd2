"""A decoder-only character Transformer (GPT): Pre-LayerNorm blocks of causal self-attention and a GELU MLP.

    model = CharGPT(GPTConfig(vocab_size=65, hidden_size=128, num_layers=4, num_heads=4, context_length=64))
    logits, _ = model.forward(ids)                  # ids (T, B) int, T <= context_length -> logits (T, B, V)
    loss, grads, _ = model.loss_and_grads(inputs, targets)

The surface is CharRNN's (rnn.py), so the engines, scoring and checkpoints drive either: ids are
(T, B), parameters a ``Packed`` dict of named arrays, and the state carried between chunks is none
(``()``): a Transformer sees only the characters of its window. ``start_sampling`` primes a key/value
cache for generating one character at a time.

    x = wte[ids] + wpe[:T]                                   # (B, T, C)
    for each block:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))
    logits = ln_f(x) W_hy + b_y                              # (B, T, V)

Parameters: ``wte`` (V, C), ``wpe`` (P, C), per block k ``h{k}.ln1.g``/``.b`` (C,), ``h{k}.attn.W_qkv``
(C, 3C), ``h{k}.attn.b_qkv`` (3C,), ``h{k}.attn.W_proj`` (C, C), ``h{k}.attn.b_proj`` (C,), ``h{k}.ln2.g``/``.b``,
``h{k}.mlp.W_fc`` (C, 4C), ``h{k}.mlp.b_fc`` (4C,), ``h{k}.mlp.W_proj`` (4C, C), ``h{k}.mlp.b_proj`` (C,),
``ln_f.g``/``.b``, ``W_hy`` (C, V), ``b_y`` (V,). The output layer is not tied to ``wte`` (docs/models.md).
Dropout (training only) acts where nanoGPT's does: on the embeddings, on the attention weights after
the softmax (``attn_dropout``) and on each residual branch's output (``resid_dropout``).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..blas import blas_threads
from ..nn import attention as L
from ..nn.packed import Packed, model_params

DTYPES = ("float32", "float64")


@dataclass
class GPTConfig:
    """The Transformer's shape."""

    vocab_size: int
    model: str = "gpt"
    hidden_size: int = 128  # C, the embedding width
    num_layers: int = 4
    num_heads: int = 4
    context_length: int = 64  # P: the most characters the model sees, the rows of the position table
    dropout: float = 0.0
    dtype: str = "float32"

    def validate(self):
        """Raise ValueError with a one-line reason if a field is out of range."""
        if self.model != "gpt":
            raise ValueError(f"GPTConfig is for model gpt, not {self.model!r}")
        if self.vocab_size < 2:
            raise ValueError(f"vocabulary needs at least 2 symbols, got {self.vocab_size}")
        if min(self.hidden_size, self.num_layers, self.num_heads, self.context_length) < 1:
            raise ValueError("hidden size, number of layers, number of heads and context length must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"--num-heads {self.num_heads} does not divide --hidden-size {self.hidden_size} "
                "(each head gets hidden-size / num-heads of the width)"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")


def param_shapes(config):
    """The shape of every parameter, by name, for ``config``."""
    C, V, P = config.hidden_size, config.vocab_size, config.context_length
    shapes = {"wte": (V, C), "wpe": (P, C)}
    for k in range(config.num_layers):
        shapes.update({
            f"h{k}.ln1.g": (C,), f"h{k}.ln1.b": (C,),
            f"h{k}.attn.W_qkv": (C, 3 * C), f"h{k}.attn.b_qkv": (3 * C,),
            f"h{k}.attn.W_proj": (C, C), f"h{k}.attn.b_proj": (C,),
            f"h{k}.ln2.g": (C,), f"h{k}.ln2.b": (C,),
            f"h{k}.mlp.W_fc": (C, 4 * C), f"h{k}.mlp.b_fc": (4 * C,),
            f"h{k}.mlp.W_proj": (4 * C, C), f"h{k}.mlp.b_proj": (C,),
        })  # fmt: skip
    shapes.update({"ln_f.g": (C,), "ln_f.b": (C,), "W_hy": (C, V), "b_y": (V,)})
    return shapes


def init_params(config, rng):
    """GPT-2's initialisation, as nanoGPT's: weights N(0, 0.02), the residual projections N(0, 0.02 /
    sqrt(2 L)), biases 0, LayerNorm gains 1."""
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".g"):
            value = np.ones(shape)
        elif len(shape) == 1:
            value = np.zeros(shape)
        elif name.endswith("W_proj"):
            value = rng.normal(0.0, 0.02 / math.sqrt(2 * config.num_layers), shape)
        else:
            value = rng.normal(0.0, 0.02, shape)
        params[name] = value.astype(config.dtype)
    return params


class CharGPT:
    """A stack of Pre-LN Transformer blocks over character and position embeddings; see the module docstring."""

    min_streams_per_worker = 2  # a stream brings T positions of rows to every product: few make a worker's share

    def __init__(self, config, params=None, rng=None):
        """``params``: a dict of arrays named as ``param_shapes(config)`` (copied), or None for a fresh
        initialisation drawn from ``rng``. Raises ValueError if they do not fit the config."""
        config.validate()
        self.config = config
        self.shapes = param_shapes(config)
        self.params = model_params(config, self.shapes, init_params, params, rng)

    @property
    def dtype(self):
        return np.dtype(self.config.dtype)

    @property
    def context_length(self):
        return self.config.context_length

    def num_params(self):
        return self.params.flat.size

    def initial_state(self, batch_size):
        """Nothing is carried between chunks: ``()``."""
        return ()

    def forward(self, ids, state=None):
        """Logits (T, B, V) for ``ids`` (T, B), T <= context_length, and the (empty) state."""
        ids = np.asarray(ids)
        x, _ = self._forward(ids.T, masks=None)
        return self._logits(x).transpose(1, 0, 2), ()

    def loss_and_grads(self, inputs, targets, state=None, dropout_rng=None, out=None, weight_drop_rng=None,
                       dropout=None):
        """Mean cross-entropy of predicting ``targets`` from ``inputs`` (both (T, B)), and its gradient.

        Returns (loss, grads, ()); grads is a ``Packed`` dict keyed like ``params`` (``out``, if given:
        every element is overwritten). ``dropout_rng`` switches dropout on, at ``dropout`` if given, else
        the config's rate. ``state`` and ``weight_drop_rng`` are accepted for the engines and unused.
        """
        inputs, targets = np.asarray(inputs).T, np.asarray(targets).T  # (B, T)
        B, T = inputs.shape
        C = self.config.hidden_size
        rate = self.config.dropout if dropout is None else dropout
        masks = None
        if dropout_rng is not None and rate > 0:
            masks = _DropoutMasks(dropout_rng, rate, (B, T, C), self.config.num_heads, self.config.num_layers,
                                  self.dtype)
        x, caches = self._forward(inputs, masks)
        xf, lnf_cache = L.layernorm_forward(x.reshape(B * T, C), self.params["ln_f.g"], self.params["ln_f.b"])
        logits = xf @ self.params["W_hy"]  # (B·T, V)
        logits += self.params["b_y"]
        loss, dlogits = _softmax_cross_entropy(logits, targets.reshape(-1))
        grads = Packed(self.shapes, self.dtype) if out is None else out
        np.matmul(xf.T, dlogits, out=grads["W_hy"])
        np.add.reduce(dlogits, axis=0, out=grads["b_y"])
        lnf = L.layernorm_backward(dlogits @ self.params["W_hy"].T, lnf_cache)
        grads["ln_f.g"][...] = lnf["g"]
        grads["ln_f.b"][...] = lnf["b"]
        dx = lnf["x"].reshape(B, T, C)
        for k in reversed(range(self.config.num_layers)):
            dx = self._block_backward(k, dx, caches["blocks"][k], masks, grads)
        if masks is not None:
            dx *= masks.embedding
        emb = L.embedding_backward(dx, caches["embedding"])
        grads["wte"][...] = emb["wte"]
        grads["wpe"][...] = emb["wpe"]
        return loss, grads, ()

    def start_sampling(self, prime, batch_size=1):
        """A ``KVSampler`` for ``batch_size`` streams primed with ``prime`` (n,) ids, and the logits (V,) for
        the character after it."""
        sampler = KVSampler(self, batch_size)
        logits = sampler.prime(np.repeat(np.asarray(prime)[None, -self.context_length :], batch_size, axis=0))
        return sampler, logits[0]

    # ---- the passes ----------------------------------------------------------------------------------------

    def _forward(self, ids, masks):
        """ids (B, T) -> the last block's output x (B, T, C) and the caches backward reads."""
        B, T = ids.shape
        if T > self.config.context_length:
            raise ValueError(f"{T} positions is more than the model's context of {self.config.context_length}")
        p = self.params
        x, emb_cache = L.embedding_forward(ids, p["wte"], p["wpe"])  # (B, T, C)
        if masks is not None:
            x *= masks.embedding
        blocks = []
        for k in range(self.config.num_layers):
            x, cache = self._block_forward(k, x, masks)
            blocks.append(cache)
        return x, {"embedding": emb_cache, "blocks": blocks}

    def _logits(self, x):
        """x (B, T, C) -> logits (B, T, V) through ln_f and the output layer."""
        B, T, C = x.shape
        xf, _ = L.layernorm_forward(x.reshape(B * T, C), self.params["ln_f.g"], self.params["ln_f.b"])
        logits = xf @ self.params["W_hy"]
        logits += self.params["b_y"]
        return logits.reshape(B, T, -1)

    def _block_forward(self, k, x, masks):
        """Block k over x (B, T, C): x + attn(ln1(x)), then + mlp(ln2(.)); a new (B, T, C) array."""
        B, T, C = x.shape
        p, h = self.params, f"h{k}."
        a, ln1 = L.layernorm_forward(x.reshape(B * T, C), p[h + "ln1.g"], p[h + "ln1.b"])
        a, attn = L.attention_forward(a.reshape(B, T, C), p[h + "attn.W_qkv"], p[h + "attn.b_qkv"],
                                      p[h + "attn.W_proj"], p[h + "attn.b_proj"], self.config.num_heads,
                                      att_mask=None if masks is None else masks.weights[k])
        if masks is not None:
            a *= masks.attn[k]
        x = x + a  # (B, T, C)
        m, ln2 = L.layernorm_forward(x.reshape(B * T, C), p[h + "ln2.g"], p[h + "ln2.b"])
        m, mlp = L.mlp_forward(m, p[h + "mlp.W_fc"], p[h + "mlp.b_fc"], p[h + "mlp.W_proj"], p[h + "mlp.b_proj"])
        m = m.reshape(B, T, C)
        if masks is not None:
            m *= masks.mlp[k]
        x += m
        return x, (ln1, attn, ln2, mlp)

    def _block_backward(self, k, dx, cache, masks, grads):
        """dx (B, T, C), the gradient at block k's output -> the gradient at its input; fills grads."""
        B, T, C = dx.shape
        ln1, attn, ln2, mlp = cache
        h = f"h{k}."
        dm = dx if masks is None else dx * masks.mlp[k]
        g = L.mlp_backward(dm.reshape(B * T, C), mlp)
        for name in ("W_fc", "b_fc", "W_proj", "b_proj"):
            grads[h + "mlp." + name][...] = g[name]
        g = L.layernorm_backward(g["x"], ln2)
        grads[h + "ln2.g"][...], grads[h + "ln2.b"][...] = g["g"], g["b"]
        dx = dx + g["x"].reshape(B, T, C)  # the residual path and the MLP's
        da = dx if masks is None else dx * masks.attn[k]
        g = L.attention_backward(da, attn)
        for name in ("W_qkv", "b_qkv", "W_proj", "b_proj"):
            grads[h + "attn." + name][...] = g[name]
        g = L.layernorm_backward(g["x"].reshape(B * T, C), ln1)
        grads[h + "ln1.g"][...], grads[h + "ln1.b"][...] = g["g"], g["b"]
        dx += g["x"].reshape(B, T, C)
        return dx


class _DropoutMasks:
    """Inverted-dropout masks for one training step: (B, T, C) for the embeddings and each block's two
    branches, (B, nh, T, T) for each block's attention weights."""

    def __init__(self, rng, rate, shape, num_heads, num_layers, dtype):
        keep = 1.0 - rate
        B, T, _ = shape

        def mask(shape):
            return (rng.random(shape, dtype=np.float32) < keep).astype(dtype) / dtype.type(keep)

        self.embedding = mask(shape)
        self.attn = [mask(shape) for _ in range(num_layers)]
        self.mlp = [mask(shape) for _ in range(num_layers)]
        self.weights = [mask((B, num_heads, T, T)) for _ in range(num_layers)]


def _softmax_cross_entropy(logits, targets):
    """Mean cross-entropy (nats) of (N, V) logits against (N,) targets, and its gradient (in ``logits``)."""
    N = logits.shape[0]
    rows = np.arange(N)
    logits -= logits.max(axis=1, keepdims=True)
    target_logits = logits[rows, targets]  # (N,)
    probs = np.exp(logits, out=logits)
    total = probs.sum(axis=1, keepdims=True)  # (N, 1)
    loss = float((np.log(total).sum() - target_logits.sum()) / N)
    probs *= 1.0 / (total * N)
    probs[rows, targets] -= 1.0 / N
    return loss, probs


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
