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
from dataclasses import asdict, dataclass, replace

import numpy as np

from .engines.base import WorkerError
from .engines.pool import default_workers, make_engine
from .engines.torch_engine import DEVICES, Distributed, TorchEngine
from .evaluate import streams_nll
from .finetune import extend_vocab
from .io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .io.corpus import CorpusError, StreamBatches, batches_for, file_key, load_corpus
from .memory import check_fits, free_memory
from .models import LanguageModel, build_model, model_class, training_memory
from .nn.numerics import check_params
from .nn.optim import OPTIMIZERS, WeightAverage, make_optimizer
from .nn.schedule import SCHEDULES, budget_progress, halving_decision, learning_rate, warmup_factor
from .runs import (
    Clock,
    MetricsLog,
    NonFiniteGuard,
    Position,
    Reporter,
    SignalCatcher,
    TrainingError,
    check_budget_left,
    open_checkpoint_dir,
    restore_optimizer,
    stop_reason,
    stopping_note,
    with_seed,
)
from .sample import generate

DEFAULT_LEARNING_RATES = {  # gpt: adam's is the gpt recipe's; the others are not tuned (a tenth of the RNNs')
    "adam": {"rnn": 2e-3, "lstm": 3e-3, "gru": 3e-3, "gpt": 3e-3},
    "rmsprop": {"rnn": 2e-3, "lstm": 2e-3, "gru": 2e-3, "gpt": 3e-4},
    "adagrad": {"rnn": 0.01, "lstm": 0.01, "gru": 0.03, "gpt": 1e-3},  # docs/benchmarks.md, "Choosing the defaults"
    "sgd": {"rnn": 0.5, "lstm": 1.0, "gru": 1.0, "gpt": 0.1},
}
ENGINES = ("numpy", "torch")
LARGE_VALIDATION = 5_000_000  # characters: beyond this, suggest a smaller --val-frac


@dataclass
class TrainConfig:
    """Training options; the defaults are the project's recipe (docs/benchmarks.md, "Choosing the defaults")."""

    batch_size: int = 32
    seq_length: int = 100
    optimizer: str = "adam"
    learning_rate: float | None = 3e-3  # None: DEFAULT_LEARNING_RATES for the optimizer and model
    lr_schedule: str = "cosine"
    lr_decay: float = 0.97  # for the exponential schedule
    lr_decay_after: int = 10  # epochs
    warmup: int = 0  # steps of linear learning-rate warm-up at the start of training (not again on resume)
    patience: int | None = None  # stop after this many evaluations without a new best
    grad_clip: float = 5.0
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
        if self.engine == "torch" and self.workers is not None:
            raise ValueError("--workers is the numpy engine's; the torch engine runs on more processes under torchrun")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning-rate must be positive, not {self.learning_rate}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr-schedule must be one of {', '.join(SCHEDULES)}, not {self.lr_schedule!r}")
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


@dataclass
class TrainPosition(Position):
    """Where language-model training is (runs.Position), with its place in the epoch and its validation."""

    chunk: int = 0  # chunks done in the current epoch
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    halving: bool = False  # the halving schedule has started halving


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
    distributed = _join_processes(config)  # None unless torchrun started several processes
    writer = distributed is None or distributed.writer  # the process that writes checkpoints and reports
    reporter = (reporter or Reporter()) if writer else Reporter()
    request = _Request(corpus_path, model_config, config, resume, init_from, overwrite)
    with _leaving(distributed):
        run = _start_run(request, reporter, distributed)
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
    engine = _start_engine(run.model, config, reporter, run.distributed)
    _report_start(run, batches, engine, reporter)
    guard = NonFiniteGuard(run.model.params, run.optimizer, pos, reporter, lambda: _save(run, "latest.npz", None))
    loop = _Loop(batches, engine, Clock(pos.elapsed), guard, run.state, pos.step, last_log_step=pos.step)
    loop.last_log_time = loop.clock.started
    with engine, SignalCatcher(stopping_note(reporter)) as signals, \
            MetricsLog(config.checkpoint_dir, run.resumed, run.writer) as log:
        try:
            while loop.stop_reason is None:
                _train_step(run, loop, signals, log, reporter)
        except WorkerError as e:  # the parameters here are those of the last completed step: keep them
            _save(run, "latest.npz", loop.state)
            raise TrainingError(f"{e}; the model of step {pos.step} is saved in latest.npz") from None
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
    # update: a non-finite step is never applied (back to the last evaluated weights, at half the rate)
    if not _update(run, loop.guard, loss, grads):
        loop.state = None
        return
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
        _save(run, "latest.npz", loop.state)


