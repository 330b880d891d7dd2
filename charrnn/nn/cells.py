"""Recurrent cells: one time step forward and one backward, side by side.

A cell's pre-activation at step t is ``x_proj[t] + h[t-1] @ W_hh``. The layer computes ``x_proj``
(input projection plus bias) for all timesteps at once; per step a cell does only what the recurrence
forces: the product with ``W_hh`` (every gate in one call, H x G·H) and the elementwise gate math,
written in place into buffers the layer preallocates.

Logistic gates are computed as sigmoid(a) = (1 + tanh(a/2)) / 2, so one ``tanh`` call covers all of
a step's gates. The halving is folded into the weights once per chunk, not into every step:
``make_step_weights`` multiplies the columns of W_xh, b and W_hh by the cell's ``gate_scale``, so
``gates`` arrive as scale * pre-activation. Gradients are always with respect to the true (unscaled)
pre-activation.

    cache = cell.step_views(gates, prev, nxt, extra, d_hproj)   made once per buffer and timestep
        gates    (B, G·H), contiguous: holds scale * x_proj on entry to the step, the activated
                 gates after it (gate-major, see below), and the gradient w.r.t. x_proj after the
                 backward step
        prev     tuple of (B, H): the previous state, (h,) or (h, c)
        nxt      tuple of (B, H): receives the new state
        extra    tuple of (B, w·H) for w in ``extra_widths``: per-step values the backward step needs
        d_hproj  (B, G·H): receives the gradient w.r.t. ``h_prev @ W_hh`` (for LSTM and RNN, the
                 gates array itself: the two gradients are one)
        cache    the cell's named tuple (RNNCache, LSTMCache, GRUCache) of those arrays and the views
                 of them (gate slices) the steps use
    step_weights = make_step_weights(cell, layer_params, B)   made once per layer and chunk
        StepWeights: the layer's weights as its steps read them: W_xh and b (gate scale folded in),
        W_hh scaled and in blocks (see below), W_hh^T in blocks for backward, b_hn for GRU
    scratch = Scratch.make(cell, B, H, dtype)   made once per layer and batch size
    cell.step_forward(cache, step_weights, scratch)
    cell.step_backward(dnxt, cache, step_weights, scratch) -> dprev
        dnxt     tuple of (B, H): gradient of the loss w.r.t. the new state (overwritten: an LSTM
                 returns dc_prev in the buffer that held dc)
        dprev    tuple of (B, H): gradient w.r.t. the previous state

The views are made once, with the buffers, and every ufunc writes to a positional ``out``: at a
small batch a step's elementwise calls take a microsecond or two each, so slicing and keyword
parsing would otherwise be a third of their cost. A step unpacks its cache whole, in the order its
named tuple declares (one unpacking costs less than a dozen attribute reads).

At a batch above 1 the forward product ``h_prev @ W_hh`` runs as one (H, H) product per gate, each
block contiguous: numpy does the G products in one call, and OpenBLAS runs them faster than the one
(H, G·H) product (at B=25, H=128: 31 µs against 47 µs, one thread). At batch 1 (sampling) the one
matrix-vector product is faster (OpenBLAS splits it over the cores), so it stays whole. The backward
product ``d(h_proj) @ W_hh^T`` runs the same way, in four blocks of H/4 output columns (at B=25,
H=128: 31 µs against 42 µs; of 1, 2 and 4 blocks, 4 was fastest or within a few per cent from
H=128 to 1024 at B=16-50).

A step's elementwise work runs gate-major: the gates of a step as (G, B, H), each gate one
contiguous (B, H) block, since a ufunc over a strided (B, H) slice of a (B, G·H) row costs about
three times one over a contiguous block. The per-gate products write ``hproj`` in that order; the
add of x_proj reads the (B, G·H) slab by gate, and the activated gates go back into the same slab,
now laid out (G, B, H). The backward step writes d(x_proj) (and a GRU's d_hproj) as (B, G·H) again,
the layout of the products over all timesteps.

The weight gradients are not formed per step: the layer gets them as one product over all
timesteps from ``gates`` (now d_x_proj) and ``d_hproj``.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy import add, greater, matmul, maximum, multiply, subtract, tanh

ACTIVATIONS = ("tanh", "relu", "sigmoid")


def tanh_to_sigmoid_(t):
    """Given t = tanh(a/2) in place, leave sigmoid(a) = (1 + t) / 2 there."""
    multiply(t, 0.5, t)
    add(t, 0.5, t)
    return t


def tanh_derivative(y, out):
    """Given y = tanh(a), leave its derivative 1 - y^2 in ``out``."""
    multiply(y, y, out)
    subtract(1, out, out)
    return out


def product_blocks(cell, batch_size):
    """How many column blocks the forward step's ``h_prev @ W_hh`` runs as: one per gate above batch 1."""
    return cell.n_gates if batch_size > 1 else 1


