"""Training: truncated BPTT over B contiguous streams, with the hidden state carried between chunks.

    result = train("input.txt", ModelConfig(model="lstm"), TrainConfig(max_time=300))

Each step takes the next T characters of every stream, runs forward and backward over them, updates
the parameters and carries the final state into the next chunk; the state is reset at the start of
each pass over the data. Checkpoints (``latest.npz`` at every evaluation, ``best.npz`` at the lowest
validation loss) and ``metrics.jsonl`` go to ``checkpoint_dir``. With ``average`` (steps) a running
average of the weights is what validation reads and the checkpoints hold as the model; the weights
training goes on from are saved beside it, as optimizer state named "iterate.<param>".
"""

import codecs
import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass

from ..engines.base import WorkerError
from ..engines.choice import training_engine
from ..engines.torch_engine import DEVICES, PRECISIONS
from ..inference.sample import generate
from ..io.checkpoint import Checkpoint, save_checkpoint
from ..io.corpus import StreamBatches, batches_for
from ..models.registry import LanguageModel, build_model
from ..nn.optim import OPTIMIZERS, check_clip_mode
from ..nn.schedule import SCHEDULES, budget_progress, check_min_lr, halving_decision, learning_rate, warmup_factor
from .lifecycle import (
    Clock,
    MetricsLog,
    NonFiniteGuard,
    Reporter,
    SignalCatcher,
    TrainingError,
    stop_reason,
    stopping_note,
)
from .start import ITERATE, Request, join_processes, leaving, start_run

ENGINES = ("numpy", "torch")


