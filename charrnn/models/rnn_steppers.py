"""Running a recurrent model (rnn.py) one character at a time for B streams, as sampling does.

    stepper = Stepper(model, state)            # state: a tuple of (L, B, H) arrays, as CharRNN's
    logits = stepper.step(ids)                 # ids (B,) -> logits (B, V) for the next characters
    stepper.reorder(rows)                      # rows (B,): stream b goes on from stream rows[b]'s state

``Stepper`` runs every cell: each layer's step into preallocated buffers, read and written in turn.
``InPlaceStepper`` runs an LSTM or Elman RNN, whose forward step reads h_prev only in its product, with
each layer's state updated in place: the same numbers in fewer calls. ``CharRNN.start_sampling`` primes
one after reading a seed in passes of ``PRIME_CHUNK`` characters.
"""

from typing import NamedTuple

import numpy as np
from numpy import add, matmul

from ..nn.cells import Scratch, input_table, product_blocks

PRIME_CHUNK = 4096  # characters of a seed read in one forward pass: a seed of any length costs time, not memory


class Stepper:
    """Runs a model one character at a time for a batch of B streams from a given state (L, B, H)."""

    def __init__(self, model, state):
        self.model = model
        cfg, cell = model.config, model.cell
        self.batch_size = B = state[0].shape[1]
        H, G, dtype = cfg.hidden_size, cell.n_gates * cfg.hidden_size, model.dtype
        self.step_weights = [model.step_weights(k, B, backward=False) for k in range(cfg.num_layers)]
        self.gates = [np.empty((B, G), dtype) for _ in range(cfg.num_layers)]
        states = [
            [tuple(np.array(s[k], dtype) for s in state), tuple(np.empty((B, H), dtype) for _ in cell.state_names)]
            for k in range(cfg.num_layers)
        ]  # per layer: two state buffers, read and written in turn
        extra = tuple(np.empty((B, w * H), dtype) for w in cell.extra_widths)
        # per layer, the step's arrays in both directions (a -> b, b -> a), views made once
        self.caches = [
            [cell.step_views(self.gates[k], a, b, extra, self.gates[k]) for a, b in (pair, pair[::-1])]
            for k, pair in enumerate(states)
        ]
        self.outputs = [[pair[1][0], pair[0][0]] for pair in states]  # the h each direction writes
        self.states = states
        self.parity = 0
        self.scratch = [Scratch.make(cell, B, H, dtype) for _ in range(cfg.num_layers)]
        self.logits = np.empty((B, cfg.vocab_size), dtype)
        self.input_table = input_table(self.step_weights[0])  # (V, G): lookup with bias
        self.W_hy, self.b_y = model.params["W_hy"], model.params["b_y"]

    def step(self, ids):
        """Feed character ids (B,); return the logits (B, V) for the next characters."""
        step_forward, x, parity = self.model.cell.step_forward, None, self.parity
        for k, step_weights in enumerate(self.step_weights):
            gates = self.gates[k]
            if k == 0:
                if self.batch_size == 1:
                    gates[0] = self.input_table[ids[0]]  # a row, without a gather's set-up
                else:
                    np.take(self.input_table, ids, axis=0, out=gates)
            else:
                np.matmul(x, step_weights.W_xh, gates)
                np.add(gates, step_weights.b, gates)
            step_forward(self.caches[k][parity], step_weights, self.scratch[k])
            x = self.outputs[k][parity]
        self.parity = 1 - parity
        np.matmul(x, self.W_hy, self.logits)
        np.add(self.logits, self.b_y, self.logits)
        return self.logits

    def reorder(self, rows):
        """Stream b goes on from stream ``rows[b]``'s state (rows (B,), repeats allowed): beam search's step."""
        for pair in self.states:
            for s in pair[self.parity]:  # the buffers the next step reads
                s[...] = s[rows]


class _InPlaceLayer(NamedTuple):
    """A layer as ``InPlaceStepper`` runs it: the pre-activation ``x @ weights`` (by gate block) plus the bias,
    or for the first layer its input table's rows, then the cell's ``activate`` with ``cache`` and ``scratch``."""

    x: np.ndarray  # (B, H) or (B, 2H): a view of InPlaceStepper.hs
    weights: np.ndarray  # (n, H or 2H, G/n): gate-scaled, in n column blocks (cells.product_blocks)
    bias: np.ndarray | None  # (n, 1, G/n); None for the first layer
    table: np.ndarray | None  # the first layer's input table (n, V, G/n), its bias included
    rows: np.ndarray | None  # (n, B, G/n): the first layer's gathered rows, above batch 1
    pre: np.ndarray  # (n, B, G/n): the step's gates slab, in the blocks the product writes
    cache: tuple  # the cell's step views of the slab and the layer's state
    scratch: Scratch


