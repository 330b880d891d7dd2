"""Optimizers over packed parameters, with elementwise gradient clipping applied in the update.

    opt = make_optimizer("adam", model.params, learning_rate=2e-3, grad_clip=5.0)
    opt.step(model.params, grads)        # updates params in place; clips grads in place first

Parameters, gradients and every optimizer slot are ``Packed`` with one layout (see packed.py), so an
update is a few passes over one vector. ``state`` names the slots' arrays "<slot>.<param name>", plus
"steps": what a checkpoint saves.
"""

import numpy as np

from .packed import Packed

OPTIMIZERS = ("adagrad", "sgd", "rmsprop", "adam")


class Optimizer:
    slots = ()

    def __init__(self, params, learning_rate, grad_clip=5.0, weight_decay=0.0):
        """``params``: the model's ``Packed`` parameters (the slots take their layout)."""
        self.learning_rate = learning_rate
        self.grad_clip = grad_clip
        self.weight_decay = weight_decay
        self.slot = {name: Packed(params.shapes(), params.flat.dtype) for name in self.slots}
        self.steps = 0
        self._tmp = np.empty_like(params.flat)  # (N,): per-update temporary

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

    def step(self, params, grads):
        """Clip every gradient element to [-grad_clip, grad_clip], then update all parameters in place."""
        self.steps += 1
        p, g = params.flat, grads.flat  # (N,)
        if self.grad_clip:
            np.clip(g, -self.grad_clip, self.grad_clip, out=g)
        if self.weight_decay:
            p *= 1.0 - self.learning_rate * self.weight_decay
        self._update(p, g, self._tmp)


class SGD(Optimizer):
    def _update(self, p, g, tmp):
        np.multiply(g, self.learning_rate, out=tmp)
        p -= tmp


class Adagrad(Optimizer):
    """min-char-rnn's optimizer: each weight's step is scaled by its accumulated squared gradients."""

    slots = ("sum_sq",)
    eps = 1e-8

    def _update(self, p, g, tmp):
        sum_sq = self.slot["sum_sq"].flat
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

    def _update(self, p, g, tmp):
        mean_sq = self.slot["mean_sq"].flat
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

    def _update(self, p, g, tmp):
        m, v, t = self.slot["m"].flat, self.slot["v"].flat, self.steps
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


def make_optimizer(name, params, learning_rate, grad_clip=5.0, weight_decay=0.0):
    """An optimizer for ``params`` (a ``Packed`` dict, as ``model.params``)."""
    if name not in _CLASSES:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    return _CLASSES[name](params, learning_rate, grad_clip, weight_decay)
