"""A decoder-only character Transformer (GPT): Pre-LayerNorm blocks of causal self-attention and a GELU MLP.

    model = CharGPT(GPTConfig(vocab_size=65, hidden_size=128, num_layers=4, num_heads=4, context_length=64))
    logits, _ = model.forward(ids)                  # ids (T, B) int, T <= context_length -> logits (T, B, V)
    logits, weights = model.forward_attention(ids)  # and each block's attention weights (B, nh, T, T)
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
Sampling steps one position at a time against a key/value cache (gpt_sampler.py).
Dropout (training only) acts where nanoGPT's does: on the embeddings, on the attention weights after
the softmax (``attn_dropout``) and on each residual branch's output (``resid_dropout``).
"""

import math
from dataclasses import dataclass

import numpy as np

from ..nn import attention as L
from ..nn.numerics import DTYPES, softmax_cross_entropy
from ..nn.packed import Packed, model_params
from .gpt_sampler import KVSampler


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
    input_table = "wte"  # the parameter the input ids read by row

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

    def forward_attention(self, ids):
        """As ``forward``, the logits (T, B, V) for ``ids`` (T, B), and each block's attention weights: a list of
        (B, nh, T, T) arrays, row i holding position i's weights over positions 0..i (0 after i)."""
        x, caches = self._forward(np.asarray(ids).T, masks=None)
        weights = []
        for _, attn, _, _ in caches["blocks"]:
            _, _, _, _, att, *_ = attn  # attention_forward's cache: (x, q, k, v, att, ...)
            weights.append(att)
        return self._logits(x).transpose(1, 0, 2), weights

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
        loss, dlogits = softmax_cross_entropy(logits, targets.reshape(-1))
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
