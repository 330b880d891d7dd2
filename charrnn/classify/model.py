"""The classifier: a bidirectional recurrent encoder over characters, pooled, then an output layer: a softmax
over the labels, or (``loss="ova"``, fastText's one-vs-all) one sigmoid per label.

    model = Classifier(ClassifierConfig(vocab_size=60, num_classes=12, model="lstm", hidden_size=128))
    vectors = model.encoder.forward(ids, lengths)          # ids (T, B), lengths (B,) descending -> (B, D)
    logits = model.forward(ids, lengths)                   # (B, C)
    probs = model.probabilities(ids, lengths)              # (B, C): softmax rows sum to 1; ova's each in (0, 1)
    loss, grads = model.loss_and_grads(ids, lengths, targets, weights)

D = 2H with ``bidirectional`` (else H). Each layer runs a forward direction over the text and a
backward direction over the text reversed, both with the cells of ``nn/cells.py``; layer k+1 reads the
two directions' outputs joined at each position, (T, B, 2H). ``pool`` makes one vector of the top
layer: ``last`` joins the forward direction's state after the last character and the backward
direction's state after the first (as ``h_n`` of PyTorch's bidirectional LSTM), ``mean`` and ``max``
pool each direction over the text's positions.

Padding and masks. A batch holds texts longest first, right-padded to T. The backward direction reads
each text reversed in place: position s of row b is the text's character len_b - 1 - s, so both
directions see their text at positions 0 .. len_b - 1, then padding. At step t the texts still
running are the first n_t rows; the cells step the whole batch (one product per step), and the rows
past n_t then take back their previous state, so a padded row holds its text's final state (finite
values for the weight-gradient products, whatever the cell). Padding comes after each text in both
directions' order, so the recurrence never carries it into a text's positions, and backward, no
gradient reaches a padded step: a text's result does not depend on what it is batched with (tested).

The losses, for logits z (B, C), example weights w (B,) normalised to s = w / sum(w), and targets y (B, C):
softmax, the cross-entropy sum_b s_b · -sum_c y_bc log softmax(z_b)_c with each row of y a distribution over
the labels; ova, the binary cross-entropies of the C sigmoids summed, sum_b s_b · sum_c [softplus(z_bc) -
y_bc z_bc] (= -y log σ(z) - (1 - y) log(1 - σ(z))) with y_bc 1 for the text's labels and 0 for the others, so
each label's probability σ(z_bc) is independent of the others' (several may be near 1, or none).

Parameters (``model.params``, one Packed vector): ``l{k}.{fwd|bwd}.W_xh`` (V+1 or D, G·H) (layer 0's
read by row; row V is the unknown character), ``.W_hh`` (H, G·H), ``.b`` (G·H,), ``.b_hn`` (H,) for
gru; ``W_out`` (D, C), ``b_out`` (C,).
"""

from dataclasses import dataclass

import numpy as np

from ..models.rnn import RNN_KINDS
from ..nn.cells import LayerBuffers, input_rows, make_cell, make_step_weights
from ..nn.layers import init_layer, layer_params, layer_shapes
from ..nn.numerics import DTYPES, scatter_rows
from ..nn.packed import Packed, model_params

POOLS = ("last", "mean", "max")
LOSSES = ("softmax", "ova")


