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
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .engines.base import WorkerError
from .engines.pool import default_workers, make_engine
from .engines.torch_engine import DEVICES, PRECISIONS, Distributed, TorchEngine
from .finetune import extend_vocab
from .io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .io.corpus import CorpusError, StreamBatches, batches_for, file_key, load_corpus
from .models import LanguageModel, build_model, model_class, training_memory
from .nn.numerics import check_params
from .nn.optim import OPTIMIZERS, WeightAverage, check_clip_mode, make_optimizer
from .nn.schedule import SCHEDULES, budget_progress, check_min_lr, halving_decision, learning_rate, warmup_factor
from .runs import Reporter, SignalCatcher, TrainingError, clear_previous_model, prepare_dir
from .sample import generate

DEFAULT_LEARNING_RATES = {  # gpt: adam's is the gpt recipe's; the others are not tuned (a tenth of the RNNs')
    "adam": {"rnn": 2e-3, "lstm": 3e-3, "gru": 3e-3, "gpt": 3e-3},
    "rmsprop": {"rnn": 2e-3, "lstm": 2e-3, "gru": 2e-3, "gpt": 3e-4},
    "adagrad": {"rnn": 0.01, "lstm": 0.01, "gru": 0.03, "gpt": 1e-3},  # docs/benchmarks.md, "Choosing the defaults"
    "sgd": {"rnn": 0.5, "lstm": 1.0, "gru": 1.0, "gpt": 0.1},
}
ENGINES = ("numpy", "torch")
MAX_BAD_STEPS = 5
LARGE_VALIDATION = 5_000_000  # characters: beyond this, suggest a smaller --val-frac


@dataclass
class TrainConfig:
    """Training options; the defaults are the project's recipe (docs/benchmarks.md, "Choosing the defaults")."""

    batch_size: int = 32
    seq_length: int = 100
    optimizer: str = "adam"
    learning_rate: float | None = 3e-3  # None: DEFAULT_LEARNING_RATES for the optimizer and model
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


@dataclass
class _Position:
    """Where training is: everything besides parameters and optimizer state that resume needs."""

    step: int = 0
    epoch: int = 0
    chunk: int = 0  # chunks done in the current epoch
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    evals_since_best: int = 0
    lr_scale: float = 1.0  # halvings by the non-finite guard and the halving schedule
    halving: bool = False  # the halving schedule has started halving
    elapsed: float = 0.0  # seconds trained so far, in all runs: --max-time and a time-based schedule count them
    loss_sum: float = 0.0  # the training losses since the last log line, so a resumed run logs the same means
    loss_count: int = 0
    rng_state: dict = field(default_factory=dict)


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
    with _leaving(distributed):
        run = _start_run(corpus_path, model_config, config, resume, reporter, overwrite, distributed, init_from)
        return _train_loop(run, reporter)


