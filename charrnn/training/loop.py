"""Training: truncated BPTT over B contiguous streams, with the hidden state carried between chunks.

    result = train("input.txt", ModelConfig(model="lstm"), TrainConfig(max_time=300))

Each step takes the next T characters of every stream, runs forward and backward over them, updates
the parameters and carries the final state into the next chunk; the state is reset at the start of
each pass over the data. Checkpoints (``latest.npz`` at every evaluation, ``best.npz`` at the lowest
validation loss) and ``metrics.jsonl`` go to ``checkpoint_dir``. With ``average`` (steps) a running
average of the weights is what validation reads and the checkpoints hold as the model; the weights
training goes on from are saved beside it, as optimizer state named "iterate.<param>".
"""

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass

from ..engines.base import WorkerError
from ..engines.choice import training_engine
from ..inference.sample import generate
from ..io.checkpoint import Checkpoint, save_checkpoint
from ..io.corpus import StreamBatches, batches_for
from ..models.registry import build_model
from ..nn.schedule import budget_by_time, budget_progress, halving_decision, learning_rate, warmup_factor
from .lifecycle import (
    Clock,
    MetricsLog,
    NonFiniteGuard,
    Reporter,
    SignalCatcher,
    TrainingError,
    patience_spent,
    stop_reason,
    stopping_note,
)
from .run import ITERATE, TrainResult
from .start import Setup, fine_tuned_run, fresh_run, join_processes, leaving, resumed_run


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
    if resume is not None and init_from is not None:
        raise TrainingError("--init-from starts a new run from a model's weights and --resume continues a run; "
                            "give one of them")
    distributed = join_processes(config)  # None unless torchrun started several processes
    writer = distributed is None or distributed.writer  # the process that writes checkpoints and reports
    reporter = (reporter or Reporter()) if writer else Reporter()
    setup = Setup(corpus_path, config, reporter, distributed, overwrite)
    with leaving(distributed):
        if resume is not None:
            run = resumed_run(setup, resume)
        elif init_from is not None:
            run = fine_tuned_run(setup, init_from, model_config)
        else:
            run = fresh_run(setup, model_config)
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
    eval_seconds: float | None = None  # how long the last evaluation took (validation, preview, checkpoints)
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
    epoch, elapsed = loop.epoch(pos), loop.clock.elapsed()
    if run.distributed is not None and budget_by_time(config):  # the clock sets the rate: every process reads
        elapsed = run.distributed.agree(elapsed)  # process 0's (one rate, so the same weights)
    progress = budget_progress(config, pos.step, epoch, elapsed)
    scale = pos.lr_scale * warmup_factor(config.warmup, pos.step)
    run.optimizer.learning_rate = learning_rate(config, run.base_lr, scale, progress, epoch)
    return _dropout_rate(config, run.model.config.dropout, epoch)


def _agreed_stop_reason(run, loop, signum):
    """runs.stop_reason; of several processes, all stop together, and agree on whether to validate."""
    reason = stop_reason(run.config, run.pos, loop.epoch(run.pos), signum, _final_evaluation_seconds(run, loop))
    if run.distributed is not None and run.distributed.any(reason is not None):
        reason = reason or "stopped by another process"
        if run.distributed.any(reason == "interrupted"):
            reason = "interrupted"
    return reason


def _final_evaluation_seconds(run, loop):
    """What --max-time keeps for the evaluation a run ends with, so that it ends within its time: the last
    evaluation's seconds, or before one, a guess from the pace of the steps (a validation chunk: half a step)."""
    if loop.eval_seconds is not None:
        return loop.eval_seconds
    config, steps = run.config, run.pos.step - loop.first_step
    chunks = _validation_chars(run) / (config.batch_size * config.seq_length)
    return chunks * loop.clock.this_run() / max(steps, 1) / 2


def _validation_chars(run):
    """The characters an evaluation scores: the validation tails' and the validation files'."""
    files = run.validation.chars if run.validation is not None else 0
    return (len(run.val_ids) if len(run.val_ids) > 1 else 0) + files


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
        began = time.perf_counter()
        loop.engine.pull()  # the device's parameters and optimizer state into the model and optimizer
        hidden = loop.engine.host_state(loop.state)
        loop.stop_reason = _evaluate_and_save(run, loop, reporter, hidden) or loop.stop_reason
        loop.eval_seconds = time.perf_counter() - began
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
            "val_chars": _validation_chars(run),
            "chunks_per_epoch": batches.chunks_per_epoch,
            "seed": config.random_seed,
            "max_time": config.max_time,
            "workers": engine.workers,
            "resumed": run.resumed,  # from step, with elapsed seconds trained
            "step": run.pos.step,
            "elapsed": run.pos.elapsed,
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
        "corpus_sha256": list(run.corpus_sha256),
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


def _evaluate_and_save(run, loop, reporter, hidden):
    """Validate, checkpoint, preview; return a reason to stop (halving rule, patience) or None."""
    config, pos, model, engine = run.config, run.pos, run.model, loop.engine
    stop, val_loss, preview = None, None, None
    if run.distributed is not None:  # the processes took the same steps: so their parameters must be the same
        run.distributed.check_same(model.params.flat, "parameters")
    with _average_in_place(model.params, run.average):
        val_loss = _validation_loss(run, engine)
        if config.sample_length and run.writer:
            preview = generate(model, run.vocab, length=config.sample_length, temperature=0.8, random_seed=pos.step)
    if loop.stop_reason == "max-time":  # the time kept for this last validation is spent: a resume starts past it
        pos.elapsed = max(loop.clock.elapsed(), config.max_time)
    if val_loss is not None:
        previous, pos.last_val_loss = pos.last_val_loss, val_loss
        if pos.best_val_loss is None or pos.last_val_loss < pos.best_val_loss:
            pos.best_val_loss, pos.evals_since_best = pos.last_val_loss, 0
            _save(run, "best.npz", hidden)
        else:
            pos.evals_since_best += 1
            stop = patience_spent(config, pos)
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


def _validation_loss(run, engine):
    """Mean nats per character over the validation tails (B streams, as training reads them) and the validation
    files (each read whole, as charrnn eval reads a file: training/validation.py); None if there are none."""
    config = run.config
    total, n = engine.streams_nll(run.val_ids, config.batch_size, config.seq_length) if len(run.val_ids) > 1 \
        else (0.0, 0)
    if run.validation is not None:
        result = run.validation.evaluate(run.model, run.vocab)
        total, n = total + result.total_nll, n + result.chars
    return total / n if n else None


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