@dataclass
class TrainConfig:
    """Training options; the defaults are the project's recipe (docs/benchmarks.md, "Choosing the defaults")."""

    batch_size: int = 32
    seq_length: int = 100
    optimizer: str = "adam"
    learning_rate: float | None = 3e-3  # None: start.DEFAULT_LEARNING_RATES for the optimizer and model
    lr_schedule: str = "cosine"
    min_lr: float = 0.0  # where the cosine schedule ends (it decays from the learning rate to this)
    lr_decay: float = 0.97  # for the exponential schedule
    lr_decay_after: int = 10  # epochs
    warmup: int = 0  # steps of linear learning-rate warm-up at the start of training (not again on resume)
    patience: int | None = None  # stop after this many evaluations without a new best
    grad_clip: float = 5.0  # 0: no clipping
    clip_mode: str = "value"  # "value": each gradient element to [-grad_clip, grad_clip]; "norm": the global L2 norm
    weight_decay: float = 0.1  # decoupled (AdamW's): each step multiplies the weights by 1 - rate * weight_decay
    val_frac: float = 0.1
    eval_every: int = 200
    log_every: int = 10
    max_steps: int | None = None
    max_epochs: float | None = None
    max_time: float | None = 600.0
    random_seed: int | None = None
    checkpoint_dir: str = "checkpoints"
    sample_length: int = 200
    encoding: str = "utf-8"
    bytes_mode: bool = False
    late_dropout: float | None = 0.45  # dropout rises from the model's rate to this one over late_dropout_epochs
    late_dropout_epochs: tuple = (4.0, 16.0)
    average: int = 0  # steps: validate, save and sample a running average of the weights over about this many; 0: off
    workers: int | None = None  # processes computing each step (engines/pool.py); None: a CPU each, as the batch allows
    engine: str = "numpy"  # who computes each step: "numpy" (engines/pool.py) or "torch" (engines/torch_engine.py)
    device: str = "cpu"  # for the torch engine: "cpu" or "cuda"
    precision: str = "float32"  # the torch engine's forward and backward: "float32", "bfloat16" or "float16"
    sparse_embedding: bool = False  # update only the input table's rows a step reads (engines/base.py Engine.update)

    def validate(self):
        positive = {"batch_size": self.batch_size, "seq_length": self.seq_length, "eval_every": self.eval_every}
        if self.average:
            positive["average"] = self.average
        positive["log_every"] = self.log_every
        if self.warmup < 0:
            raise ValueError(f"warmup must be at least 0, not {self.warmup}")
        if self.workers is not None:
            positive["workers"] = self.workers
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, not {value}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.device not in DEVICES or (self.engine == "numpy" and self.device != "cpu"):
            raise ValueError(f"device {self.device!r} needs --engine torch (devices: {', '.join(DEVICES)})")
        if self.precision not in PRECISIONS or (self.engine == "numpy" and self.precision != "float32"):
            raise ValueError(f"precision {self.precision!r} needs --engine torch (precisions: {', '.join(PRECISIONS)})")
        if self.engine == "torch" and self.workers is not None:
            raise ValueError("--workers is the numpy engine's; the torch engine runs on more processes under torchrun")
        if self.engine == "torch" and self.sparse_embedding:
            raise ValueError("--sparse-embedding is the numpy engine's")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning-rate must be positive, not {self.learning_rate}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr-schedule must be one of {', '.join(SCHEDULES)}, not {self.lr_schedule!r}")
        check_min_lr(self.min_lr, self.learning_rate)
        check_clip_mode(self.clip_mode)
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr-decay must be in (0, 1], not {self.lr_decay}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1, not {self.patience}")
        if not 0 <= self.val_frac < 1:
            raise ValueError(f"val-frac must be in [0, 1), not {self.val_frac}")
        for name in ("max_steps", "max_epochs", "max_time"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, not {value}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        if self.late_dropout is not None and not 0 <= self.late_dropout < 1:
            raise ValueError(f"late-dropout must be in [0, 1), not {self.late_dropout}")
        if len(self.late_dropout_epochs) != 2 or not 0 <= self.late_dropout_epochs[0] <= self.late_dropout_epochs[1]:
            raise ValueError(f"late-dropout-epochs must be two epochs A <= B, not {self.late_dropout_epochs}")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.sample_length < 0:
            raise ValueError("grad-clip, weight-decay and sample-length cannot be negative")


@dataclass
class TrainResult:
    step: int
    epoch: float
    best_val_loss: float | None
    last_val_loss: float | None
    elapsed: float
    chars_per_sec: float
    stop_reason: str
    checkpoint_dir: str
    interrupted_by: int | None = None  # the signal number, if a signal stopped training
    model: LanguageModel | None = None  # the model trained (as training left it: not the running average)


def train(corpus_path, model_config, config, resume=None, reporter=None, overwrite=False, init_from=None):
    """Train a model on ``corpus_path`` (a file or directory, or a list of them); return a TrainResult.

    See the module docstring. ``model_config.vocab_size`` is taken from the corpus. With ``resume`` (a
    checkpoint file or directory) the model, optimizer state, data position, hidden state, RNG and the
    time trained so far continue exactly. With ``init_from`` (a checkpoint) a new run starts from that
    model's weights, its vocabulary extended by the corpus's new symbols (finetune.py); ``model_config``
    is then None (the checkpoint's) or must have the checkpoint's shape. A fresh run refuses a checkpoint
    directory that already holds a model unless ``overwrite``. With ``config.engine == "torch"`` PyTorch
    computes the steps (engines/torch_engine.py); launched by torchrun in several processes, each takes a share
    of the streams and process 0 writes and reports. Raises TrainingError (or CorpusError /
    CheckpointError) with a one-line reason.
    """
    config.validate()
    distributed = join_processes(config)  # None unless torchrun started several processes
    writer = distributed is None or distributed.writer  # the process that writes checkpoints and reports
    reporter = (reporter or Reporter()) if writer else Reporter()
    request = Request(corpus_path, model_config, config, resume, init_from, overwrite)
    with leaving(distributed):
        run = start_run(request, reporter, distributed)
        return _train_loop(run, reporter)


@dataclass
class _Loop:
    """What the loop carries from step to step besides the run's position."""

    batches: StreamBatches  # or gpt's windows (io/corpus.py batches_for)
    engine: object  # engines/: computes each step's loss and gradients
    clock: Clock
    guard: NonFiniteGuard
    state: tuple | None  # the hidden state carried into the next chunk
    first_step: int
    last_log_time: float = 0.0
    last_log_step: int = 0
    dropout: float = 0.0  # this step's rate
    stop_reason: str | None = None

    def epoch(self, pos):
        """Epochs done, with the fraction of this one."""
        return pos.epoch + pos.chunk / self.batches.chunks_per_epoch


def _train_loop(run, reporter):
    """The training loop over a started run (see the module docstring), a step at a time until it stops."""
    config, pos = run.config, run.pos
    batches = batches_for(run.model, run.train_ids, config.batch_size, config.seq_length, config.random_seed)
    engine = training_engine(run.model, config, run.distributed, note=reporter.message)
    _report_start(run, batches, engine, reporter)
    engine.train_with(run.optimizer, run.average)  # the torch engine: parameters and optimizer state to its device
    batches = engine.batches(batches)  # the torch engine: the ids to its device, once
    guard = NonFiniteGuard(run.model.params, run.optimizer, pos, reporter, lambda: _save(run, "latest.npz", None))
    loop = _Loop(batches, engine, Clock(pos.elapsed), guard, run.state, pos.step, last_log_step=pos.step)
    loop.last_log_time = loop.clock.started
    with engine, SignalCatcher(stopping_note(reporter)) as signals, \
            MetricsLog(config.checkpoint_dir, run.resumed, run.writer) as log:
        try:
            while loop.stop_reason is None:
                _train_step(run, loop, signals, log, reporter)
        except WorkerError as e:  # the parameters here are those of the last completed step: keep them
            _save_latest(run, loop)
            raise TrainingError(f"{e}; the model of step {pos.step} is saved in latest.npz") from None
    engine.pull()
    reporter.close()
    return _result(run, loop, signals.signum)


def _train_step(run, loop, signals, log, reporter):
    """One step, phase by phase; sets ``loop.stop_reason`` when the run is to stop."""
    config, pos = run.config, run.pos
    # data: the next chunk of every stream (gpt: of random windows); a new pass over the data starts from zero
    # state (also when a resumed position is past the end of a corpus that has since shrunk)
    if pos.chunk >= loop.batches.chunks_per_epoch:
        pos.epoch, pos.chunk, loop.state = pos.epoch + 1, 0, None
    inputs, targets = loop.batches.chunk(pos.chunk, pos.epoch)
    # schedule: this step's learning rate and dropout
    loop.dropout = _schedule(run, loop)
    # forward and backward, on the engine's processes
    loss, grads, new_state = loop.engine.loss_and_grads(inputs, targets, loop.state, dropout_rng=run.rng,
                                                        dropout=loop.dropout)
    # update, on the engine's device: clip the gradient, step the optimizer, fold the weights into the running
    # average; a step whose loss, gradient or update is not finite is never kept (the guard goes back to the
    # last evaluated weights, at half the rate)
    engine = loop.engine
    if not engine.finite(loss, grads):
        return _restore(loop, "loss")
    engine.clip(grads)
    if not engine.update(grads):
        return _restore(loop, "update")
    engine.update_average()
    loop.guard.good_step_taken()
    loop.state = new_state
    pos.step += 1
    pos.chunk += 1
    pos.count_loss(loss)
    # stop: a limit reached, a signal, or another of several processes stopping
    pos.elapsed = loop.clock.elapsed()
    loop.stop_reason = _agreed_stop_reason(run, loop, signals.signum)
    # log, and at an evaluation validate, checkpoint and preview; an interruption leaves no trace (no extra
    # validation to sway patience or halving), so that --resume goes on exactly as the uninterrupted run
    evaluating = pos.step % config.eval_every == 0 or loop.stop_reason not in (None, "interrupted")
    if pos.step % config.log_every == 0 or evaluating:
        _log(run, loop, log, reporter, evaluating)
    if loop.stop_reason == "interrupted" and not evaluating:
        _save_latest(run, loop)


def _restore(loop, what):
    """A bad step: the guard's last good parameters and optimizer state, on the engine's device too, and the
    next chunk from zero state."""
    loop.guard.restore(what)
    loop.engine.push()
    loop.state = None


def _save_latest(run, loop):
    """latest.npz now, from the engine's device if it trains there."""
    loop.engine.pull()
    _save(run, "latest.npz", loop.engine.host_state(loop.state))


def _schedule(run, loop):
    """Set this step's learning rate; return its dropout rate."""
    config, pos = run.config, run.pos
    epoch = loop.epoch(pos)
    progress = budget_progress(config, pos.step, epoch, loop.clock.elapsed())
    scale = pos.lr_scale * warmup_factor(config.warmup, pos.step)
    run.optimizer.learning_rate = learning_rate(config, run.base_lr, scale, progress, epoch)
    return _dropout_rate(config, run.model.config.dropout, epoch)


def _agreed_stop_reason(run, loop, signum):
    """runs.stop_reason; of several processes, all stop together, and agree on whether to validate."""
    reason = stop_reason(run.config, run.pos, loop.epoch(run.pos), signum)
    if run.distributed is not None and run.distributed.any(reason is not None):
        reason = reason or "stopped by another process"
        if run.distributed.any(reason == "interrupted"):
            reason = "interrupted"
    return reason


def _log(run, loop, log, reporter, evaluating):
    """Write the metrics record of this step (validating, checkpointing and previewing first if
    ``evaluating``) and report it; the training-loss sums start afresh."""
    config, pos = run.config, run.pos
    now = time.perf_counter()
    chars = (pos.step - loop.last_log_step) * config.batch_size * config.seq_length
    record = {
        "step": pos.step,
        "epoch": round(loop.epoch(pos), 4),
        "train_loss": pos.take_mean_loss(),  # before the checkpoint about to be written: it starts afresh
        "chars_per_sec": chars / max(now - loop.last_log_time, 1e-9),
        "elapsed": round(pos.elapsed, 3),
        "learning_rate": run.optimizer.learning_rate,
        "dropout": loop.dropout,
    }
    if evaluating:
        loop.engine.pull()  # the device's parameters and optimizer state into the model and optimizer
        hidden = loop.engine.host_state(loop.state)
        loop.stop_reason = _evaluate_and_save(run, loop.engine, reporter, hidden) or loop.stop_reason
        if pos.last_val_loss is None or math.isfinite(pos.last_val_loss):
            loop.guard.remember()
        if pos.last_val_loss is not None:
            record["val_loss"] = pos.last_val_loss
    log.write(record)
    reporter.step(pos.step, record)
    loop.last_log_time, loop.last_log_step = time.perf_counter(), pos.step


def _report_start(run, batches, engine, reporter):
    config = run.config
    reporter.start(
        _total_steps(config, batches.chunks_per_epoch),
        {
            "params": run.model.num_params(),
            "vocab": len(run.vocab),
            "train_chars": len(run.train_ids),
            "val_chars": len(run.val_ids),
            "chunks_per_epoch": batches.chunks_per_epoch,
            "seed": config.random_seed,
            "max_time": config.max_time,
            "workers": engine.workers,
        },
    )


def _result(run, loop, signum):
    pos, config = run.pos, run.config
    elapsed = loop.clock.this_run()
    chars = (pos.step - loop.first_step) * config.batch_size * config.seq_length
    return TrainResult(
        step=pos.step,
        epoch=loop.epoch(pos),
        best_val_loss=pos.best_val_loss,
        last_val_loss=pos.last_val_loss,
        elapsed=elapsed,
        chars_per_sec=chars / max(elapsed, 1e-9),
        stop_reason=loop.stop_reason,
        checkpoint_dir=config.checkpoint_dir,
        interrupted_by=signum,
        model=run.model,
    )


def _save(run, name, hidden):
    """Write checkpoint ``name`` (latest.npz, best.npz) with the run's position and ``hidden`` state (in
    process 0 only, of several)."""
    if not run.writer:
        return
    meta = {
        "train": asdict(run.config),
        "corpus": run.corpus_paths,
        "corpus_files": list(run.corpus_keys),
        **({"init_from": run.init_from} if run.init_from else {}),
        **run.pos.to_meta(run.rng),
    }
    hidden = tuple(hidden) if hidden is not None else ()
    model, optimizer_state = run.model, run.optimizer.state
    if run.average is not None:  # the average is the model; the weights training goes on from ride along
        model = build_model(run.model.config, params=run.average.params)
        optimizer_state.update({f"{ITERATE}{k}": v for k, v in run.model.params.items()})
    path = os.path.join(run.config.checkpoint_dir, name)
    save_checkpoint(path, Checkpoint(model, run.vocab, meta, optimizer_state, hidden))


def _evaluate_and_save(run, engine, reporter, hidden):
    """Validate, checkpoint, preview; return a reason to stop (halving rule, patience) or None."""
    config, pos, model = run.config, run.pos, run.model
    stop, val_loss, preview = None, None, None
    if run.distributed is not None:  # the processes took the same steps: so their parameters must be the same
        run.distributed.check_same(model.params.flat, "parameters")
    with _average_in_place(model.params, run.average):
        if len(run.val_ids) > 1:
            nll, n = engine.streams_nll(run.val_ids, config.batch_size, config.seq_length)
            val_loss = nll / n
        if config.sample_length and run.writer:
            preview = generate(model, run.vocab, length=config.sample_length, temperature=0.8, random_seed=pos.step)
    if val_loss is not None:
        previous, pos.last_val_loss = pos.last_val_loss, val_loss
        if pos.best_val_loss is None or pos.last_val_loss < pos.best_val_loss:
            pos.best_val_loss, pos.evals_since_best = pos.last_val_loss, 0
            _save(run, "best.npz", hidden)
        else:
            pos.evals_since_best += 1
            if config.patience and pos.evals_since_best >= config.patience:
                stop = "patience"
        if config.lr_schedule == "halving":
            halve, converged = halving_decision(previous, pos.last_val_loss, pos.halving)
            pos.halving = pos.halving or halve
            if halve:
                pos.lr_scale /= 2
            if converged:
                stop = "converged"
    _save(run, "latest.npz", hidden)
    if preview is not None:
        reporter.sample("".join(preview))
    return stop


def _dropout_rate(config, base, epoch):
    """The model's dropout, rising linearly to ``late_dropout`` (if higher) between the two epochs given."""
    if config.late_dropout is None or config.late_dropout <= base:
        return base
    start, end = config.late_dropout_epochs
    progress = min(1.0, max(0.0, (epoch - start) / max(end - start, 1e-9)))
    return base + (config.late_dropout - base) * progress


@contextlib.contextmanager
def _average_in_place(params, average):
    """Within the block ``params`` hold the running average (the workers read them there), then their own values."""
    if average is None:
        yield
        return
    own = params.flat.copy()
    params.flat[...] = average.params.flat
    try:
        yield
    finally:
        params.flat[...] = own


def _total_steps(config, chunks_per_epoch):
    limits = [config.max_steps] if config.max_steps else []
    if config.max_epochs:
        limits.append(math.ceil(config.max_epochs * chunks_per_epoch))
    return min(limits) if limits else None
