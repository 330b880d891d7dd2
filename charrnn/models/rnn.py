"""The character model: stacked recurrent layers over a character lookup, softmax output.

    model = CharRNN(ModelConfig(vocab_size=65, model="lstm", hidden_size=128, num_layers=2))
    logits, state = model.forward(ids)            # ids (T, B) int -> logits (T, B, V)
    layers, state = model.forward_states(ids)     # every step's states and gates: layers[k]["h"] (T, B, H)
    loss, grads, state = model.loss_and_grads(inputs, targets, state)

``state`` is a tuple of arrays, each (num_layers, B, H): ``(h,)`` for rnn and gru, ``(h, c)`` for lstm,
as ``nn.RNN``/``nn.LSTM`` return them. ``None`` means zeros.

Parameters live in ``model.params``, a dict keyed by name: ``l{k}.W_xh`` (V or H, G·H), ``l{k}.W_hh``
(H, G·H), ``l{k}.b`` (G·H,), ``l{k}.b_hn`` (H,) for gru, ``W_hy`` (H, V), ``b_y`` (V,). Layer 0's
``W_xh`` is read by row (the one-hot input is a lookup, never a product).
"""

from dataclasses import dataclass

import numpy as np

from ..nn.cells import LayerBuffers, input_rows, make_cell, make_step_weights
from ..nn.layers import init_layer, layer_params, layer_shapes
from ..nn.numerics import DTYPES, scatter_rows, softmax_cross_entropy
from ..nn.packed import Packed, model_params
from .rnn_steppers import PRIME_CHUNK, InPlaceStepper, Stepper

RNN_KINDS = ("rnn", "lstm", "gru")


