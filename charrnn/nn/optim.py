"""Optimizers over packed parameters, with gradient clipping applied in the update.

    opt = make_optimizer("adam", model.params, learning_rate=2e-3, grad_clip=5.0)
    if finite_step(loss, grads):         # a non-finite loss or gradient is never applied
        opt.clip(grads)                  # in place, by clip_mode
        finite = opt.update(model.params, grads)   # in place; False if a weight overflowed
    opt.step(model.params, grads)        # clip, then update

Clipping (``clip_gradient``), by ``clip_mode``: "value" clips each gradient element to [-C, C]; "norm"
scales the whole gradient so that its global L2 norm is at most C, as torch.nn.utils.clip_grad_norm_.

Parameters, gradients and every optimizer slot are ``Packed`` with one layout (see packed.py), so an
update is a few passes over one vector. ``state`` names the slots' arrays "<slot>.<param name>", plus
"steps": what a checkpoint saves.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..blas import available_cpus
from .packed import Packed

OPTIMIZERS = ("adagrad", "sgd", "rmsprop", "adam")
CLIP_MODES = ("value", "norm")
NORM_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s: the factor is C / (norm + NORM_EPS), when below 1
BLOCK = 32768  # elements an update works on at a time: its dozen passes over a block stay in the core's cache
SHARED_BLOCKS = 8  # from this many blocks an update shares them among a thread per CPU


def blocks(n):
    """Slices of ``BLOCK`` elements covering range(n): an update's passes run block by block, so that a large
    model's vectors are read from memory once per update, not once per pass (Adam over 22 M float32 weights:
    65 ms instead of 148 ms; the same numbers, element by element)."""
    return [slice(a, min(a + BLOCK, n)) for a in range(0, n, BLOCK)]


def all_finite(x):
    """Whether every element of the vector ``x`` is finite, a block at a time (no vector of flags as long as it)."""
    return all(np.isfinite(x[block]).all() for block in blocks(x.size))


def finite_step(loss, grads):
    """Whether a step's ``loss`` and gradient (``Packed``) are finite: the step may be applied."""
    return math.isfinite(loss) and all_finite(grads.flat)


def check_clip_mode(mode):
    """Raise ValueError, in one line, unless ``mode`` is one of CLIP_MODES."""
    if mode not in CLIP_MODES:
        raise ValueError(f"clip-mode must be one of {', '.join(CLIP_MODES)}, not {mode!r}")


def clip_gradient(g, limit, mode="value"):
    """Clip the gradient vector ``g`` (N,) in place at ``limit`` C and return its L2 norm before clipping
    (None for "value", which does not compute it). "value": each element to [-C, C]. "norm": all of ``g``
    times C / (norm + 1e-6) where that is below 1, so the global L2 norm is at most C (the direction kept),
    as torch.nn.utils.clip_grad_norm_ over all the parameters."""
    check_clip_mode(mode)
    if mode == "value":
        np.clip(g, -limit, limit, out=g)
        return None
    with np.errstate(over="ignore"):
        norm = math.sqrt(float(np.dot(g, g)))
    if math.isinf(norm):  # the sum of squares overflowed float32, not the gradient: sum in float64
        norm = float(np.linalg.norm(g.astype(np.float64)))
    factor = limit / (norm + NORM_EPS)
    if factor < 1:
        g *= factor
    return norm