@dataclass
class ClassifierConfig:
    """The classifier's shape; ``vocab_size`` counts the unknown character's id."""

    vocab_size: int
    num_classes: int
    model: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pool: str = "last"
    activation: str = "tanh"
    dropout: float = 0.3
    dtype: str = "float32"
    loss: str = "softmax"  # the output layer: "softmax" (one distribution over the labels) or "ova" (a sigmoid each)

    @property
    def directions(self):
        return ("fwd", "bwd") if self.bidirectional else ("fwd",)

    @property
    def output_size(self):
        """D: the encoder's vector size."""
        return self.hidden_size * len(self.directions)

    def validate(self):
        """Raise ValueError with a one-line reason if a field is out of range."""
        if self.model not in RNN_KINDS:
            raise ValueError(f"model must be one of {', '.join(RNN_KINDS)}, not {self.model!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {self.pool!r}")
        if self.vocab_size < 2 or self.num_classes < 2:
            raise ValueError("a classifier needs at least two symbols and two classes")
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError("hidden size and number of layers must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        make_cell(self.model, self.activation)


def param_shapes(config):
    """The shape of every parameter, by name."""
    shapes = {}
    for k in range(config.num_layers):
        n_in = config.vocab_size if k == 0 else config.output_size
        for d in config.directions:
            shapes.update({f"l{k}.{d}.{name}": shape for name, shape in layer_shapes(config, n_in).items()})
    shapes["W_out"] = (config.output_size, config.num_classes)
    shapes["b_out"] = (config.num_classes,)
    return shapes


def init_params(config, rng):
    """Fresh parameters, as charrnn's language model starts them (nn/layers.py): one-hot rows of std 2
    (the unknown character's row zero), 1/sqrt(fan-in) otherwise, orthogonal recurrent blocks, LSTM
    forget bias 1."""
    params = {}
    for k in range(config.num_layers):
        n_in = config.vocab_size if k == 0 else config.output_size
        for d in config.directions:
            layer = init_layer(config, n_in, 2.0 if k == 0 else 1.0 / np.sqrt(n_in), rng)
            if k == 0:
                layer["W_xh"][-1] = 0.0  # the unknown character
            params.update({f"l{k}.{d}.{name}": value for name, value in layer.items()})
    params["W_out"] = rng.normal(0.0, 1.0 / np.sqrt(config.output_size), (config.output_size, config.num_classes))
    params["b_out"] = np.zeros(config.num_classes)
    return {name: value.astype(config.dtype) for name, value in params.items()}


def reversal_index(lengths, T):
    """(T·B,) flat index that reverses each text in place: row (t, b) <-> (len_b - 1 - t, b) inside the
    text, padding to itself. Its own inverse."""
    B = len(lengths)
    t = np.arange(T)[:, None]  # (T, 1)
    source = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return (source * B + np.arange(B)[None, :]).reshape(-1)


def active_rows(lengths, T):
    """(T,) n_t: how many texts (the first rows; lengths descending) are still running at step t."""
    return np.searchsorted(-lengths, -np.arange(T), side="left")


class BiEncoder:
    """Texts (as padded ids) to vectors (B, D); see the module docstring. Reads its weights from ``params``
    (a dict of arrays named as ``param_shapes``), which it does not copy."""

    def __init__(self, config, params):
        self.config = config
        self.cell = make_cell(config.model, config.activation)
        self.params = params
        self._buffers = {}  # B -> {(k, d): LayerBuffers}, reused while T fits; the two latest B

    def forward(self, ids, lengths, dropout_rng=None, dropout=None, backward=False):
        """Encode ``ids`` (T, B) of texts of ``lengths`` (B,), longest first: return (B, D).
        ``dropout_rng`` switches dropout on (rate ``dropout``, default the config's) on every layer's
        output; ``backward``: keep what ``backward`` reads."""
        ids, lengths = np.asarray(ids), np.asarray(lengths)
        T, B = ids.shape
        if B == 0 or lengths.min() < 1 or lengths.max() != T or (np.diff(lengths) > 0).any():
            raise ValueError("a batch holds texts of at least one character, longest first, padded to the longest")
        cfg, H = self.config, self.config.hidden_size
        rate = cfg.dropout if dropout is None else dropout
        rev = reversal_index(lengths, T) if cfg.bidirectional else None
        active = active_rows(lengths, T)
        dirs = self._directions(T, B)
        x = None  # (T, B, D): the layer's input, both directions' outputs joined in text order
        self._pass = {"ids": ids, "lengths": lengths, "rev": rev, "inputs": {}, "masks": {}}
        for k in range(cfg.num_layers):
            outputs = []
            for d in cfg.directions:
                run = dirs[k, d]
                own = layer_params(self.params, f"l{k}.{d}.")
                sp = run.step_weights = make_step_weights(self.cell, own, B, backward=backward, lookup=k == 0)
                gates = run.gates[:T]  # (T, B, G)
                if k == 0:
                    x_d = ids if d == "fwd" else ids.reshape(-1)[rev].reshape(T, B)
                    input_rows(sp, x_d, gates)
                else:
                    x_d = x if d == "fwd" else x.reshape(T * B, -1)[rev].reshape(T, B, -1)
                    np.matmul(x_d.reshape(T * B, -1), sp.W_xh, out=gates.reshape(T * B, -1))
                    gates += sp.b
                self._pass["inputs"][k, d] = x_d
                for seq in run.states:
                    seq[0] = 0
                self._steps_forward(run, sp, active)
                y = run.states[0][1 : T + 1]  # (T, B, H), in the direction's own order
                if dropout_rng is not None and rate > 0:
                    mask = (dropout_rng.random((T, B, H), dtype=np.float32) < 1 - rate).astype(y.dtype) / (1 - rate)
                    self._pass["masks"][k, d] = mask
                    y = y * mask
                outputs.append(y)
            if k + 1 < cfg.num_layers:
                x = np.empty((T, B, cfg.output_size), self.dtype)
                x[:, :, :H] = outputs[0]
                if cfg.bidirectional:
                    x.reshape(T * B, -1)[:, H:] = outputs[1].reshape(T * B, H)[rev]
        self._pass["outputs"] = outputs
        return np.concatenate([self._pool(y, lengths) for y in outputs], axis=1)

    @property
    def dtype(self):
        return np.dtype(self.config.dtype)

    def backward(self, d_vectors, grads):
        """Backpropagate d_vectors (B, D) through the last ``forward(..., backward=True)`` into ``grads``
        (a dict of arrays named as the encoder's parameters; every one is overwritten)."""
        cfg, H, p = self.config, self.config.hidden_size, self._pass
        ids, lengths, rev = p["ids"], p["lengths"], p["rev"]
        T, B = ids.shape
        dirs = self._directions(T, B)
        dy = {d: self._unpool(d_vectors[:, i * H : (i + 1) * H], p["outputs"][i], lengths)
              for i, d in enumerate(cfg.directions)}  # (T, B, H) each, the direction's own order
        for k in reversed(range(cfg.num_layers)):
            dx = None  # (T·B, D): gradient w.r.t. this layer's input, text order
            for d in cfg.directions:
                run, name = dirs[k, d], f"l{k}.{d}."
                if (k, d) in p["masks"]:
                    dy[d] = dy[d] * p["masks"][k, d]
                run.steps_backward(dy[d])
                d_xproj = run.recurrent_grads(T, grads, name)  # (T·B, G)
                x_d = p["inputs"][k, d]
                if k == 0:
                    scatter_rows(x_d.reshape(-1), d_xproj, out=grads[name + "W_xh"])
                    continue
                np.matmul(x_d.reshape(T * B, -1).T, d_xproj, out=grads[name + "W_xh"])
                dx_d = d_xproj @ self.params[name + "W_xh"].T  # (T·B, D), the direction's order
                dx = dx_d if dx is None else dx + dx_d[rev]
            if k > 0:
                dy = {"fwd": dx[:, :H].reshape(T, B, H)}
                if cfg.bidirectional:
                    dy["bwd"] = dx[rev, H:].reshape(T, B, H)

    def _pool(self, y, lengths):
        """(B, H) of a direction's outputs y (T, B, H)."""
        T, B, _ = y.shape
        if self.config.pool == "last":
            return y[lengths - 1, np.arange(B)]
        valid = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]  # (T, B, 1)
        if self.config.pool == "mean":
            return (y * valid).sum(axis=0) / lengths[:, None].astype(y.dtype)
        return np.where(valid, y, -np.inf).max(axis=0)

    def _unpool(self, d_pooled, y, lengths):
        """d y (T, B, H) from d_pooled (B, H): the gradient of ``_pool``."""
        T, B, H = y.shape
        dy = np.zeros_like(y)
        if self.config.pool == "last":
            dy[lengths - 1, np.arange(B)] = d_pooled
            return dy
        valid = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]  # (T, B, 1)
        if self.config.pool == "mean":
            return valid * (d_pooled / lengths[:, None].astype(y.dtype))[None]
        at = np.where(valid, y, -np.inf).argmax(axis=0)  # (B, H)
        np.put_along_axis(dy, at[None], d_pooled[None], axis=0)
        return dy

    def _directions(self, T, B):
        """The layers' buffers for batch B holding at least T steps; those of the two batch sizes used
        last are kept (a run's full batches and its last), so memory follows the batches, not their history."""
        runs = self._buffers.pop(B, None)
        if runs is None or next(iter(runs.values())).capacity < T:
            cfg = self.config
            d_hproj = np.empty((T, B, self.cell.n_gates * cfg.hidden_size), self.dtype)  # shared, as in CharRNN
            runs = {(k, d): LayerBuffers(self.cell, T, B, cfg.hidden_size, self.dtype,
                                          d_hproj if self.cell.separate_hproj_grad else None)
                    for k in range(cfg.num_layers) for d in cfg.directions}
        self._buffers[B] = runs  # the most recent last
        while len(self._buffers) > 2:
            del self._buffers[next(iter(self._buffers))]
        return runs

    def _steps_forward(self, buf, sp, active):
        """The recurrence: every row steps; rows past n_t (padding) then take back their previous state."""
        step, scratch, B = self.cell.step_forward, buf.scratch, buf.gates.shape[1]
        for t, n in enumerate(active):
            step(buf.caches[t], sp, scratch)
            if n < B:
                for seq in buf.states:
                    seq[t + 1, n:] = seq[t, n:]