def _train_loop(run, reporter):
    """The training loop over a started run: see the module docstring."""
    config, model, optimizer, pos, state = run.config, run.model, run.optimizer, run.pos, run.state
    batches = batches_for(model, run.train_ids, config.batch_size, config.seq_length, config.random_seed)
    chars_per_step = config.batch_size * config.seq_length
    metrics_path, mode = os.path.join(config.checkpoint_dir, "metrics.jsonl"), "a" if run.resumed else "w"
    if not run.writer:
        metrics_path, mode = os.devnull, "w"
    total_steps = _total_steps(config, batches.chunks_per_epoch)
    engine = _start_engine(model, config, reporter, run.distributed)
    reporter.start(
        total_steps,
        {
            "params": model.num_params(),
            "vocab": len(run.vocab),
            "train_chars": len(run.train_ids),
            "val_chars": len(run.val_ids),
            "chunks_per_epoch": batches.chunks_per_epoch,
            "seed": config.random_seed,
            "max_time": config.max_time,
            "workers": engine.workers,
        },
    )
    run_start = time.perf_counter()
    start = run_start - pos.elapsed  # the budget's clock: a resumed run goes on from the time already trained
    first_step = pos.step
    last_log_time, last_log_step = run_start, pos.step
    stop_reason = None
    engine.train_with(optimizer, run.average)  # the torch engine: parameters and optimizer state to its device
    batches = engine.batches(batches)
    guard = _NonFiniteGuard(run, reporter, engine)
    def stopping(signum):
        reporter.message("stopping after this step, with latest.npz saved (a validation under way finishes "
                         "first); interrupt again to stop at once, keeping the checkpoints last written")

    with engine, SignalCatcher(stopping) as signals, open(metrics_path, mode) as metrics:
        try:
            while stop_reason is None:
                # data: the next chunk of every stream (gpt: of random windows); a new pass over the data
                # starts from zero state (also when a resumed position is past the end of a corpus that has
                # since shrunk)
                if pos.chunk >= batches.chunks_per_epoch:
                    pos.epoch, pos.chunk, state = pos.epoch + 1, 0, None
                inputs, targets = batches.chunk(pos.chunk, pos.epoch)
                # schedule: this step's learning rate and dropout
                epoch_now = pos.epoch + pos.chunk / batches.chunks_per_epoch
                progress = budget_progress(config, pos.step, epoch_now, time.perf_counter() - start)
                scale = pos.lr_scale * warmup_factor(config.warmup, pos.step)
                optimizer.learning_rate = learning_rate(config, run.base_lr, scale, progress, epoch_now)
                dropout = _dropout_rate(config, model.config.dropout, epoch_now)
                # forward and backward, on the engine's processes
                loss, grads, new_state = engine.loss_and_grads(inputs, targets, state, dropout_rng=run.rng,
                                                               dropout=dropout)
                # a non-finite step is never applied: back to the last evaluated weights, half the rate
                if not guard.finite(loss, grads):
                    state = None
                    continue
                # update, on the engine's device: the optimizer step (undone, as above, if it left a weight
                # non-finite), the running average; then the state carried into the next chunk
                if not guard.applied(engine.update(grads)):
                    state = None
                    continue
                state = new_state
                pos.step += 1
                pos.chunk += 1
                pos.loss_sum += loss
                pos.loss_count += 1
                # stop, log, and at an evaluation validate, checkpoint and preview
                elapsed = pos.elapsed = time.perf_counter() - start
                stop_reason = _stop_reason(config, pos, batches.chunks_per_epoch, elapsed, signals.signum)
                if run.distributed is not None and run.distributed.any(stop_reason is not None):  # all stop together
                    stop_reason = stop_reason or "stopped by another process"
                    if run.distributed.any(stop_reason == "interrupted"):  # and agree on whether to validate
                        stop_reason = "interrupted"
                # an interruption leaves no trace (no extra validation to sway patience or halving), so
                # that --resume goes on exactly as the uninterrupted run
                evaluating = pos.step % config.eval_every == 0 or stop_reason not in (None, "interrupted")
                if pos.step % config.log_every == 0 or evaluating:
                    now = time.perf_counter()
                    record = {
                        "step": pos.step,
                        "epoch": round(pos.epoch + pos.chunk / batches.chunks_per_epoch, 4),
                        "train_loss": pos.loss_sum / pos.loss_count,
                        "chars_per_sec": (pos.step - last_log_step) * chars_per_step / max(now - last_log_time, 1e-9),
                        "elapsed": round(elapsed, 3),
                        "learning_rate": optimizer.learning_rate,
                        "dropout": dropout,
                    }
                    pos.loss_sum, pos.loss_count = 0.0, 0  # logged: the checkpoint about to be written starts afresh
                    if evaluating:
                        engine.pull()  # the device's parameters and optimizer state into the model and optimizer
                        stop_reason = _evaluate_and_save(run, engine, reporter, engine.host_state(state)) or stop_reason
                        if pos.last_val_loss is None or math.isfinite(pos.last_val_loss):
                            guard.remember()
                        if pos.last_val_loss is not None:
                            record["val_loss"] = pos.last_val_loss
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    reporter.step(pos.step, record)
                    last_log_time, last_log_step = time.perf_counter(), pos.step
                if stop_reason == "interrupted" and not evaluating:
                    engine.pull()
                    _save(run, "latest.npz", engine.host_state(state))
        except WorkerError as e:  # the parameters here are those of the last completed step: keep them
            engine.pull()
            _save(run, "latest.npz", engine.host_state(state))
            raise TrainingError(f"{e}; the model of step {pos.step} is saved in latest.npz") from None
    engine.pull()
    reporter.close()
    elapsed = time.perf_counter() - run_start
    return TrainResult(
        step=pos.step,
        epoch=pos.epoch + pos.chunk / batches.chunks_per_epoch,
        best_val_loss=pos.best_val_loss,
        last_val_loss=pos.last_val_loss,
        elapsed=elapsed,
        chars_per_sec=(pos.step - first_step) * chars_per_step / max(elapsed, 1e-9),
        stop_reason=stop_reason,
        checkpoint_dir=config.checkpoint_dir,
        interrupted_by=signals.signum,
        model=model,
    )