def backward_blocks(batch_size, hidden_size):
    """How many column blocks the backward step's ``d(h_proj) @ W_hh^T`` runs as: 4 above batch 1."""
    return 4 if batch_size > 1 and hidden_size % 4 == 0 else 1


class StepWeights(NamedTuple):
    """A layer's weights as its steps read them at one batch size, gate scale folded in."""

    W_xh: np.ndarray  # (V or H, G·H), scaled; a lookup layer's (V, G·H) as it is, scaled row by row as read
    b: np.ndarray  # (G·H,), scaled
    scale: np.ndarray | None  # (G·H,): the gate scale a lookup layer's rows take as they are read; else None
    W_hh_blocks: np.ndarray  # (n, H, G·H / n), scaled, contiguous blocks (n = product_blocks)
    W_hh_T_blocks: np.ndarray | None  # (k, G·H, H / k): W_hh^T (unscaled) for backward (k = backward_blocks)
    b_hn: np.ndarray | None  # (H,), GRU only


def make_step_weights(cell, layer_params, batch_size, weight_mask=None, backward=True, lookup=False):
    """``layer_params`` (W_xh, W_hh, b and, for GRU, b_hn) as the steps read them at ``batch_size``.

    The one place the gate scale is folded in (see the module docstring): W_xh, b and W_hh's columns
    are multiplied by ``cell.gate_scale``; for a ``lookup`` layer (the first: ids read W_xh's rows) W_xh is
    left as it is and its rows are scaled as they are read (``input_rows``). W_hh is first multiplied by
    ``weight_mask`` (weight drop) if given. With ``backward``, W_hh^T is copied into blocks too (a
    transposing copy: 3 ms for 512 units, which forward-only passes skip).
    """
    W_xh, b, W_hh = layer_params["W_xh"], layer_params["b"], layer_params["W_hh"]
    if weight_mask is not None:
        W_hh = W_hh * weight_mask
    H, G = W_hh.shape
    scale = cell.gate_scale(H)
    row_scale = None
    if scale is None:
        scale = np.ones(G, W_hh.dtype)
    else:
        scale = scale.astype(W_hh.dtype)
        b, row_scale = b * scale, scale
        if not lookup:
            W_xh, row_scale = W_xh * scale, None
    n = product_blocks(cell, batch_size)
    W_hh_blocks = np.empty((n, H, G // n), W_hh.dtype)
    multiply(W_hh.reshape(H, n, G // n).transpose(1, 0, 2), scale.reshape(n, 1, G // n), W_hh_blocks)  # one pass
    W_hh_T_blocks = None
    if backward:
        k = backward_blocks(batch_size, H)
        W_hh_T_blocks = np.ascontiguousarray(W_hh.T.reshape(G, k, H // k).transpose(1, 0, 2))  # (k, G, H/k)
    return StepWeights(W_xh, b, row_scale, W_hh_blocks, W_hh_T_blocks, layer_params.get("b_hn"))


def input_table(step_weights):
    """A lookup layer's (V, G·H) pre-activations of every id: W_xh's rows times the gate scale, plus b."""
    W = step_weights.W_xh if step_weights.scale is None else step_weights.W_xh * step_weights.scale
    return W + step_weights.b


def input_rows(step_weights, ids, out):
    """A lookup layer's pre-activations of ``ids`` (T, B) into ``out`` (T, B, G·H): ``input_table``'s rows.
    Where the ids are fewer than the table's rows (a vocabulary of thousands) the rows of W_xh are gathered
    first, then scaled and biased: the same numbers, element by element, with a pass over T·B rows instead
    of the whole table (for 9,572 symbols at B=16, T=100: 6 times fewer)."""
    if ids.size >= len(step_weights.W_xh):
        np.take(input_table(step_weights), ids, axis=0, out=out, mode="clip")
        return
    np.take(step_weights.W_xh, ids, axis=0, out=out, mode="clip")
    if step_weights.scale is not None:
        multiply(out, step_weights.scale, out)
    add(out, step_weights.b, out)


def _column_blocks(a, n):
    """The (B, W) array ``a`` as its n column blocks, (n, B, W/n): a strided view, written through."""
    B, W = a.shape
    return a.reshape(B, n, W // n).transpose(1, 0, 2)


def _gate_major(slab, n):
    """The contiguous (B, n·H) array ``slab`` viewed as (n, B, H): the same memory, read gate by gate."""
    B, G = slab.shape
    view = slab.reshape(n, B, G // n)
    if not np.shares_memory(view, slab):
        raise ValueError("a step's gates must be a contiguous (B, G) array")
    return view


@dataclass(slots=True)
class Scratch:
    """Per-layer temporaries a cell's steps write into at one batch size, so no step allocates."""

    hproj: np.ndarray  # (G, B, H): h_prev @ W_hh, gate-major
    hproj_blocks: np.ndarray  # (n, B, G·H / n) view of hproj: where the n block products land (one at batch 1)
    hproj_logistic: np.ndarray  # (G-1, B, H) view of hproj: the logistic gates' part
    hproj_last: np.ndarray  # (B, H) view of hproj: the last gate's part (n for GRU; RNN: all of it)
    upstream: np.ndarray  # (G, B, H): LSTM backward, d(loss)/d(gate)
    deriv: np.ndarray  # (G, B, H): LSTM backward, each gate's local derivative
    tmp: np.ndarray  # (B, H)
    x_n: np.ndarray  # (B, H): GRU forward, x_proj of n, copied out of the slab
    one_minus_z: np.ndarray  # (B, H): GRU backward
    dn_pre: np.ndarray  # (B, H): GRU backward, d(n pre-activation)
    dh_prev: np.ndarray  # (B, H): the backward step's d(h_prev)
    dh_prev_blocks: np.ndarray  # (k, B, H/k) view of dh_prev: where the k block products land
    dh_tmp: np.ndarray  # (B, H): GRU backward, the recurrent product's part of d(h_prev)
    dh_tmp_blocks: np.ndarray  # (k, B, H/k) view of dh_tmp
    mask: np.ndarray  # (B, H) bool: ReLU backward

    @classmethod
    def make(cls, cell, batch_size, hidden_size, dtype):
        B, H, G = batch_size, hidden_size, cell.n_gates * hidden_size
        n, k = product_blocks(cell, B), backward_blocks(B, H)
        hproj = np.empty((cell.n_gates, B, H), dtype)
        dh_prev, dh_tmp = np.empty((B, H), dtype), np.empty((B, H), dtype)
        return cls(
            hproj=hproj,
            hproj_blocks=hproj.reshape(n, B, G // n),
            hproj_logistic=hproj[:-1],
            hproj_last=hproj[-1],
            upstream=np.empty((cell.n_gates, B, H), dtype),
            deriv=np.empty((cell.n_gates, B, H), dtype),
            tmp=np.empty((B, H), dtype),
            x_n=np.empty((B, H), dtype),
            one_minus_z=np.empty((B, H), dtype),
            dn_pre=np.empty((B, H), dtype),
            dh_prev=dh_prev,
            dh_prev_blocks=_column_blocks(dh_prev, k),
            dh_tmp=dh_tmp,
            dh_tmp_blocks=_column_blocks(dh_tmp, k),
            mask=np.empty((B, H), bool),
        )


class RNNCache(NamedTuple):
    pre: np.ndarray  # (B, H): scale * x_proj -> d(pre-activation)
    h_prev: np.ndarray  # (B, H)
    h: np.ndarray  # (B, H)


class RNNCell:
    """Elman cell: h = act(x_proj + h_prev @ W_hh)."""

    n_gates = 1
    state_names = ("h",)
    gate_names = ()  # the activated gates a step leaves in its slab, in order (an Elman cell has none)
    logistic_gates = 0  # how many of them, first, are logistic (in [0, 1]): what saturation is measured on
    extra_widths = ()
    separate_hproj_grad = False
    whole_preactivation = True  # pre = x_proj + h_proj as a whole: ``activate`` can start from one product

    def __init__(self, activation="tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        self.activation = activation

    def gate_scale(self, H):
        return np.full(H, 0.5) if self.activation == "sigmoid" else None

    def step_views(self, gates, prev, nxt, extra, d_hproj):
        return RNNCache(gates, prev[0], nxt[0])

    def step_forward(self, cache, step_weights, scratch):
        pre, h_prev, h = cache
        matmul(h_prev, step_weights.W_hh_blocks, scratch.hproj_blocks)
        add(pre, scratch.hproj_last, h)
        self.activate(cache, scratch, h)

    def activate(self, cache, scratch, pre=None):
        """The step's elementwise part, h = act(pre), from the whole (scaled) pre-activation ``pre`` (B, H);
        by default the step's own slab ``cache.pre``."""
        h = cache.h
        pre = cache.pre if pre is None else pre
        if self.activation == "relu":
            maximum(pre, 0, out=h)
        else:
            tanh(pre, h)
            if self.activation == "sigmoid":
                tanh_to_sigmoid_(h)

    def step_backward(self, dnxt, cache, step_weights, scratch):
        dpre, _, h = cache  # dpre: the pre-activation buffer, overwritten with its gradient
        (dh,) = dnxt
        if self.activation == "tanh":
            multiply(h, h, dpre)
            subtract(1, dpre, dpre)
            multiply(dpre, dh, dpre)
        elif self.activation == "relu":
            greater(h, 0, scratch.mask)
            multiply(dh, scratch.mask, dpre)
        else:
            subtract(1, h, dpre)
            multiply(dpre, h, dpre)
            multiply(dpre, dh, dpre)
        matmul(dpre, step_weights.W_hh_T_blocks, scratch.dh_prev_blocks)
        return (scratch.dh_prev,)


class LSTMCache(NamedTuple):
    gates: np.ndarray  # (B, 4H): the slab; d(pre-activation) after backward
    by_gate: np.ndarray  # (4, B, H) strided view: x_proj, then d(x_proj), by gate
    active: np.ndarray  # (4, B, H) gate-major view: the activated gates, contiguous
    sigmoids: np.ndarray  # (3, B, H): active[:3], the logistic gates i, f, o
    i: np.ndarray  # (B, H) each: the activated gates
    f: np.ndarray
    o: np.ndarray
    g: np.ndarray
    h_prev: np.ndarray  # (B, H) each: the state in and out
    c_prev: np.ndarray
    h: np.ndarray
    c: np.ndarray
    tanh_c: np.ndarray  # (B, H)


class LSTMCell:
    """LSTM cell, gates ordered [i, f, o, g]:  c = f*c_prev + i*g,  h = o*tanh(c).

    The step works gate-major (see the module docstring). Backward forms every gate's local
    derivative, [i(1-i), f(1-f), o(1-o), 1-g^2], as one (4, B, H) array, so one product with it gives
    d(pre-activation); forward keeps only tanh(c) besides the gates.
    """

    n_gates = 4
    state_names = ("h", "c")
    gate_names = ("i", "f", "o", "g")
    logistic_gates = 3
    extra_widths = (1,)  # tanh(c)
    separate_hproj_grad = False
    whole_preactivation = True  # pre = x_proj + h_proj as a whole: ``activate`` can start from one product

    def gate_scale(self, H):
        return np.concatenate([np.full(3 * H, 0.5), np.ones(H)])

    def step_views(self, gates, prev, nxt, extra, d_hproj):
        active = _gate_major(gates, 4)
        i, f, o, g = active
        (h_prev, c_prev), (h, c), (tanh_c,) = prev, nxt, extra
        return LSTMCache(gates, _column_blocks(gates, 4), active, active[:3], i, f, o, g, h_prev, c_prev, h, c, tanh_c)

    def step_forward(self, cache, step_weights, scratch):
        pre = scratch.hproj  # (4, B, H)
        matmul(cache.h_prev, step_weights.W_hh_blocks, scratch.hproj_blocks)
        add(cache.by_gate, pre, pre)
        self.activate(cache, scratch, pre)

    def activate(self, cache, scratch, pre=None):
        """The step's elementwise part, from the whole (scaled) pre-activation ``pre`` (4, B, H), gate-major;
        by default the step's own slab read gate-major, ``cache.active`` (computed in place)."""
        _, _, active, sigmoids, i, f, o, g, _, c_prev, h, c, tanh_c = cache
        tmp = scratch.tmp
        pre = active if pre is None else pre
        tanh(pre, active)  # t; the sigmoid gates are (1 + t) / 2, see the module docstring
        tanh_to_sigmoid_(sigmoids)
        multiply(f, c_prev, c)
        multiply(i, g, tmp)
        add(c, tmp, c)
        tanh(c, tanh_c)
        multiply(o, tanh_c, h)

    def step_backward(self, dnxt, cache, step_weights, scratch):
        gates, by_gate, active, sigmoids, i, f, o, g, _, c_prev, _, _, tanh_c = cache  # gates -> d(pre)
        dh, dc = dnxt
        tmp, upstream, deriv = scratch.tmp, scratch.upstream, scratch.deriv  # (4, B, H) each
        up_i, up_f, up_o, up_g = upstream
        deriv_sigmoids, deriv_g = deriv[:3], deriv[3]
        # dc += dh * o * (1 - tanh_c^2)
        tanh_derivative(tanh_c, tmp)
        multiply(tmp, o, tmp)
        multiply(tmp, dh, tmp)
        add(dc, tmp, dc)
        # d(pre) = [dc*g, dc*c_prev, dh*tanh_c, dc*i] * [s - s^2 for i, f, o; 1 - g^2 for g]
        multiply(dc, g, up_i)
        multiply(dc, c_prev, up_f)
        multiply(dh, tanh_c, up_o)
        multiply(dc, i, up_g)
        multiply(dc, f, dc)  # dc_prev, written over dc
        multiply(active, active, deriv)
        subtract(sigmoids, deriv_sigmoids, deriv_sigmoids)
        subtract(1, deriv_g, deriv_g)
        multiply(upstream, deriv, by_gate)  # d(pre), into the slab as (B, 4H)
        matmul(gates, step_weights.W_hh_T_blocks, scratch.dh_prev_blocks)
        return scratch.dh_prev, dc


class GRUCache(NamedTuple):
    gates: np.ndarray  # (B, 3H): the slab
    x_rz: np.ndarray  # (2, B, H) strided view: x_proj of r and z; receives d(x_proj) of r and z
    x_n: np.ndarray  # (B, H) strided view: x_proj of n; receives d(x_proj) of n
    rz: np.ndarray  # (2, B, H) gate-major view: the activated r and z
    r: np.ndarray  # (B, H) each: the activated gates
    z: np.ndarray
    n: np.ndarray
    h_prev: np.ndarray  # (B, H)
    h: np.ndarray  # (B, H)
    hn: np.ndarray  # (B, H): the recurrent part of n, hn + b_hn
    d_hproj: np.ndarray  # (B, 3H): receives d(h_proj)
    d_by_gate: np.ndarray  # (3, B, H) strided view of d_hproj
    d_rz: np.ndarray  # (2, B, H): d_by_gate[:2]


class GRUCell:
    """GRU cell, gates ordered [r, z, n], with the recurrent bias of n inside the reset gate:

    r = sig(xr + hr),  z = sig(xz + hz),  n = tanh(xn + r*(hn + b_hn)),  h = (1-z)*n + z*h_prev
    where [hr, hz, hn] = h_prev @ W_hh (one fused product, as in cuDNN and PyTorch). The step works
    gate-major (see the module docstring); backward writes d(h_proj) into ``d_hproj`` as (B, 3H).
    """

    n_gates = 3
    state_names = ("h",)
    gate_names = ("r", "z", "n")
    logistic_gates = 2
    extra_widths = (1,)  # hn + b_hn
    separate_hproj_grad = True
    whole_preactivation = False  # n = tanh(xn + r * hn): hn must stay apart from xn

    def gate_scale(self, H):
        return np.concatenate([np.full(2 * H, 0.5), np.ones(H)])

    def step_views(self, gates, prev, nxt, extra, d_hproj):
        by_gate = _column_blocks(gates, 3)
        d_by_gate = _column_blocks(d_hproj, 3)
        active = _gate_major(gates, 3)
        r, z, n = active
        return GRUCache(gates, by_gate[:2], by_gate[2], active[:2], r, z, n, prev[0], nxt[0], extra[0], d_hproj,
                        d_by_gate, d_by_gate[:2])

    def step_forward(self, cache, step_weights, scratch):
        _, x_rz, x_n, rz, r, z, n, h_prev, h, hn, _, _, _ = cache
        pre_rz, pre_n, xn = scratch.hproj_logistic, scratch.hproj_last, scratch.x_n  # (2, B, H), (B, H), (B, H)
        matmul(h_prev, step_weights.W_hh_blocks, scratch.hproj_blocks)
        np.copyto(xn, x_n)  # out of the slab before the activated gates overwrite it
        add(x_rz, pre_rz, pre_rz)
        add(pre_n, step_weights.b_hn, hn)
        tanh(pre_rz, rz)
        tanh_to_sigmoid_(rz)
        multiply(r, hn, n)
        add(n, xn, n)
        tanh(n, n)
        # h = n + z * (h_prev - n)
        subtract(h_prev, n, h)
        multiply(h, z, h)
        add(h, n, h)

    def step_backward(self, dnxt, cache, step_weights, scratch):
        _, x_rz, x_n, _, r, z, n, h_prev, _, hn, d_hproj, d_by_gate, d_rz = cache  # x_rz, x_n receive d(x_proj)
        (dh,) = dnxt
        tmp, one_minus_z, dn_pre, dh_prev = scratch.tmp, scratch.one_minus_z, scratch.dn_pre, scratch.dh_prev
        dr_h, dz_h, dn_h = d_by_gate
        subtract(1, z, one_minus_z)
        # d(z pre) = dh * (h_prev - n) * z * (1 - z)
        subtract(h_prev, n, dh_prev)
        multiply(dh_prev, dh, dh_prev)
        multiply(z, one_minus_z, tmp)
        multiply(dh_prev, tmp, dz_h)
        multiply(dh, z, dh_prev)  # the direct path h_prev -> h
        # d(n pre) = dh * (1 - z) * (1 - n^2)
        multiply(one_minus_z, dh, one_minus_z)
        tanh_derivative(n, tmp)
        multiply(tmp, one_minus_z, dn_pre)
        # d(r pre) = d(n pre) * hn * r * (1 - r);  d(hn) = d(n pre) * r
        subtract(1, r, tmp)
        multiply(tmp, r, tmp)
        multiply(tmp, hn, tmp)
        multiply(tmp, dn_pre, dr_h)
        multiply(dn_pre, r, dn_h)
        # d(x_proj), into the slab as (B, 3H) now that the gates are read: r and z as d(h_proj), then n
        np.copyto(x_rz, d_rz)
        np.copyto(x_n, dn_pre)
        matmul(d_hproj, step_weights.W_hh_T_blocks, scratch.dh_tmp_blocks)
        add(dh_prev, scratch.dh_tmp, dh_prev)
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


class LayerBuffers:
    """What one layer keeps for chunks of up to ``capacity`` timesteps at batch B: gate caches,
    state sequences, scratch. A chunk of T <= capacity steps uses the first T of each."""

    def __init__(self, cell, capacity, B, H, dtype, d_hproj=None):
        G = cell.n_gates * H
        self.cell, self.capacity = cell, capacity
        self.gates = np.empty((capacity, B, G), dtype)  # x_proj -> activated gates -> d(x_proj)
        self.states = tuple(np.empty((capacity + 1, B, H), dtype) for _ in cell.state_names)
        self.extra = tuple(np.empty((capacity, B, w * H), dtype) for w in cell.extra_widths)
        self.d_hproj = self.gates if d_hproj is None else d_hproj  # (capacity, B, G); shared by the layers
        self.scratch = Scratch.make(cell, B, H, dtype)
        self.d_state = tuple(np.empty((B, H), dtype) for _ in cell.state_names)
        self.dh = np.empty((B, H), dtype)
        self.output = None  # (T, B, H): what the next layer (or the output layer) reads
        self.step_weights = None  # the StepWeights of the chunk in these buffers, for its backward pass
        # each step's arrays and the views of them its cell reads, made once: these buffers serve every chunk
        self.caches = [
            cell.step_views(
                self.gates[t],
                tuple(seq[t] for seq in self.states),
                tuple(seq[t + 1] for seq in self.states),
                tuple(e[t] for e in self.extra),
                self.d_hproj[t],
            )
            for t in range(capacity)
        ]

    def steps_backward(self, dy):
        """Backpropagation through time over the chunk in these buffers, from ``dy`` (T, B, H), the gradient
        of the layer's outputs (zero at a classifier's padding); d(x_proj) lands in ``gates``, d(h_proj)
        in ``d_hproj``. No gradient flows beyond the chunk's last step."""
        step, caches, scratch, dh, step_weights = self.cell.step_backward, self.caches, self.scratch, self.dh, \
            self.step_weights
        for d in self.d_state:
            d.fill(0)
        d_later = self.d_state  # gradient w.r.t. the state after step t
        for t in reversed(range(len(dy))):
            np.add(dy[t], d_later[0], dh)
            d_later = step((dh, *d_later[1:]), caches[t], step_weights, scratch)

    def recurrent_grads(self, T, grads, prefix):
        """After ``steps_backward`` over T steps, write the gradients of the layer's W_hh, b (and b_hn),
        named with ``prefix``, into ``grads``; return d(x_proj) (T·B, G), for W_xh's and the input's."""
        _, B, G = self.gates.shape
        H = self.dh.shape[1]
        d_xproj = self.gates[:T].reshape(T * B, G)
        d_hproj = self.d_hproj[:T].reshape(T * B, G)
        h_prev = self.states[0][:T].reshape(T * B, H)
        np.matmul(h_prev.T, d_hproj, out=grads[prefix + "W_hh"])
        np.add.reduce(d_xproj, axis=0, out=grads[prefix + "b"])
        if prefix + "b_hn" in grads:
            np.add.reduce(d_hproj[:, 2 * H :], axis=0, out=grads[prefix + "b_hn"])
        return d_xproj