@dataclass
class ModelConfig:
    """The model's shape; the defaults are the project's recipe (docs/benchmarks.md, "Choosing the defaults")."""

    vocab_size: int
    model: str = "gru"
    hidden_size: int = 512
    num_layers: int = 2
    activation: str = "tanh"
    dropout: float = 0.2
    weight_drop: float = 0.0  # DropConnect on W_hh: the fraction of recurrent weights dropped per training step
    dtype: str = "float32"

    def validate(self):
        """Raise ValueError with a one-line reason if a field is out of range."""
        if self.model not in RNN_KINDS:
            raise ValueError(f"model must be one of {', '.join(RNN_KINDS)}, not {self.model!r}")
        if self.vocab_size < 2:
            raise ValueError(f"vocabulary needs at least 2 symbols, got {self.vocab_size}")
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError("hidden size and number of layers must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if not 0 <= self.weight_drop < 1:
            raise ValueError(f"weight-drop must be in [0, 1), not {self.weight_drop}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        make_cell(self.model, self.activation)


def init_params(config, rng):
    """Fresh parameters: orthogonal recurrent blocks, LSTM forget bias 1, scaled input/output weights."""
    H, V = config.hidden_size, config.vocab_size
    params = {}
    for k in range(config.num_layers):
        fan_in = V if k == 0 else H
        # a one-hot input's row is the pre-activation itself: give it weight (std 2 learned fastest of 0.05, 0.5,
        # 1 and 2 on tinyshakespeare); a hidden input sums H terms, so 1/sqrt(H) keeps it at unit scale
        input_scale = 2.0 if k == 0 else 1.0 / np.sqrt(fan_in)
        layer = init_layer(config, fan_in, input_scale, rng)
        params.update({f"l{k}.{name}": value for name, value in layer.items()})
    params["W_hy"] = rng.normal(0.0, 1.0 / np.sqrt(H), (H, V))
    params["b_y"] = np.zeros(V)
    return {name: value.astype(config.dtype) for name, value in params.items()}


def param_shapes(config):
    """The shape of every parameter, by name, for ``config``."""
    H, V = config.hidden_size, config.vocab_size
    shapes = {}
    for k in range(config.num_layers):
        shapes.update({f"l{k}.{name}": shape for name, shape in layer_shapes(config, V if k == 0 else H).items()})
    shapes["W_hy"] = (H, V)
    shapes["b_y"] = (V,)
    return shapes


class CharRNN:
    """A stack of recurrent layers with a softmax output; see the module docstring for shapes."""

    context_length = None  # the state carries everything read so far
    min_streams_per_worker = 8  # engines/pool.py: fewer streams make per-step products too small to share
    input_table = "l0.W_xh"  # the parameter the input ids read by row

    def __init__(self, config, params=None, rng=None):
        """``params``: a dict of arrays named as ``param_shapes(config)`` (copied), or None for a fresh
        initialisation drawn from ``rng``. Raises ValueError if they do not fit the config."""
        config.validate()
        self.config = config
        self.cell = make_cell(config.model, config.activation)
        self.shapes = param_shapes(config)
        self.params = model_params(config, self.shapes, init_params, params, rng)  # views into self.params.flat
        self._buffers = {}  # B -> list of LayerBuffers (one per layer), reused across chunks

    @property
    def dtype(self):
        return np.dtype(self.config.dtype)

    def num_params(self):
        return self.params.flat.size

    def initial_state(self, batch_size):
        """Zeros: a tuple of (num_layers, B, H) arrays."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return tuple(np.zeros(shape, self.dtype) for _ in self.cell.state_names)

    def forward(self, ids, state=None):
        """Run over ``ids`` (T, B) from ``state``; return logits (T, B, V) and the final state."""
        top, state = self._forward(np.asarray(ids), state, masks=None, backward=False)
        return self.output(top), state

    def output(self, h):
        """The logits (..., V) for top-layer states ``h`` (..., H): the softmax layer's input."""
        logits = h.reshape(-1, h.shape[-1]) @ self.params["W_hy"] + self.params["b_y"]  # (N, V)
        return logits.reshape(*h.shape[:-1], -1)

    def forward_states(self, ids, state=None):
        """Run over ``ids`` (T, B) from ``state`` as ``forward`` does, keeping what each layer computed at every
        step; return a list with a dict per layer, name -> (T, B, H) array (a copy) whose row t is after reading
        ids[t], and the final state. Names: the cell's states, "h" (and "c" for lstm), and its activated gates,
        "gate_i", "gate_f", "gate_o", "gate_g" for lstm, "gate_r", "gate_z", "gate_n" for gru (rnn: none).
        ``output(layers[-1]["h"])`` is ``forward``'s logits."""
        ids = np.asarray(ids)
        T, B = ids.shape
        _, final_state = self._forward(ids, state, masks=None, backward=False)
        cell, H = self.cell, self.config.hidden_size
        layers = []
        for buf in self._layer_buffers(T, B):
            by_gate = buf.gates[:T].reshape(T, cell.n_gates, B, H)  # each step's slab holds its gates gate-major
            arrays = [seq[1 : T + 1] for seq in buf.states] + [by_gate[:, j] for j in range(len(cell.gate_names))]
            layers.append({name: a.copy() for name, a in zip(self.state_names(), arrays)})
        return layers, final_state

    def state_names(self):
        """The names of a layer's arrays in ``forward_states``: ("h", "c", "gate_i", ...) for an lstm."""
        return (*self.cell.state_names, *(f"gate_{g}" for g in self.cell.gate_names))

    def loss_and_grads(self, inputs, targets, state=None, dropout_rng=None, out=None, weight_drop_rng=None,
                       dropout=None):
        """Mean cross-entropy of predicting ``targets`` from ``inputs`` (both (T, B)), by truncated BPTT.

        Returns (loss, grads, final_state); grads is a ``Packed`` dict keyed like ``params`` (``out``,
        if given: every element is overwritten). No gradient flows into the initial state.
        ``dropout_rng`` (a numpy Generator) switches dropout and weight drop on; the weight-drop masks
        come from ``weight_drop_rng`` if given (processes that share a step must share those masks).
        ``dropout`` overrides the config's rate for this step (a schedule's).
        """
        inputs, targets = np.asarray(inputs), np.asarray(targets)
        T, B = inputs.shape
        H = self.config.hidden_size
        masks = weight_masks = None
        if dropout_rng is not None and self.config.weight_drop > 0:
            rng, keep = weight_drop_rng or dropout_rng, 1.0 - self.config.weight_drop
            weight_masks = [
                (rng.random(self.shapes[f"l{k}.W_hh"], dtype=np.float32) < keep).astype(self.dtype) / keep
                for k in range(self.config.num_layers)
            ]  # (H, G·H) each
        dropout = self.config.dropout if dropout is None else dropout
        if dropout_rng is not None and dropout > 0:
            keep = 1.0 - dropout
            masks = [
                (dropout_rng.random((T, B, H), dtype=np.float32) < keep).astype(self.dtype) / keep
                for _ in range(self.config.num_layers)
            ]
        top, final_state = self._forward(inputs, state, masks, weight_masks, backward=True)
        top2d = top.reshape(T * B, H)  # (T·B, H)
        logits = top2d @ self.params["W_hy"] + self.params["b_y"]
        loss, dlogits = softmax_cross_entropy(logits, targets.reshape(-1))
        grads = Packed(self.shapes, self.dtype) if out is None else out
        np.matmul(top2d.T, dlogits, out=grads["W_hy"])
        np.add.reduce(dlogits, axis=0, out=grads["b_y"])
        d_top = (dlogits @ self.params["W_hy"].T).reshape(T, B, H)
        self._backward(inputs, d_top, masks, grads, weight_masks)
        return loss, grads, final_state

    def start_sampling(self, prime, batch_size=1):
        """A ``Stepper`` (rnn_steppers.py; an ``InPlaceStepper`` for an LSTM or RNN) for ``batch_size`` streams
        after ``prime`` (n,) ids, read in pieces of ``PRIME_CHUNK`` (a seed of any length costs time, not
        memory), and the logits (V,) after them."""
        prime, state = np.asarray(prime), self.initial_state(1)
        for j in range(0, len(prime), PRIME_CHUNK):
            logits, state = self.forward(prime[j : j + PRIME_CHUNK, None], state)  # (T, 1, V)
        stepper = InPlaceStepper if self.cell.whole_preactivation else Stepper
        return stepper(self, tuple(np.repeat(s, batch_size, axis=1) for s in state)), logits[-1, 0]

    def step_weights(self, k, batch_size, weight_mask=None, backward=True):
        """Layer k's ``StepWeights`` at ``batch_size`` (cells.make_step_weights: the gate scale folded in;
        W_hh times ``weight_mask``, weight drop, if given; with what backward reads if ``backward``; layer 0
        a lookup)."""
        return make_step_weights(self.cell, layer_params(self.params, f"l{k}."), batch_size, weight_mask, backward,
                                 lookup=k == 0)

    def _layer_buffers(self, T, B):
        """The layers' buffers for batch B, holding at least T timesteps."""
        layers = self._buffers.get(B)
        if layers is None or layers[0].capacity < T:
            H, G = self.config.hidden_size, self.cell.n_gates * self.config.hidden_size
            # backward goes one layer at a time, so the layers can share one d(h_proj) buffer
            d_hproj = np.empty((T, B, G), self.dtype) if self.cell.separate_hproj_grad else None
            layers = [LayerBuffers(self.cell, T, B, H, self.dtype, d_hproj) for _ in range(self.config.num_layers)]
            self._buffers[B] = layers
        return layers

    def _forward(self, ids, state, masks, weight_masks=None, backward=True):
        """Fill the layer buffers for ``ids`` (T, B); return the top layer's output (T, B, H) and state.
        ``backward``: a backward pass will follow (the steps then get what it reads)."""
        T, B = ids.shape
        if state is None:
            state = self.initial_state(B)
        buffers = self._layer_buffers(T, B)
        x = None  # the layer's input, (T, B, H) for layers above the first
        for k, buf in enumerate(buffers):
            mask = None if weight_masks is None else weight_masks[k]
            step_weights = buf.step_weights = self.step_weights(k, B, mask, backward)
            gates = buf.gates[:T]  # (T, B, G)
            G = gates.shape[2]
            if k == 0:  # the one-hot input as a lookup, bias included
                input_rows(step_weights, ids, gates)
            else:
                np.matmul(x.reshape(T * B, -1), step_weights.W_xh, out=gates.reshape(T * B, G))
                gates += step_weights.b
            for seq, s in zip(buf.states, state):
                seq[0] = s[k]
            self._steps_forward(buf, step_weights, T)
            x = buf.states[0][1 : T + 1]  # (T, B, H)
            if masks is not None:
                x = x * masks[k]
            buf.output = x
        final_state = tuple(np.stack([buf.states[i][T] for buf in buffers]) for i in range(len(state)))
        return x, final_state

    def _backward(self, ids, d_top, masks, grads, weight_masks=None):
        """Backpropagate d_top (T, B, H) through the layers filled by ``_forward``, into ``grads``."""
        T, B = ids.shape
        H = self.config.hidden_size
        buffers = self._layer_buffers(T, B)
        dx = d_top
        for k in reversed(range(self.config.num_layers)):
            buf = buffers[k]
            if masks is not None:
                dx = dx * masks[k]
            buf.steps_backward(dx)
            d_xproj = buf.recurrent_grads(T, grads, f"l{k}.")  # (T·B, G)
            if weight_masks is not None:
                grads[f"l{k}.W_hh"] *= weight_masks[k]
            if k == 0:
                scatter_rows(ids.reshape(-1), d_xproj, out=grads["l0.W_xh"])
            else:
                np.matmul(buffers[k - 1].output.reshape(T * B, H).T, d_xproj, out=grads[f"l{k}.W_xh"])
                dx = (d_xproj @ self.params[f"l{k}.W_xh"].T).reshape(T, B, H)

    def _steps_forward(self, buf, step_weights, T):
        """The recurrence over T timesteps of one layer: the only per-step work in the forward pass."""
        step, scratch = self.cell.step_forward, buf.scratch
        for cache in buf.caches[:T]:
            step(cache, step_weights, scratch)
