"""What computes a training run's steps: the engine interface, and the engine that is the model itself.

    engine = InProcess(model)
    loss, grads, state = engine.loss_and_grads(inputs, targets, state, dropout_rng=rng)
    nll, state = engine.chunk_nll(inputs, targets, state)

The worker pool (pool.py) and the torch engine (torch_engine.py) implement the same calls.
"""

import math

import numpy as np

from ..inference.evaluate import chunk_nll, chunk_nlls, streams_nll


class WorkerError(RuntimeError):
    """A worker process could not start or failed; the message is one line."""


class Engine:
    """What computes a training run's steps: ``loss_and_grads`` and ``chunk_nll`` over a (T, B) chunk, on
    ``workers`` processes; a context manager that closes it."""

    workers = 1

    def chunk_nlls(self, inputs, targets, state=None):
        """-log p of each of ``targets`` (T, B), and the state after them: in this process, by the model
        (the scores of a gpt model's validation windows)."""
        return chunk_nlls(self.model, inputs, targets, state)

    def streams_nll(self, ids, batch_size, seq_length):
        """evaluate.streams_nll over ``ids`` by this engine: (total nats, characters scored)."""
        return streams_nll(self.model, ids, batch_size, seq_length, self)

    # training: the torch engine keeps parameters and optimizer state on its device; here they are numpy's
    def train_with(self, optimizer, average=None):
        """Train with ``optimizer`` (nn/optim.py) and ``average`` (a WeightAverage, or None) from now on."""
        self.optimizer, self.average = optimizer, average

    def finite(self, loss, grads):
        """Whether a step's loss and gradient are finite."""
        return math.isfinite(loss) and bool(np.isfinite(grads.flat).all())

    def update(self, grads):
        """The optimizer's step, then, if every weight is still finite, the running average's; returns whether
        every weight is finite."""
        params = self.model.params
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite update is reported by the caller
            self.optimizer.step(params, grads)
        if not np.isfinite(params.flat).all():
            return False
        if self.average is not None:
            self.average.update(params, self.optimizer.steps)
        return True

    def pull(self):
        """Bring parameters, optimizer state and average into the numpy model and optimizer (here: they are)."""

    def push(self):
        """Send the numpy model's parameters and optimizer state to where the engine trains them."""

    def host_state(self, state):
        """A state from ``loss_and_grads`` as numpy arrays."""
        return state

    def batches(self, batches):
        """``batches`` (io/corpus.py) as this engine reads them."""
        return batches

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InProcess(Engine):
    """The engine interface over the model itself, in this process."""

    def __init__(self, model):
        self.model = model

    def loss_and_grads(self, inputs, targets, state=None, dropout_rng=None, dropout=None):
        return self.model.loss_and_grads(inputs, targets, state, dropout_rng, dropout=dropout)

    def chunk_nll(self, inputs, targets, state=None):
        return chunk_nll(self.model, inputs, targets, state)
