"""A recurrent layer's parameters, as the language model (models/rnn.py) and the classifier's encoder
(classify/model.py) share them: names and shapes, and a fresh initialisation.

    shapes = layer_shapes(config, n_in)       # {"W_xh": (n_in, G·H), "W_hh": (H, G·H), "b": (G·H,), "b_hn": (H,)}
    params = init_layer(config, n_in, input_scale, rng)
    own = layer_params(model.params, "l0.")   # one layer's parameters, without their prefix

``config`` is either model's config: its ``model`` (rnn, lstm, gru), ``activation`` and ``hidden_size``
are read; ``b_hn`` (GRU's recurrent bias of n) only for gru.
"""

import numpy as np

from .cells import make_cell
from .numerics import orthogonal


def layer_shapes(config, n_in):
    """The shape of each of a layer's parameters, by name without the layer's prefix."""
    H = config.hidden_size
    G = make_cell(config.model, config.activation).n_gates * H
    shapes = {"W_xh": (n_in, G), "W_hh": (H, G), "b": (G,)}
    if config.model == "gru":
        shapes["b_hn"] = (H,)
    return shapes


def init_layer(config, n_in, input_scale, rng):
    """Fresh float64 parameters of a layer, drawn from ``rng`` in this order: W_xh ~ N(0, input_scale),
    W_hh one orthogonal (H, H) block per gate, then zero biases but an LSTM's forget gate's, at 1."""
    H = config.hidden_size
    G = make_cell(config.model, config.activation).n_gates
    params = {"W_xh": rng.normal(0.0, input_scale, (n_in, G * H)),
              "W_hh": np.concatenate([orthogonal(H, rng) for _ in range(G)], axis=1)}
    bias = np.zeros(G * H)
    if config.model == "lstm":
        bias[H : 2 * H] = 1.0
    params["b"] = bias
    if config.model == "gru":
        params["b_hn"] = np.zeros(H)
    return params


def layer_params(params, prefix):
    """The parameters whose names start with ``prefix`` (a layer's), without it: W_xh, W_hh, b (and b_hn)."""
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}
