"""Recurrent cells: one time step forward and one backward, side by side.

A cell's pre-activation at step t is ``x_proj[t] + h[t-1] @ W_hh``. The layer computes ``x_proj``
(input projection plus bias) for all timesteps at once; per step a cell does only what the recurrence
forces: one product with ``W_hh`` (all gates fused, H x G·H) and the elementwise gate math, written in
place into buffers the layer preallocates.

Logistic gates are computed as sigmoid(a) = (1 + tanh(a/2)) / 2, so one ``tanh`` call covers all of
a step's gates. The halving is folded into the weights once per chunk, not into every step: the cell's
``gate_scale`` multiplies the columns of W_xh, b and W_hh that the layer hands to the steps
(``step_params``), so ``gates`` arrive as scale * pre-activation. Gradients are always with respect to
the true (unscaled) pre-activation.

    step_forward(gates, prev, sp, nxt, extra, scratch) -> cache
        gates  (B, G·H)   holds scale * x_proj on entry and the activated gates on return
        prev   tuple of (B, H): the previous state, (h,) or (h, c)
        sp     the layer's step_params(): scaled W_hh, W_hh transposed (contiguous), b_hn for GRU
        nxt    tuple of (B, H): receives the new state
        extra  tuple of (B, w·H) for w in ``extra_widths``: per-step values the backward step needs
    step_backward(dnxt, cache, sp, d_hproj, scratch) -> dprev
        dnxt     tuple of (B, H): gradient of the loss w.r.t. the new state (overwritten: an LSTM
                 returns dc_prev in the buffer that held dc)
        d_hproj  (B, G·H): receives the gradient w.r.t. ``h_prev @ W_hh``; the gradient w.r.t.
                 ``x_proj`` is written over ``gates`` (for LSTM and RNN the two are one array)
        dprev    tuple of (B, H): gradient w.r.t. the previous state

The weight gradients are not formed per step: the layer gets them as one product over all
timesteps from ``gates`` (now d_x_proj) and ``d_hproj``.
"""

import numpy as np

ACTIVATIONS = ("tanh", "relu", "sigmoid")


def tanh_to_sigmoid_(t):
    """Given t = tanh(a/2) in place, leave sigmoid(a) = (1 + t) / 2 there."""
    t *= 0.5
    t += 0.5
    return t


def step_params(cell, p):
    """What a layer's steps read: W_hh with the gate scale folded in, and W_hh^T laid out for backward."""
    scale = cell.gate_scale(p["W_hh"].shape[0])
    W_hh = p["W_hh"] if scale is None else p["W_hh"] * scale.astype(p["W_hh"].dtype)
    sp = {"W_hh": W_hh, "W_hh_T": np.ascontiguousarray(p["W_hh"].T)}
    if "b_hn" in p:
        sp["b_hn"] = p["b_hn"]
    if scale is not None:  # t -> (1 + t) / 2 on logistic gates, t on tanh gates
        logistic = scale == 0.5
        dtype = p["W_hh"].dtype
        sp["affine_scale"] = np.where(logistic, 0.5, 1.0).astype(dtype)
        sp["affine_shift"] = np.where(logistic, 0.5, 0.0).astype(dtype)
    return sp