@dataclass
class _Run:
    """What a training run works on, fresh or resumed (``_start_run``); ``pos`` and ``rng`` move as it goes."""

    config: TrainConfig  # as validated and fitted to the corpus, with a random seed
    corpus_paths: list  # absolute paths of the corpus's files, in order
    vocab: object  # data.Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    model: LanguageModel  # CharRNN or CharGPT (models.py)
    optimizer: object  # optim.Optimizer
    average: WeightAverage | None
    base_lr: float
    pos: _Position
    rng: np.random.Generator  # dropout masks; its state is saved in every checkpoint
    state: tuple | None  # the hidden state carried into the first chunk
    resumed: bool
    distributed: object = None  # torch_engine.Distributed: this process's place among torchrun's; None: alone
    init_from: str | None = None  # the checkpoint a fine-tuning run started from
    corpus_keys: tuple = ()  # data.file_key of each corpus file as this run read it: resume tells a changed corpus

    @property
    def writer(self):
        """Whether this process writes checkpoints and metrics (process 0 of several, or the only one)."""
        return self.distributed is None or self.distributed.writer


def _start_run(corpus_path, model_config, config, resume, reporter, overwrite, distributed=None, init_from=None):
    """Check the options, read the corpus, and build the model and optimizer: fresh, from ``resume``, or
    fine-tuning the model of ``init_from``. Of several processes, process 0 prepares the directory and the
    corpus cache while the others wait."""
    config.validate()
    if model_config is not None and resume is None and init_from is None:
        _check_memory(model_config, config)  # before --overwrite clears anything
    base = _load_base(init_from, resume, config)  # before --overwrite clears anything
    if resume is None:  # and a --min-lr above the rate tuned for the model
        _base_lr(config, (model_config if model_config is not None else base.model.config).model)
    writer = distributed is None or distributed.writer
    if not writer:
        _meet(distributed.barrier)
    prepare_dir(config.checkpoint_dir)
    if resume is None and writer:
        clear_previous_model(config.checkpoint_dir, overwrite)
    ckpt = load_checkpoint(resume) if resume is not None else None
    corpus = load_corpus(
        corpus_path,
        config.checkpoint_dir,
        encoding=config.encoding,
        bytes_mode=config.bytes_mode,
        vocab=ckpt.vocab if ckpt else base.vocab if base else None,
        val_frac=config.val_frac,
        extend_vocab=base is not None,
    )
    if writer and distributed is not None:
        _meet(distributed.barrier)
    train_ids, val_ids = corpus.train_ids, corpus.val_ids
    if len(corpus.files) > 1:
        reporter.message(f"corpus: {len(corpus.files)} files, {len(corpus.ids):,} characters")
    if len(val_ids) > LARGE_VALIDATION:
        suggestion = f"{LARGE_VALIDATION / 5 / len(corpus.ids):.1g}"
        reporter.message(
            f"note: every evaluation reads the whole validation tail ({len(val_ids):,} characters); for a corpus "
            f"this large, --val-frac {suggestion} keeps evaluations short"
        )
    config = _fit_chunk_to_corpus(config, len(train_ids), reporter)
    if distributed is not None and config.batch_size < distributed.world_size:
        raise TrainingError(f"batch size {config.batch_size} is smaller than the {distributed.world_size} processes: "
                            "each needs at least one stream")
    if config.random_seed is None:
        config = replace(config, random_seed=int(np.random.SeedSequence().entropy % 2**32))
    if distributed is not None:  # every process draws the same dropout seeds: process 0's
        config = replace(config, random_seed=_meet(distributed.agree, config.random_seed))
    rng = np.random.default_rng(config.random_seed)
    corpus_keys = tuple(file_key(path) for path, _ in corpus.files)
    if ckpt:
        _check_resumable(ckpt, config)
        model, saved_average = _take_iterate(ckpt, resume)
        pos = _Position(**{k: ckpt.meta[k] for k in asdict(_Position()) if k in ckpt.meta})
        if pos.rng_state:  # an imported model has no training position: it starts at step 0
            rng.bit_generator.state = pos.rng_state
        state = ckpt.hidden_state or None
        _warn_if_corpus_changed(ckpt, corpus_keys, resume, reporter)
        _check_budget_left(config, pos, train_ids, resume)
        if pos.lr_scale != 1.0:  # a --learning-rate given now is scaled too: say so
            halvings = round(-math.log2(pos.lr_scale))
            reporter.message(f"note: this run's learning rate was halved {halvings} time{'s' * (halvings != 1)} "
                             f"(non-finite steps, the halving schedule); --learning-rate {config.learning_rate:g} "
                             f"goes on at {config.learning_rate * pos.lr_scale:.3g}")
    elif base:
        model = _fine_tuned_model(base, model_config, corpus, val_ids, rng, reporter)
        pos, state, saved_average = _Position(), None, None
    else:
        model = _fresh_model(model_config, corpus, val_ids, rng)
        pos, state, saved_average = _Position(), None, None
    if config.late_dropout is not None and config.late_dropout < getattr(model.config, "dropout", 0.0):
        reporter.message(f"note: --late-dropout {config.late_dropout:g} is below the model's dropout "
                         f"{model.config.dropout:g}: dropout stays at {model.config.dropout:g}")
    base_lr = _base_lr(config, model.config.model)
    optimizer = make_optimizer(config.optimizer, model.params, base_lr, config.grad_clip, config.weight_decay,
                               config.clip_mode)
    average = WeightAverage(model.params, config.average, start=saved_average) if config.average else None
    if ckpt and ckpt.optimizer_state:  # (an imported model has none: the optimizer starts afresh)
        try:
            optimizer.load_state(ckpt.optimizer_state)
        except ValueError as e:
            raise CheckpointError(f"{resume}: cannot resume with optimizer {config.optimizer} ({e})") from None
    paths = [os.path.abspath(path) for path, _ in corpus.files]
    return _Run(config, paths, corpus.vocab, train_ids, val_ids, model, optimizer, average, base_lr, pos, rng, state,
                resumed=ckpt is not None, distributed=distributed,
                init_from=os.path.abspath(init_from) if init_from is not None else None, corpus_keys=corpus_keys)