class Optimizer:
    """An update rule: ``_update(p, g, tmp, slots)`` runs it on one block of elements (``p``, ``g``, ``tmp`` and
    ``slots``, {slot name: array}, are the block's)."""

    slots = ()

    def __init__(self, params, learning_rate, grad_clip=5.0, weight_decay=0.0, clip_mode="value"):
        """``params``: the model's ``Packed`` parameters (the slots take their layout)."""
        check_clip_mode(clip_mode)
        self.learning_rate = learning_rate
        self.grad_clip = grad_clip
        self.clip_mode = clip_mode
        self.weight_decay = weight_decay
        self.slot = {name: Packed(params.shapes(), params.flat.dtype) for name in self.slots}
        self.steps = 0
        self._threads = max(1, available_cpus()) if params.flat.size >= SHARED_BLOCKS * BLOCK else 1
        self._tmps = [np.empty(min(BLOCK, params.flat.size), params.flat.dtype) for _ in range(self._threads)]
        self._helpers = None  # a ThreadPoolExecutor of threads - 1, made at the first shared update

    @property
    def state(self):
        """The slots' arrays (views, keyed "<slot>.<param name>") and the step count."""
        state = {f"{slot}.{name}": value for slot, packed in self.slot.items() for name, value in packed.items()}
        state["steps"] = np.array(self.steps, np.int64)
        return state

    def load_state(self, state):
        """Take a saved state (as from ``self.state``); raise ValueError if it does not fit."""
        current = self.state
        if set(state) != set(current):
            raise ValueError("optimizer state does not match the model's parameters")
        for key, value in state.items():
            if value.shape != current[key].shape:
                raise ValueError(f"optimizer state {key} has shape {value.shape}, expected {current[key].shape}")
        for key, value in state.items():
            if key == "steps":
                self.steps = int(value)
            else:
                current[key][...] = value

    def clip(self, grads):
        """Clip the gradient in place (``clip_gradient``, by ``clip_mode``; not when grad_clip is 0)."""
        if self.grad_clip:
            clip_gradient(grads.flat, self.grad_clip, self.clip_mode)

    def update(self, params, grads, rows=None):
        """One step of the rule on all parameters in place: decoupled weight decay, then the optimizer's
        formula, a block of elements at a time (``blocks``); return whether every weight is still finite (a rate
        far too high can overflow them).

        ``rows``: {name: row ids (R,), unique} of parameters read by row (an input table) whose other rows
        have no gradient this step; only those rows are updated, the others left as they are, their slots
        too (a lazy update: the same numbers as the whole update for SGD and Adagrad without weight decay,
        whose update of a row without gradient changes nothing; for Adam and RMSprop, and with weight decay,
        a row without gradient is not decayed, its moments not aged, until a step reads it again)."""
        self.steps += 1
        rows = rows or {}
        finite = True
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite update is the caller's to report
            start = 0  # the whole update, up to each parameter updated by row and on after it
            for skip_from, skip_to in sorted(params.spans[name] for name in rows) + [(params.flat.size, None)]:
                finite &= self._update_range(params.flat, grads.flat, self._slot_flats(), start, skip_from)
                start = skip_to
            for name, ids in rows.items():
                finite &= self._update_rows(params[name], grads[name], name, ids)
        return finite

    def _slot_flats(self):
        return {name: packed.flat for name, packed in self.slot.items()}

    def _update_range(self, p, g, slots, start, stop):
        """The rule over elements start..stop-1 of the flat vectors, a block at a time; whether they stay finite.
        From SHARED_BLOCKS blocks, a thread per CPU takes the next block as it finishes one (numpy lets go of
        the GIL in its loops: Adam with weight decay over 22 M float32 weights 60 -> 36 ms on 2 cores, the
        same numbers)."""
        todo = [slice(b.start + start, b.stop + start) for b in blocks(stop - start)]
        shared = iter(todo)  # each thread's next() is one step, under the GIL

        def work(tmp):
            finite = True
            for block in shared:
                p_block = p[block]
                if self.weight_decay:
                    p_block *= 1.0 - self.learning_rate * self.weight_decay
                self._update(p_block, g[block], tmp[: p_block.size], {k: v[block] for k, v in slots.items()})
                finite = finite and bool(np.isfinite(p_block).all())
            return finite

        if self._threads == 1 or len(todo) < SHARED_BLOCKS:
            return work(self._tmps[0])
        self._helpers = self._helpers or ThreadPoolExecutor(self._threads - 1)
        helping = [self._helpers.submit(work, tmp) for tmp in self._tmps[1:]]
        return all([work(self._tmps[0]), *(future.result() for future in helping)])

    def _update_rows(self, p, g, name, ids):
        """The rule over rows ``ids`` of parameter ``name`` (``p``, ``g``: its arrays), gathered and put back."""
        p_rows = p[ids]  # (R, C) copies
        slots = {slot: packed[name][ids].reshape(-1) for slot, packed in self.slot.items()}
        finite = self._update_range(p_rows.reshape(-1), g[ids].reshape(-1), slots, 0, p_rows.size)
        p[ids] = p_rows
        for slot, packed in self.slot.items():
            packed[name][ids] = slots[slot].reshape(p_rows.shape)
        return finite

    def step(self, params, grads):
        """``clip``, then ``update``: the whole step, as a training loop takes it."""
        self.clip(grads)
        return self.update(params, grads)