class RNNCell:
    """Elman cell: h = act(x_proj + h_prev @ W_hh)."""

    n_gates = 1
    state_names = ("h",)
    extra_widths = ()
    separate_hproj_grad = False

    def __init__(self, activation="tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        self.activation = activation

    def gate_scale(self, H):
        return np.full(H, 0.5) if self.activation == "sigmoid" else None

    def step_forward(self, gates, prev, p, nxt, extra, scratch):
        (h_prev,), (h,) = prev, nxt
        np.matmul(h_prev, p["W_hh"], out=scratch["hproj"])
        np.add(gates, scratch["hproj"], out=h)  # pre-activation
        if self.activation == "relu":
            np.maximum(h, 0, out=h)
        else:
            np.tanh(h, out=h)
            if self.activation == "sigmoid":
                tanh_to_sigmoid_(h)
        return gates, h

    def step_backward(self, dnxt, cache, p, d_hproj, scratch):
        dpre, h = cache  # dpre: the gates buffer, overwritten with d(pre-activation)
        (dh,) = dnxt
        if self.activation == "tanh":
            np.multiply(h, h, out=dpre)
            np.subtract(1, dpre, out=dpre)
            dpre *= dh
        elif self.activation == "relu":
            np.greater(h, 0, out=scratch["mask"])
            np.multiply(dh, scratch["mask"], out=dpre)
        else:
            np.subtract(1, h, out=dpre)
            dpre *= h
            dpre *= dh
        dh_prev = scratch["dh_prev"]
        np.matmul(dpre, p["W_hh_T"], out=dh_prev)
        return (dh_prev,)


class LSTMCell:
    """LSTM cell, gates ordered [i, f, o, g]:  c = f*c_prev + i*g,  h = o*tanh(c).

    Backward forms every gate's local derivative, [i(1-i), f(1-f), o(1-o), 1-g^2], over the whole
    contiguous (B, 4H) row at once, so one product with it gives d(pre-activation) instead of a dozen
    passes over strided gate slices; forward keeps only tanh(c) besides the gates.
    """

    n_gates = 4
    state_names = ("h", "c")
    extra_widths = (1,)  # tanh(c)
    separate_hproj_grad = False

    def gate_scale(self, H):
        return np.concatenate([np.full(3 * H, 0.5), np.ones(H)])

    def step_forward(self, gates, prev, p, nxt, extra, scratch):
        (h_prev, c_prev), (h, c), (tanh_c,) = prev, nxt, extra
        H = h.shape[1]
        np.matmul(h_prev, p["W_hh"], out=scratch["hproj"])
        gates += scratch["hproj"]
        np.tanh(gates, out=gates)  # t; sigmoid gates are (1 + t) / 2, see cells.py
        gates *= p["affine_scale"]
        gates += p["affine_shift"]
        i, f, o, g = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        np.multiply(f, c_prev, out=c)
        tmp = scratch["tmp"]
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=tanh_c)
        np.multiply(o, tanh_c, out=h)
        return gates, c_prev, tanh_c

    def step_backward(self, dnxt, cache, p, d_hproj, scratch):
        gates, c_prev, tanh_c = cache  # gates is overwritten with d(pre-activation)
        dh, dc = dnxt
        H = dh.shape[1]
        i, f, o, g = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        tmp, upstream, deriv = scratch["tmp"], scratch["upstream"], scratch["deriv"]
        # dc += dh * o * (1 - tanh_c^2)
        np.multiply(tanh_c, tanh_c, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp
        # d(pre) = [dc*g, dc*c_prev, dh*tanh_c, dc*i] * [s - s^2 for i, f, o; 1 - g^2 for g]
        np.multiply(dc, g, out=upstream[:, :H])
        np.multiply(dc, c_prev, out=upstream[:, H : 2 * H])
        np.multiply(dh, tanh_c, out=upstream[:, 2 * H : 3 * H])
        np.multiply(dc, i, out=upstream[:, 3 * H :])
        dc *= f  # dc_prev, written over dc
        np.multiply(gates, gates, out=deriv)
        np.subtract(gates[:, : 3 * H], deriv[:, : 3 * H], out=deriv[:, : 3 * H])
        np.subtract(1, deriv[:, 3 * H :], out=deriv[:, 3 * H :])
        np.multiply(upstream, deriv, out=gates)
        dh_prev = scratch["dh_prev"]
        np.matmul(gates, p["W_hh_T"], out=dh_prev)
        return dh_prev, dc


class GRUCell:
    """GRU cell, gates ordered [r, z, n], with the recurrent bias of n inside the reset gate:

    r = sig(xr + hr),  z = sig(xz + hz),  n = tanh(xn + r*(hn + b_hn)),  h = (1-z)*n + z*h_prev
    where [hr, hz, hn] = h_prev @ W_hh (one fused product, as in cuDNN and PyTorch).
    """

    n_gates = 3
    state_names = ("h",)
    extra_widths = (1,)  # hn + b_hn
    separate_hproj_grad = True

    def gate_scale(self, H):
        return np.concatenate([np.full(2 * H, 0.5), np.ones(H)])

    def step_forward(self, gates, prev, p, nxt, extra, scratch):
        (h_prev,), (h,), (hn,) = prev, nxt, extra
        H = h.shape[1]
        hproj = scratch["hproj"]
        np.matmul(h_prev, p["W_hh"], out=hproj)
        gates[:, : 2 * H] += hproj[:, : 2 * H]
        np.tanh(gates[:, : 2 * H], out=gates[:, : 2 * H])
        tanh_to_sigmoid_(gates[:, : 2 * H])
        r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
        np.add(hproj[:, 2 * H :], p["b_hn"], out=hn)
        tmp = scratch["tmp"]
        np.multiply(r, hn, out=tmp)
        n += tmp
        np.tanh(n, out=n)
        # h = n + z * (h_prev - n)
        np.subtract(h_prev, n, out=h)
        h *= z
        h += n
        return gates, h_prev, hn

    def step_backward(self, dnxt, cache, p, d_hproj, scratch):
        gates, h_prev, hn = cache  # gates is overwritten with d(x_proj)
        (dh,) = dnxt
        H = dh.shape[1]
        r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
        tmp, one_minus_z, dh_prev = scratch["tmp"], scratch["tmp2"], scratch["dh_prev"]
        dr_h, dz_h, dn_h = d_hproj[:, :H], d_hproj[:, H : 2 * H], d_hproj[:, 2 * H :]
        np.subtract(1, z, out=one_minus_z)
        # d(z pre) = dh * (h_prev - n) * z * (1 - z)
        np.subtract(h_prev, n, out=dz_h)
        dz_h *= dh
        np.multiply(z, one_minus_z, out=tmp)
        dz_h *= tmp
        np.multiply(dh, z, out=dh_prev)  # the direct path h_prev -> h
        # d(n pre) = dh * (1 - z) * (1 - n^2), written over n
        one_minus_z *= dh
        np.multiply(n, n, out=tmp)
        np.subtract(1, tmp, out=tmp)
        np.multiply(tmp, one_minus_z, out=n)
        # d(r pre) = d(n pre) * hn * r * (1 - r);  d(hn) = d(n pre) * r
        np.subtract(1, r, out=tmp)
        tmp *= r
        tmp *= hn
        np.multiply(tmp, n, out=dr_h)
        np.multiply(n, r, out=dn_h)
        gates[:, : 2 * H] = d_hproj[:, : 2 * H]  # r and z: d(x_proj) = d(h_proj)
        dh_prev += np.matmul(d_hproj, p["W_hh_T"], out=scratch["dh_tmp"])
        return (dh_prev,)


def make_cell(model, activation="tanh"):
    """The cell object for a model type: 'rnn' (with its activation), 'lstm' or 'gru'."""
    if model == "rnn":
        return RNNCell(activation)
    if model == "lstm":
        return LSTMCell()
    if model == "gru":
        return GRUCell()
    raise ValueError(f"model must be one of rnn, lstm, gru, not {model!r}")


def scratch_buffers(cell, batch_size, hidden_size, dtype):
    """Per-layer temporaries a cell's steps write into, so no step allocates."""
    H, G = hidden_size, cell.n_gates * hidden_size
    return {
        "hproj": np.empty((batch_size, G), dtype),
        "tmp": np.empty((batch_size, H), dtype),
        "tmp2": np.empty((batch_size, H), dtype),
        "upstream": np.empty((batch_size, G), dtype),
        "deriv": np.empty((batch_size, G), dtype),
        "mask": np.empty((batch_size, H), bool),
        "dh_prev": np.empty((batch_size, H), dtype),
        "dh_tmp": np.empty((batch_size, H), dtype),
    }