def _base_lr(config, kind):
    """The run's base learning rate: the config's, else the one tuned for its optimizer and model ``kind``;
    raises TrainingError if the config's min_lr is above it."""
    base_lr = config.learning_rate or DEFAULT_LEARNING_RATES[config.optimizer][kind]
    try:
        check_min_lr(config.min_lr, base_lr)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return base_lr


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


def _check_budget_left(config, pos, train_ids, resume):
    """Refuse to resume a run that has already reached a limit: one more step would go past it."""
    chunks_per_epoch = StreamBatches(train_ids, config.batch_size, config.seq_length).chunks_per_epoch
    spent = _stop_reason(config, pos, chunks_per_epoch, pos.elapsed, None)
    if not spent and config.patience and pos.evals_since_best >= config.patience:
        spent = f"patience: {pos.evals_since_best} evaluations without a better validation loss"
    if spent:
        raise TrainingError(
            f"{resume}: its run already reached its limit ({spent} at step {pos.step}, {pos.elapsed:.0f} s trained); "
            "give a larger --max-steps, --max-epochs, --max-time or --patience to train on"
        )


def _check_resumable(ckpt, config):
    """Refuse to resume with data options other than the checkpoint's: the data position would mean another text."""
    saved = ckpt.meta.get("train", {})
    for name in ("batch_size", "seq_length", "val_frac", "bytes_mode", "encoding"):
        if name in saved and saved[name] != getattr(config, name):
            raise TrainingError(
                f"cannot resume with {name.replace('_', '-')} {getattr(config, name)}: the checkpoint was "
                f"trained with {saved[name]}"
            )


