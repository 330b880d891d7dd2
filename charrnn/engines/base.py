"""What computes a training run's steps: the engine interface, and the engine that is the model itself.

    engine = InProcess(model)
    loss, grads, state = engine.loss_and_grads(inputs, targets, state, dropout_rng=rng)
    nll, state = engine.chunk_nll(inputs, targets, state)

The worker pool (pool.py) and the torch engine (torch_engine.py) implement the same calls.
"""

from ..evaluate import chunk_nll, chunk_nlls


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