class Classifier:
    """The encoder and an output layer over its vectors: a softmax, or a sigmoid per label (``config.loss``)."""

    def __init__(self, config, params=None, rng=None):
        """``params``: arrays named as ``param_shapes(config)`` (copied), or None: fresh from ``rng``."""
        config.validate()
        self.config = config
        self.shapes = param_shapes(config)
        self.params = model_params(config, self.shapes, init_params, params, rng)
        self.encoder = BiEncoder(config, self.params)

    def num_params(self):
        return self.params.flat.size

    def forward(self, ids, lengths):
        """Logits (B, C) for padded ``ids`` (T, B) of ``lengths`` (B,), longest first."""
        vectors = self.encoder.forward(ids, lengths)
        return vectors @ self.params["W_out"] + self.params["b_out"]

    def probabilities(self, ids, lengths):
        """Label probabilities (B, C) for padded ``ids`` (T, B) of ``lengths`` (B,): the softmax of the logits,
        or with ``loss="ova"`` each label's sigmoid."""
        return PROBABILITIES[self.config.loss](self.forward(ids, lengths))

    def loss_and_grads(self, ids, lengths, targets, weights=None, dropout_rng=None, dropout=None):
        """The weighted mean loss (the module docstring: softmax's cross-entropy against ``targets`` (B, C) rows
        that are distributions over the classes, ova's summed binary cross-entropies against 0/1 rows), with
        example ``weights`` (B,) (default 1), and its gradients (a Packed dict like params)."""
        vectors = self.encoder.forward(ids, lengths, dropout_rng, dropout, backward=True)  # (B, D)
        logits = vectors @ self.params["W_out"] + self.params["b_out"]  # (B, C)
        B = len(lengths)
        weights = np.ones(B) if weights is None else np.asarray(weights, np.float64)
        scale = weights / weights.sum()  # (B,)
        loss, d_logits = OUTPUT_LOSSES[self.config.loss](logits, targets, scale)  # d_logits (B, C)
        d_logits = d_logits.astype(self.params.flat.dtype)
        grads = Packed(self.shapes, self.config.dtype)
        np.matmul(vectors.T, d_logits, out=grads["W_out"])
        np.add.reduce(d_logits, axis=0, out=grads["b_out"])
        self.encoder.backward(d_logits @ self.params["W_out"].T, grads)
        return loss, grads