class SGD(Optimizer):
    def _update(self, p, g, tmp, slots):
        np.multiply(g, self.learning_rate, out=tmp)
        p -= tmp


class Adagrad(Optimizer):
    """min-char-rnn's optimizer: each weight's step is scaled by its accumulated squared gradients."""

    slots = ("sum_sq",)
    eps = 1e-8

    def _update(self, p, g, tmp, slots):
        sum_sq = slots["sum_sq"]
        np.multiply(g, g, out=tmp)
        sum_sq += tmp
        np.add(sum_sq, self.eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(g, tmp, out=tmp)
        tmp *= self.learning_rate
        p -= tmp


class RMSprop(Optimizer):
    slots = ("mean_sq",)
    decay = 0.95
    eps = 1e-8

    def _update(self, p, g, tmp, slots):
        mean_sq = slots["mean_sq"]
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.decay
        mean_sq *= self.decay
        mean_sq += tmp
        np.sqrt(mean_sq, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.learning_rate
        p -= tmp


class Adam(Optimizer):
    slots = ("m", "v")
    beta1, beta2, eps = 0.9, 0.99, 1e-8

    def _update(self, p, g, tmp, slots):
        m, v, t = slots["m"], slots["v"], self.steps
        m *= self.beta1
        np.multiply(g, 1 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp
        step_size = self.learning_rate * np.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        p -= tmp


class WeightAverage:
    """A running average of the parameters, taken after every update (Polyak averaging).

    The plain mean of the iterates so far for the first ``horizon`` steps, then an exponential moving
    average over about ``horizon`` steps: the weight of step t is max(1/horizon, 1/t). Validation,
    ``best.npz`` and samples read the average; training goes on from the parameters themselves.
    """

    def __init__(self, params, horizon, start=None):
        """Start from a copy of ``params``, or from ``start``: an (N,) vector laid out as ``params.flat``
        (a saved average), which is taken over, not copied."""
        self.horizon = horizon
        if start is None:
            self.params = Packed(params.shapes(), params.flat.dtype, params)  # the average, same layout
        else:
            self.params = Packed(params.shapes(), params.flat.dtype, flat=start)
        self._tmp = np.empty_like(params.flat)  # (N,)

    def update(self, params, steps):
        """Fold in ``params`` after update number ``steps`` (counting from 1)."""
        average = self.params.flat
        np.subtract(params.flat, average, out=self._tmp)
        self._tmp *= max(1.0 / self.horizon, 1.0 / max(steps, 1))
        average += self._tmp


_CLASSES = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}


def make_optimizer(name, params, learning_rate, grad_clip=5.0, weight_decay=0.0, clip_mode="value"):
    """An optimizer for ``params`` (a ``Packed`` dict, as ``model.params``); ``clip_mode``: see ``clip_gradient``."""
    if name not in _CLASSES:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    return _CLASSES[name](params, learning_rate, grad_clip, weight_decay, clip_mode)
