"""One step of each recurrent cell: analytic gradients against centred numerical differences (float64)."""

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error

from charrnn.nn.cells import Scratch, make_cell, make_step_weights

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid"), ("lstm", "tanh"), ("gru", "tanh")]


@pytest.mark.parametrize("model,activation", CELLS)
def test_cell_step_gradients(model, activation):
    """One step: gradients w.r.t. x_proj and every part of the previous state."""
    rng = np.random.default_rng(0)
    cell = make_cell(model, activation)
    B, H = 3, 4
    G = cell.n_gates * H
    p = {"W_xh": np.zeros((1, G)), "b": np.zeros(G), "W_hh": rng.normal(0, 0.5, (H, G))}
    if model == "gru":
        p["b_hn"] = rng.normal(0, 0.5, H)
    if activation == "relu":  # keep pre-activations away from the kink at 0
        p["W_hh"] *= 0.1
    x_proj = rng.normal(0, 1, (B, G))
    if activation == "relu":
        x_proj = np.abs(x_proj) + 0.5
    prev = tuple(rng.normal(0, 1, (B, H)) for _ in cell.state_names)
    weights = tuple(rng.normal(0, 1, (B, H)) for _ in cell.state_names)  # loss = sum(w * next state)

    step_weights = make_step_weights(cell, p, B)
    scale = cell.gate_scale(H)
    scale = 1.0 if scale is None else scale

    def run():
        gates = x_proj * scale  # as the layer hands them over (see cells.py)
        nxt = tuple(np.empty((B, H)) for _ in cell.state_names)
        extra = tuple(np.empty((B, w * H)) for w in cell.extra_widths)
        d_hproj = np.empty((B, G)) if cell.separate_hproj_grad else gates
        cache = cell.step_views(gates, prev, nxt, extra, d_hproj)
        cell.step_forward(cache, step_weights, Scratch.make(cell, B, H, np.float64))
        return nxt, cache

    def loss():
        nxt, _ = run()
        return sum(float(np.sum(w * s)) for w, s in zip(weights, nxt))

    nxt, cache = run()
    dnxt = tuple(w.copy() for w in weights)
    dprev = cell.step_backward(dnxt, cache, step_weights, Scratch.make(cell, B, H, np.float64))
    d_xproj = cache[0]  # the gates buffer (each cache's first field) now holds d(x_proj)
    assert rel_error(d_xproj, numerical_grad(loss, x_proj)) < 1e-6
    for analytic, state in zip(dprev, prev):
        assert rel_error(analytic, numerical_grad(loss, state)) < 1e-6