def softmax_loss(logits, targets, scale):
    """sum_b scale_b · -sum_c targets_bc log softmax(logits_b)_c, and its gradient (B, C) w.r.t. ``logits`` (B, C);
    each row of ``targets`` (B, C) a distribution over the classes (or zero: no known label), ``scale`` (B,)."""
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    loss = float(-(scale[:, None] * targets * log_probs).sum())
    d_logits = (np.exp(log_probs) * targets.sum(axis=1, keepdims=True) - targets) * scale[:, None]
    return loss, d_logits


def ova_loss(logits, targets, scale):
    """sum_b scale_b · sum_c [softplus(logits_bc) - targets_bc logits_bc], the binary cross-entropies of the C
    sigmoids (fastText's one-vs-all), and its gradient (B, C): scale_b (sigmoid(logits_bc) - targets_bc);
    ``targets`` (B, C) 1 for a text's labels, 0 for the others, ``scale`` (B,)."""
    loss = float((scale[:, None] * (np.logaddexp(0, logits) - targets * logits)).sum())
    return loss, (sigmoid(logits) - targets) * scale[:, None]


def softmax(logits):
    """Probabilities (N, C) of logits (N, C)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits):
    """Each logit's probability, 1 / (1 + e^-z), as (1 + tanh(z / 2)) / 2: no overflow for any z."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


OUTPUT_LOSSES = {"softmax": softmax_loss, "ova": ova_loss}
PROBABILITIES = {"softmax": softmax, "ova": sigmoid}