def _schedule(run, loop):
    """Set this step's learning rate; return its dropout rate."""
    config, pos = run.config, run.pos
    epoch = loop.epoch(pos)
    progress = budget_progress(config, pos.step, epoch, loop.clock.elapsed())
    scale = pos.lr_scale * warmup_factor(config.warmup, pos.step)
    run.optimizer.learning_rate = learning_rate(config, run.base_lr, scale, progress, epoch)
    return _dropout_rate(config, run.model.config.dropout, epoch)


def _update(run, guard, loss, grads):
    """The update phase: the optimizer's step under the non-finite guard, then the running average of the
    weights. False if the step was not applied (the guard restored the last evaluated state)."""
    if not guard.update(loss, grads):
        return False
    if run.average is not None:
        run.average.update(run.model.params, run.optimizer.steps)
    return True


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
        loop.stop_reason = _evaluate_and_save(run, loop.engine, reporter, loop.state) or loop.stop_reason
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


@dataclass
class _Request:
    """What ``train`` was asked to do."""

    corpus_path: object
    model_config: object
    config: TrainConfig
    resume: str | None
    init_from: str | None
    overwrite: bool


@dataclass
class _Run:
    """What a training run works on, fresh or resumed (``_start_run``); ``pos`` and ``rng`` move as it goes."""

    config: TrainConfig  # as validated and fitted to the corpus, with a random seed
    corpus_paths: list  # absolute paths of the corpus's files, in order
    vocab: object  # io/corpus.py Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    model: LanguageModel  # CharRNN or CharGPT (models.py)
    optimizer: object  # nn/optim.py Optimizer
    average: WeightAverage | None
    base_lr: float
    pos: TrainPosition
    rng: np.random.Generator  # dropout masks; its state is saved in every checkpoint
    state: tuple | None  # the hidden state carried into the first chunk
    resumed: bool
    distributed: object = None  # torch_engine.Distributed: this process's place among torchrun's; None: alone
    init_from: str | None = None  # the checkpoint a fine-tuning run started from
    corpus_keys: tuple = ()  # io/corpus.py file_key of each corpus file as this run read it: resume tells a change

    @property
    def writer(self):
        """Whether this process writes checkpoints and metrics (process 0 of several, or the only one)."""
        return self.distributed is None or self.distributed.writer


@dataclass
class _Start:
    """A run's model and where it starts: fresh, resumed or fine-tuned (``_model_and_position``)."""

    model: LanguageModel
    pos: TrainPosition
    state: tuple | None = None
    saved_average: np.ndarray | None = None


def _start_run(request, reporter, distributed):
    """Check the options, read the corpus, and build the model and optimizer: fresh, from ``resume``, or
    fine-tuning the model of ``init_from``. Of several processes, process 0 prepares the directory and the
    corpus cache while the others wait."""
    ckpt, base = _open_run(request, distributed)
    corpus, config = _read_corpus(request, ckpt, base, reporter, distributed)
    rng = np.random.default_rng(config.random_seed)
    corpus_keys = tuple(file_key(path) for path, _ in corpus.files)
    start = _model_and_position(request, config, ckpt, base, corpus, rng, reporter)
    if ckpt:
        _warn_if_corpus_changed(ckpt, corpus_keys, request.resume, reporter)
        _note_halvings(start.pos, config, reporter)
    model = start.model
    if config.late_dropout is not None and config.late_dropout < getattr(model.config, "dropout", 0.0):
        reporter.message(f"note: --late-dropout {config.late_dropout:g} is below the model's dropout "
                         f"{model.config.dropout:g}: dropout stays at {model.config.dropout:g}")
    base_lr = config.learning_rate or DEFAULT_LEARNING_RATES[config.optimizer][model.config.model]
    optimizer = make_optimizer(config.optimizer, model.params, base_lr, config.grad_clip, config.weight_decay)
    average = WeightAverage(model.params, config.average, start=start.saved_average) if config.average else None
    if ckpt and ckpt.optimizer_state:  # (an imported model has none: the optimizer starts afresh)
        restore_optimizer(optimizer, ckpt.optimizer_state, request.resume, config.optimizer)
    paths = [os.path.abspath(path) for path, _ in corpus.files]
    init_from = os.path.abspath(request.init_from) if request.init_from is not None else None
    return _Run(config, paths, corpus.vocab, corpus.train_ids, corpus.val_ids, model, optimizer, average, base_lr,
                start.pos, rng, start.state, resumed=ckpt is not None, distributed=distributed, init_from=init_from,
                corpus_keys=corpus_keys)