def _check_memory(model_config, config):
    """Refuse, in one line, a model whose training cannot fit in the memory this machine has free (a lower
    bound, reckoned from the shapes, with a vocabulary of 2: the corpus is not read yet)."""
    free = _free_memory()
    if free is None:
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
    if params + step > free:
        raise TrainingError(
            f"this model needs at least {(params + step) / 1e9:,.1f} GB to train ({params / 1e9:,.1f} GB for its "
            f"parameters, gradients and optimizer state, {step / 1e9:,.1f} GB for a step of {config.batch_size} x "
            f"{config.seq_length} characters), more than the {free / 1e9:.1f} GB free here: make it smaller, or "
            "lower --batch-size or --seq-length")


def _free_memory():
    """Bytes of memory available to this process: Linux's MemAvailable, or less where a container's memory
    limit (cgroup v2 or v1) leaves less; None where neither can be read."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            free = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError, IndexError):
        pass
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_path) as f, open(usage_path) as g:
                left = int(f.read()) - int(g.read())  # "max" (no limit) is not a number: skipped
        except (OSError, ValueError):
            continue
        if left < 2**60:  # v1 writes a huge number for no limit
            free = left if free is None else min(free, left)
    return free


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
        **asdict(replace(run.pos, rng_state=run.rng.bit_generator.state)),
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


class _NonFiniteGuard:
    """Keeps the parameters and optimizer state of the last good evaluation. A step whose loss or
    gradient is not finite, or whose update leaves a weight non-finite (a rate far too high), is never
    kept: training goes back to them with half the learning rate, and stops (saving them as latest.npz)
    after ``MAX_BAD_STEPS`` such steps in a row, so no checkpoint ever holds a non-finite weight."""

    def __init__(self, run, reporter, engine):
        self.run, self.reporter, self.engine, self.bad_steps = run, reporter, engine, 0
        self.remember()

    def remember(self):
        """Take the run's present parameters and optimizer state as the ones to go back to."""
        run = self.run
        self.good_params = run.model.params.flat.copy()
        self.good_optimizer = {k: v.copy() for k, v in run.optimizer.state.items()}
        self.good_step = run.pos.step

    def finite(self, loss, grads):
        """True if the step may be applied; else restore the good state, halve the rate and return False."""
        if self.engine.finite(loss, grads):
            return True
        return self._restore("loss")

    def applied(self, finite):
        """True if the update left every weight ``finite`` (the step counts as good); else as ``finite``."""
        if finite:
            self.bad_steps = 0
            return True
        return self._restore("update")

    def _restore(self, what):
        run = self.run
        self.bad_steps += 1
        run.model.params.flat[...] = self.good_params
        run.optimizer.load_state(self.good_optimizer)
        self.engine.push()  # to the torch engine's device
        if self.bad_steps > MAX_BAD_STEPS:
            _save(run, "latest.npz", None)
            raise TrainingError(
                f"loss, gradient or update was not finite {self.bad_steps} times in a row, down to learning rate "
                f"{run.optimizer.learning_rate:.3g}; stopped, with the model of step {self.good_step} in latest.npz"
            )
        run.pos.lr_scale /= 2
        self.reporter.message(
            f"warning: non-finite {what} at step {run.pos.step}; restored the parameters of step {self.good_step} "
            f"and halved the learning rate to {run.optimizer.learning_rate / 2:.3g}"
        )
        return False


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
        return TorchEngine(model, config.device, distributed, config.precision)
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


def _stop_reason(config, pos, chunks_per_epoch, elapsed, signum):
    if signum is not None:
        return "interrupted"
    if config.max_steps and pos.step >= config.max_steps:
        return "max-steps"
    if config.max_epochs and pos.epoch + pos.chunk / chunks_per_epoch >= config.max_epochs:
        return "max-epochs"
    if config.max_time and elapsed >= config.max_time:
        return "max-time"
    return None
