"""Optimizers over dicts of parameters, with elementwise gradient clipping applied in the update.

    opt = make_optimizer("adam", model.params, learning_rate=2e-3, grad_clip=5.0)
    opt.step(model.params, grads)        # updates params in place; clips grads in place first

Each optimizer's state is a dict of arrays keyed "<slot>.<param name>", saved inside checkpoints.
"""

import numpy as np

OPTIMIZERS = ("adagrad", "sgd", "rmsprop", "adam")


class Optimizer:
    slots = ()

    def __init__(self, params, learning_rate, grad_clip=5.0, weight_decay=0.0):
        self.learning_rate = learning_rate
        self.grad_clip = grad_clip
        self.weight_decay = weight_decay
        self.state = {f"{slot}.{name}": np.zeros_like(p) for slot in self.slots for name, p in params.items()}
        self.state["steps"] = np.zeros((), np.int64)
        self._scratch = {name: np.empty_like(p) for name, p in params.items()}  # per-update temporaries

    def step(self, params, grads):
        """Clip each gradient to [-grad_clip, grad_clip], then update every parameter in place."""
        self.state["steps"] += 1
        for name, p in params.items():
            g = grads[name]
            if self.grad_clip:
                np.minimum(g, self.grad_clip, out=g)
                np.maximum(g, -self.grad_clip, out=g)
            if self.weight_decay:
                p *= 1.0 - self.learning_rate * self.weight_decay
            self._update(name, p, g, self._scratch[name])

    def load_state(self, state):
        """Take a saved state (as from ``self.state``); raise ValueError if it does not fit."""
        if set(state) != set(self.state):
            raise ValueError("optimizer state does not match the model's parameters")
        for key, value in state.items():
            if value.shape != self.state[key].shape:
                raise ValueError(f"optimizer state {key} has shape {value.shape}, expected {self.state[key].shape}")
            self.state[key] = np.array(value, dtype=self.state[key].dtype)


class SGD(Optimizer):
    def _update(self, name, p, g, tmp):
        np.multiply(g, self.learning_rate, out=tmp)
        p -= tmp


class Adagrad(Optimizer):
    """min-char-rnn's optimizer: each weight's step is scaled by its accumulated squared gradients."""

    slots = ("sum_sq",)
    eps = 1e-8

    def _update(self, name, p, g, tmp):
        sum_sq = self.state[f"sum_sq.{name}"]
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

    def _update(self, name, p, g, tmp):
        mean_sq = self.state[f"mean_sq.{name}"]
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

    def _update(self, name, p, g, tmp):
        m, v = self.state[f"m.{name}"], self.state[f"v.{name}"]
        t = int(self.state["steps"])
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


_CLASSES = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}


def make_optimizer(name, params, learning_rate, grad_clip=5.0, weight_decay=0.0):
    if name not in _CLASSES:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    return _CLASSES[name](params, learning_rate, grad_clip, weight_decay)