def _open_run(request, distributed):
    """The checks that need no corpus, then the checkpoint directory (of several processes, process 0's
    work): return the checkpoint to resume and the one to fine-tune (each None if not asked for)."""
    config, resume = request.config, request.resume
    if request.model_config is not None and resume is None and request.init_from is None:
        _check_memory(request.model_config, config)  # before --overwrite clears anything
    base = _load_base(request.init_from, resume, config)  # before --overwrite clears anything
    writer = distributed is None or distributed.writer
    if not writer:
        _meet(distributed.barrier)
    open_checkpoint_dir(config.checkpoint_dir, fresh=resume is None and writer, overwrite=request.overwrite)
    ckpt = load_checkpoint(resume) if resume is not None else None
    return ckpt, base


def _read_corpus(request, ckpt, base, reporter, distributed):
    """The corpus (its vocabulary the checkpoint's, or the fine-tuned model's extended), and the config
    fitted to it, with a random seed (of several processes, process 0's)."""
    config = request.config
    corpus = load_corpus(
        request.corpus_path,
        config.checkpoint_dir,
        encoding=config.encoding,
        bytes_mode=config.bytes_mode,
        vocab=ckpt.vocab if ckpt else base.vocab if base else None,
        val_frac=config.val_frac,
        extend_vocab=base is not None,
    )
    if distributed is not None and distributed.writer:
        _meet(distributed.barrier)
    if len(corpus.files) > 1:
        reporter.message(f"corpus: {len(corpus.files)} files, {len(corpus.ids):,} characters")
    if len(corpus.val_ids) > LARGE_VALIDATION:
        suggestion = f"{LARGE_VALIDATION / 5 / len(corpus.ids):.1g}"
        reporter.message(
            f"note: every evaluation reads the whole validation tail ({len(corpus.val_ids):,} characters); for a "
            f"corpus this large, --val-frac {suggestion} keeps evaluations short"
        )
    config = _fit_chunk_to_corpus(config, len(corpus.train_ids), reporter)
    if distributed is not None and config.batch_size < distributed.world_size:
        raise TrainingError(f"batch size {config.batch_size} is smaller than the {distributed.world_size} processes: "
                            "each needs at least one stream")
    config = with_seed(config)
    if distributed is not None:  # every process draws the same dropout seeds: process 0's
        config = replace(config, random_seed=_meet(distributed.agree, config.random_seed))
    return corpus, config


def _model_and_position(request, config, ckpt, base, corpus, rng, reporter):
    """The model and position to start from: the checkpoint's (``rng`` set to its state), the fine-tuned
    model's, or a fresh model's."""
    if base:
        return _Start(_fine_tuned_model(base, request.model_config, corpus, corpus.val_ids, rng, reporter),
                      TrainPosition())
    if not ckpt:
        return _Start(_fresh_model(request.model_config, corpus, corpus.val_ids, rng), TrainPosition())
    _check_resumable(ckpt, config)
    model, saved_average = _take_iterate(ckpt, request.resume)
    pos = TrainPosition.from_meta(ckpt.meta)
    if pos.rng_state:  # an imported model has no training position: it starts at step 0
        rng.bit_generator.state = pos.rng_state
    chunks_per_epoch = StreamBatches(corpus.train_ids, config.batch_size, config.seq_length).chunks_per_epoch
    check_budget_left(config, pos, pos.epoch + pos.chunk / chunks_per_epoch, request.resume)
    return _Start(model, pos, ckpt.hidden_state or None, saved_average)


