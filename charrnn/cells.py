"""Recurrent cells: one time step forward and one backward, side by side.

A cell's pre-activation at step t is ``x_proj[t] + h[t-1] @ W_hh``. The layer computes ``x_proj``
(input projection plus bias) for all timesteps at once; per step a cell does only what the recurrence
forces: one product with ``W_hh`` (all gates fused, H x G·H) and the elementwise gate math, written in
place into buffers the layer preallocates.

    step_forward(gates, prev, p, nxt, extra, scratch) -> cache
        gates  (B, G·H)   holds x_proj on entry and the activated gates on return
        prev   tuple of (B, H): the previous state, (h,) or (h, c)
        nxt    tuple of (B, H): receives the new state
        extra  tuple of (B, H): per-step values the backward step needs (cell specific)
    step_backward(dnxt, cache, p, d_hproj, scratch) -> dprev
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


def sigmoid_(x):
    """Logistic function in place, via tanh so it is stable for any x."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


class RNNCell:
    """Elman cell: h = act(x_proj + h_prev @ W_hh)."""

    n_gates = 1
    state_names = ("h",)
    n_extra = 0
    separate_hproj_grad = False

    def __init__(self, activation="tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        self.activation = activation

    def step_forward(self, gates, prev, p, nxt, extra, scratch):
        (h_prev,), (h,) = prev, nxt
        np.matmul(h_prev, p["W_hh"], out=scratch["hproj"])
        np.add(gates, scratch["hproj"], out=h)  # pre-activation
        if self.activation == "tanh":
            np.tanh(h, out=h)
        elif self.activation == "relu":
            np.maximum(h, 0, out=h)
        else:
            sigmoid_(h)
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
        np.matmul(dpre, p["W_hh"].T, out=dh_prev)
        return (dh_prev,)


class LSTMCell:
    """LSTM cell, gates ordered [i, f, o, g]:  c = f*c_prev + i*g,  h = o*tanh(c)."""

    n_gates = 4
    state_names = ("h", "c")
    n_extra = 1  # tanh(c)
    separate_hproj_grad = False

    def step_forward(self, gates, prev, p, nxt, extra, scratch):
        (h_prev, c_prev), (h, c), (tanh_c,) = prev, nxt, extra
        H = h.shape[1]
        np.matmul(h_prev, p["W_hh"], out=scratch["hproj"])
        gates += scratch["hproj"]
        sigmoid_(gates[:, : 3 * H])
        np.tanh(gates[:, 3 * H :], out=gates[:, 3 * H :])
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
        tmp, tmp2 = scratch["tmp"], scratch["tmp2"]
        # dc += dh * o * (1 - tanh_c^2)
        np.multiply(tanh_c, tanh_c, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp
        # d(o pre) = dh * tanh_c * o * (1 - o)
        np.subtract(1, o, out=tmp)
        tmp *= tanh_c
        tmp *= dh
        o *= tmp
        # d(g pre) = dc * i * (1 - g^2), kept in tmp2 until i is no longer needed
        np.multiply(g, g, out=tmp2)
        np.subtract(1, tmp2, out=tmp2)
        tmp2 *= i
        tmp2 *= dc
        # d(i pre) = dc * g * i * (1 - i)
        np.subtract(1, i, out=tmp)
        tmp *= g
        tmp *= dc
        i *= tmp
        g[...] = tmp2
        # d(f pre) = dc * c_prev * f * (1 - f);  dc_prev = dc * f, written over dc
        np.subtract(1, f, out=tmp)
        tmp *= c_prev
        tmp *= dc
        dc *= f
        f *= tmp
        dh_prev = scratch["dh_prev"]
        np.matmul(gates, p["W_hh"].T, out=dh_prev)
        return dh_prev, dc


class GRUCell:
    """GRU cell, gates ordered [r, z, n], with the recurrent bias of n inside the reset gate:

    r = sig(xr + hr),  z = sig(xz + hz),  n = tanh(xn + r*(hn + b_hn)),  h = (1-z)*n + z*h_prev
    where [hr, hz, hn] = h_prev @ W_hh (one fused product, as in cuDNN and PyTorch).
    """

    n_gates = 3
    state_names = ("h",)
    n_extra = 1  # hn + b_hn
    separate_hproj_grad = True

    def step_forward(self, gates, prev, p, nxt, extra, scratch):
        (h_prev,), (h,), (hn,) = prev, nxt, extra
        H = h.shape[1]
        hproj = scratch["hproj"]
        np.matmul(h_prev, p["W_hh"], out=hproj)
        gates[:, : 2 * H] += hproj[:, : 2 * H]
        sigmoid_(gates[:, : 2 * H])
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
        tmp, dh_prev = scratch["tmp"], scratch["dh_prev"]
        dr_h, dz_h, dn_h = d_hproj[:, :H], d_hproj[:, H : 2 * H], d_hproj[:, 2 * H :]
        # d(z pre) = dh * (h_prev - n) * z * (1 - z)
        np.subtract(h_prev, n, out=dz_h)
        dz_h *= dh
        np.subtract(1, z, out=tmp)
        tmp *= z
        dz_h *= tmp
        # d(n pre) = dh * (1 - z) * (1 - n^2)
        np.subtract(1, z, out=tmp)
        tmp *= dh
        np.multiply(dh, z, out=dh_prev)  # the direct path h_prev -> h
        z[...] = dz_h
        np.multiply(n, n, out=dn_h)
        np.subtract(1, dn_h, out=dn_h)
        dn_h *= tmp
        n[...] = dn_h
        # d(r pre) = d(n pre) * hn * r * (1 - r);  d(hn) = d(n pre) * r
        np.subtract(1, r, out=tmp)
        tmp *= r
        tmp *= hn
        tmp *= dn_h
        dn_h *= r
        r[...] = tmp
        dr_h[...] = tmp
        dh_prev += np.matmul(d_hproj, p["W_hh"].T, out=scratch["dh_tmp"])
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
        "mask": np.empty((batch_size, H), bool),
        "dh_prev": np.empty((batch_size, H), dtype),
        "dh_tmp": np.empty((batch_size, H), dtype),
    }
