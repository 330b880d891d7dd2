"""What computes a training run's steps: the engine interface, and the engine that is the model itself.

    engine = InProcess(model)                            # sparse_rows=True: see Engine.update
    engine.train_with(optimizer, average)                # nn/optim.py's; average: a WeightAverage or None
    loss, grads, state = engine.loss_and_grads(inputs, targets, state, dropout_rng=rng)
    if engine.finite(loss, grads):
        engine.clip(grads)
        if engine.update(grads):                         # False: the update left a weight non-finite
            engine.update_average()
    nll, state = engine.chunk_nll(inputs, targets, state)

The worker pool (pool.py) and the torch engine (torch_engine.py) implement the same calls.
"""

import numpy as np

from ..models.scoring import chunk_nll, chunk_nlls, streams_nll
from ..nn.optim import finite_step


class WorkerError(RuntimeError):
    """A worker process could not start or failed; the message is one line."""


class Engine:
    """What computes a training run's steps: ``loss_and_grads`` and ``chunk_nll`` over a (T, B) chunk, on
    ``workers`` processes; a context manager that closes it."""

    workers = 1
    sparse_rows = False  # update only the input table's rows a step reads (TrainConfig.sparse_embedding)
    rows_read = None  # with sparse_rows: {the model's input table: the last step's ids, unique}

    def chunk_nlls(self, inputs, targets, state=None):
        """-log p of each of ``targets`` (T, B), and the state after them: in this process, by the model
        (the scores of a gpt model's validation windows)."""
        return chunk_nlls(self.model, inputs, targets, state)

    def streams_nll(self, ids, batch_size, seq_length):
        """models/scoring.py's streams_nll over ``ids``, its chunks scored by this engine: (total nats,
        characters scored)."""
        return streams_nll(self.model, ids, batch_size, seq_length, self.chunk_nll, self.chunk_nlls)

    # training: the torch engine keeps parameters and optimizer state on its device; here they are numpy's
    def train_with(self, optimizer, average=None):
        """Train with ``optimizer`` (nn/optim.py) and ``average`` (a WeightAverage, or None) from now on."""
        self.optimizer, self.average = optimizer, average

    def finite(self, loss, grads):
        """Whether a step's loss and gradient are finite (may be applied)."""
        return finite_step(loss, grads)

    def clip(self, grads):
        """Clip the gradient in place as the optimizer is set to."""
        self.optimizer.clip(grads)

    def read_rows(self, inputs):
        """With ``sparse_rows``, note the rows of the model's input table that a step's ``inputs`` read."""
        if self.sparse_rows:
            self.rows_read = {self.model.input_table: np.unique(inputs)}

    def update(self, grads):
        """The optimizer's update of the parameters; whether every weight is still finite. With
        ``sparse_rows``, of the input table only the rows the step read (nn/optim.py's ``update`` with
        ``rows``: its other rows have no gradient)."""
        return self.optimizer.update(self.model.params, grads, self.rows_read if self.sparse_rows else None)

    def update_average(self):
        """Fold the updated parameters into the running average of the weights, if training keeps one."""
        if self.average is not None:
            self.average.update(self.model.params, self.optimizer.steps)

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

    def __init__(self, model, sparse_rows=False):
        self.model, self.sparse_rows = model, sparse_rows

    def loss_and_grads(self, inputs, targets, state=None, dropout_rng=None, dropout=None):
        self.read_rows(inputs)
        return self.model.loss_and_grads(inputs, targets, state, dropout_rng, dropout=dropout)

    def chunk_nll(self, inputs, targets, state=None):
        return chunk_nll(self.model, inputs, targets, state)