def _note_halvings(pos, config, reporter):
    """A resumed run whose rate was halved scales a --learning-rate given now too: say so."""
    if pos.lr_scale != 1.0:
        halvings = round(-math.log2(pos.lr_scale))
        reporter.message(f"note: this run's learning rate was halved {halvings} time{'s' * (halvings != 1)} "
                         f"(non-finite steps, the halving schedule); --learning-rate {config.learning_rate:g} "
                         f"goes on at {config.learning_rate * pos.lr_scale:.3g}")


def _check_memory(model_config, config):
    """Refuse, in one line, a model whose training cannot fit in the memory this machine has free (a lower
    bound, reckoned from the shapes, with a vocabulary of 2: the corpus is not read yet)."""
    if free_memory() is None:
        return
    model_config = replace(model_config, vocab_size=max(model_config.vocab_size, 2))
    try:
        model_config.validate()
    except ValueError as e:
        raise TrainingError(str(e)) from None
    workers = 1 if config.engine == "torch" else _numpy_workers(config, model_class(model_config))
    # with worker processes, a copy of the parameters and a gradient per worker in shared memory besides
    params, step = training_memory(model_config, config.batch_size, config.seq_length,
                                   copies=4 + (workers if workers > 1 else 0))
    check_fits(params, step, config.batch_size, config.seq_length)


def _load_base(init_from, resume, config):
    """The checkpoint to fine-tune (``init_from``), or None; refused with ``resume`` or another tokenisation."""
    if init_from is None:
        return None
    if resume is not None:
        raise TrainingError("--init-from starts a new run from a model's weights and --resume continues a run; "
                            "give one of them")
    base = load_checkpoint(init_from)
    if base.vocab.bytes_mode != config.bytes_mode:
        kind = "bytes (--bytes)" if base.vocab.bytes_mode else "characters"
        raise TrainingError(f"{init_from}: that model reads {kind}; fine-tune it with the same --bytes setting")
    return base


def _fine_tuned_model(base, model_config, corpus, val_ids, rng, reporter):
    """``base``'s model over the corpus's vocabulary (finetune.py): new symbols get fresh rows."""
    new = [s for s in corpus.vocab.symbols if s not in base.vocab.symbols]
    if new:
        reporter.message(f"note: {len(new)} characters new to the model: {corpus.vocab.preview(new, 40)}")
    counts = corpus.counts - np.bincount(val_ids, minlength=len(corpus.vocab))  # the training text's
    try:
        return extend_vocab(base.model, base.vocab, corpus.vocab, rng, counts, config=model_config)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def _warn_if_corpus_changed(ckpt, corpus_keys, resume, reporter):
    """A resumed run on a corpus edited since (same characters) goes on from its saved position in the new
    text: say so, since it is no longer the same run. (A checkpoint from before this check says nothing.)"""
    saved = ckpt.meta.get("corpus_files")
    if saved is not None and saved != list(corpus_keys):
        reporter.message(f"warning: the corpus has changed since {resume} was written (its files' names, sizes "
                         "or modification times differ); training goes on from the saved position in the new text")


def _check_resumable(ckpt, config):
    """Refuse to resume with data options other than the checkpoint's: the data position would mean another text."""
    saved = ckpt.meta.get("train", {})
    for name in ("batch_size", "seq_length", "val_frac", "bytes_mode", "encoding"):
        if name in saved and saved[name] != getattr(config, name):
            raise TrainingError(
                f"cannot resume with {name.replace('_', '-')} {getattr(config, name)}: the checkpoint was "
                f"trained with {saved[name]}"
            )