class InPlaceStepper:
    """B streams of an LSTM or Elman RNN, one character at a time: ``Stepper``'s results in fewer calls.

    Run forward only, these cells read h_prev only in their product, so each layer's state is updated
    in place, and every layer's h sits side by side in one array ``hs`` (B, L·H). Layer k's input and
    its own previous h, [h_{k-1}, h_k], are then one (B, 2H) slice: one product with the stacked
    weights [W_xh; W_hh] (by gate above batch 1, as training's steps, so the gates land gate-major) and
    one add of the bias form the whole pre-activation (the first layer adds its input table's rows to
    h_0 W_hh instead), and the cell's ``activate`` runs on it in place. Per layer and character: two or
    three calls before the gate math, where ``Stepper`` makes four or five.
    """

    def __init__(self, model, state):
        cfg, cell, dtype = model.config, model.cell, model.dtype
        if not cell.whole_preactivation:
            raise ValueError("InPlaceStepper runs an LSTM or Elman RNN")
        L, H, G = cfg.num_layers, cfg.hidden_size, cell.n_gates * cfg.hidden_size
        self.batch_size = B = state[0].shape[1]
        n = product_blocks(cell, B)
        self.activate = cell.activate
        self.hs = np.empty((B, L * H), dtype)  # every layer's h, side by side
        self.layers = []  # an _InPlaceLayer per layer
        self.cell_states = []  # every layer's states after h (an LSTM's c), read and written in place
        for k in range(L):
            w = model.step_weights(k, B, backward=False)  # the gate scale folded in (nn/cells.py)
            h = self.hs[:, k * H : (k + 1) * H]
            h[...] = state[0][k]
            states = (h, *(np.array(s[k], dtype) for s in state[1:]))  # read and written in place
            self.cell_states += states[1:]
            slab = np.empty((B, G), dtype)
            extra = tuple(np.empty((B, width * H), dtype) for width in cell.extra_widths)
            cache = cell.step_views(slab, states, states, extra, slab)
            pre = slab.reshape(n, B, G // n)  # what the cell's views read, gate-major above batch 1
            if k == 0:  # h_0 W_hh plus the input's row of W_xh + b
                x, weights, bias, table = h, w.W_hh_blocks, None, _blocks(input_table(w), n)
            else:  # [h_{k-1}, h_k] (B, 2H) x [W_xh; W_hh] (2H, G), plus b
                W_hh = w.W_hh_blocks.transpose(1, 0, 2).reshape(H, G)
                x, weights = self.hs[:, (k - 1) * H : (k + 1) * H], _blocks(np.concatenate([w.W_xh, W_hh]), n)
                bias, table = _blocks(w.b[None], n), None
            rows = np.empty_like(pre) if k == 0 and B > 1 else None
            scratch = Scratch.make(cell, B, H, dtype)
            self.layers.append(_InPlaceLayer(x, weights, bias, table, rows, pre, cache, scratch))
        self.top = self.hs[:, (L - 1) * H :]  # (B, H)
        self.logits = np.empty((B, cfg.vocab_size), dtype)
        self.W_hy, self.b_y = model.params["W_hy"], model.params["b_y"]

    def step(self, ids):
        """Feed character ids (B,); return the logits (B, V) for the next characters."""
        activate = self.activate
        for x, weights, bias, table, rows, pre, cache, scratch in self.layers:
            matmul(x, weights, pre)
            if bias is not None:
                add(pre, bias, pre)
            elif rows is None:  # the first layer, one stream: its row, without a gather's set-up
                add(pre, table[:, ids[0]], pre)
            else:
                np.take(table, ids, axis=1, out=rows)
                add(pre, rows, pre)
            activate(cache, scratch)
        matmul(self.top, self.W_hy, self.logits)
        add(self.logits, self.b_y, self.logits)
        return self.logits

    def reorder(self, rows):
        """Stream b goes on from stream ``rows[b]``'s state (rows (B,), repeats allowed): beam search's step."""
        for s in (self.hs, *self.cell_states):
            s[...] = s[rows]


def _blocks(matrix, n):
    """(R, G) -> (n, R, G/n), contiguous: the matrix's n column blocks, as a product by gate reads them."""
    R, G = matrix.shape
    return np.ascontiguousarray(matrix.reshape(R, n, G // n).transpose(1, 0, 2))
