"""Which engine computes a training run's steps, as its config asks.

    engine = training_engine(model, config, distributed, note=reporter.message)

``--engine torch``: PyTorch on the config's device (torch_engine.py), one share of the streams per
torchrun process. The numpy engine: worker processes over the streams (pool.py) as ``--workers`` asks,
else one per CPU as the batch allows (each with at least the model's ``min_streams_per_worker``
streams), or the model itself in this process; with ``sparse_embedding``, updating only the input table's
rows each step reads (``Engine.update``).
"""

from .base import WorkerError
from .pool import default_workers, make_engine
from .torch_engine import TorchEngine


def numpy_workers(config, model):
    """The numpy engine's worker processes: ``--workers``, else as the CPUs and the batch allow ``model``
    (a model or its class: its ``min_streams_per_worker``)."""
    return config.workers or default_workers(config.batch_size, min_streams=model.min_streams_per_worker)


def training_engine(model, config, distributed=None, note=print):
    """The engine for ``config`` (a TrainConfig). Worker processes that cannot start raise WorkerError if
    ``--workers`` asked for them; else training goes on in one process, after ``note(text)`` says why."""
    if config.engine == "torch":
        return TorchEngine(model, config.device, distributed, config.precision)
    workers, sparse = numpy_workers(config, model), config.sparse_embedding
    try:
        return make_engine(model, config.batch_size, config.seq_length, workers, sparse)
    except WorkerError as e:
        if config.workers:
            raise
        note(f"note: training in one process ({e})")
        return make_engine(model, config.batch_size, config.seq_length, 1, sparse)