def _fresh_model(model_config, corpus, val_ids, rng):
    """A new model for the corpus's vocabulary, its output bias at the training text's unigram distribution."""
    vocab = corpus.vocab
    model_config = replace(model_config, vocab_size=len(vocab))
    try:
        model = build_model(model_config, rng=rng)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    # start the output layer at the training text's unigram distribution (add-one smoothed), so
    # the first steps need not learn it; the counts come from the vocabulary pass less the
    # validation tail's, so the memory-mapped training ids are not all read here
    counts = corpus.counts - np.bincount(val_ids, minlength=len(vocab)) + 1.0
    model.params["b_y"][...] = np.log(counts / counts.sum())
    return model


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
            nll, n = streams_nll(model, run.val_ids, config.batch_size, config.seq_length, engine)
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


ITERATE = "iterate."  # checkpoint optimizer-state prefix: the weights training goes on from, when averaging


def _take_iterate(ckpt, path):
    """The checkpoint's model set to the weights training goes on from, and the saved average's values
    (the checkpoint's own parameters) if it was trained with --average, else None."""
    model = ckpt.model
    names = [k for k in ckpt.optimizer_state if k.startswith(ITERATE)]
    iterate = {k[len(ITERATE) :]: ckpt.optimizer_state.pop(k) for k in names}
    if not iterate:
        return model, None
    saved_average = model.params.flat.copy()
    try:
        check_params(iterate, model.shapes, model.dtype)
    except ValueError as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({e})") from None
    for name, value in iterate.items():
        model.params[name][...] = value
    return model, saved_average


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


def _join_processes(config):
    """This process's place among torchrun's processes (torch_engine.Distributed), or None for one process."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if config.engine != "torch":
        if several:
            raise TrainingError("training in several processes under torchrun needs --engine torch")
        return None
    return Distributed.from_environment(config.device)


def _meet(collective, *args):
    """A collective call among the processes outside the loop; a lost process becomes a TrainingError."""
    try:
        return collective(*args)
    except WorkerError as e:
        raise TrainingError(str(e)) from None


@contextlib.contextmanager
def _leaving(distributed):
    """Leave the process group when training ends, however it ends."""
    try:
        yield
    finally:
        if distributed is not None:
            distributed.close()


def _numpy_workers(config, model):
    """The numpy engine's worker processes: ``--workers``, else as the CPUs and the batch allow ``model``
    (a model or its class: its ``min_streams_per_worker``)."""
    return config.workers or default_workers(config.batch_size, min_streams=model.min_streams_per_worker)


def _start_engine(model, config, reporter, distributed=None):
    """PyTorch for ``--engine torch`` (engines/torch_engine.py); else worker processes for the steps
    (engines/pool.py) as ``--workers`` asks, or as the CPUs and batch allow."""
    if config.engine == "torch":
        return TorchEngine(model, config.device, distributed)
    workers = _numpy_workers(config, model)
    try:
        return make_engine(model, config.batch_size, config.seq_length, workers)
    except WorkerError as e:
        if config.workers:
            raise TrainingError(str(e)) from None
        reporter.message(f"note: training in one process ({e})")
        return make_engine(model, config.batch_size, config.seq_length, 1)


def _fit_chunk_to_corpus(config, n_train, reporter):
    """Shrink batch size (then sequence length) when the training text is shorter than one chunk."""
    if n_train < 3:
        raise CorpusError(f"the training part of the corpus has {n_train} characters; it needs at least 3")
    if (n_train - 1) // config.batch_size >= config.seq_length:
        return config
    batch_size = max(1, min(config.batch_size, (n_train - 1) // config.seq_length))
    seq_length = min(config.seq_length, (n_train - 1) // batch_size)
    reporter.message(
        f"note: the training text ({n_train} characters) is shorter than one chunk of "
        f"{config.batch_size}x{config.seq_length}; training with batch size {batch_size} and sequence length "
        f"{seq_length} instead"
    )
    return replace(config, batch_size=batch_size, seq_length=seq_length)


def _total_steps(config, chunks_per_epoch):
    limits = [config.max_steps] if config.max_steps else []
    if config.max_epochs:
        limits.append(math.ceil(config.max_epochs * chunks_per_epoch))
    return min(limits) if limits else None
