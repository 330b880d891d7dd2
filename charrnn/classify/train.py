"""Training the classifier: batches of labelled texts of similar length, validation, early stopping.

    result = train_classifier("data/names.train.txt", ClassifierConfig(0, 0, model="lstm"),
                              ClassifyTrainConfig(max_time=60), valid_path="data/names.valid.txt")

Each epoch sorts the training texts by length (ties in random order), cuts them into batches and visits
the batches in random order, so a batch pads little. After every epoch (or ``eval_every`` steps) the
validation texts are scored: ``latest.npz`` is written, ``best.npz`` at the best validation accuracy
(with ``loss="ova"``: the best exact label-set match, every label of probability >= 0.5 predicted; lower loss
breaking ties), and training stops after ``patience`` evaluations without a new best.
Checkpoints hold the config dataclasses, vocabulary and labels, so one file rebuilds the classifier;
``resume`` continues from the exact batch, with the optimizer state, random generator and time trained so
far. The run's lifecycle (directory rules, limits, signals, metrics, the non-finite guard) is ``charrnn
train``'s, from lifecycle.py.
"""

import math
import os
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ..io.checkpoint import write_archive
from ..io.corpus import file_key
from ..nn.optim import OPTIMIZERS, check_clip_mode, finite_step, make_optimizer
from ..nn.schedule import budget_progress, check_min_lr, learning_rate
from ..training import lifecycle
from .data import (
    FORMATS,
    LabelledDataError,
    LabelSet,
    build_vocab,
    encode_texts,
    length_buckets,
    pad_batch,
    read_labelled,
)
from .metrics import evaluate_predictions
from .model import Classifier, ClassifierConfig
from .predict import KIND, TextClassifier, load_classifier

CLASS_WEIGHTS = ("none", "balanced")
LR_SCHEDULES = ("constant", "cosine", "exponential")  # nn/schedule.py's, less halving (a language-model rule)


@dataclass
class ClassifyTrainConfig:
    """Training options for the classifier."""

    format: str = "fasttext"
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"  # constant, cosine (to min_lr over the budget) or exponential (nn/schedule.py)
    min_lr: float = 0.0  # where the cosine schedule ends
    lr_decay: float = 0.97  # the exponential schedule's factor per epoch...
    lr_decay_after: int = 10  # ...after this many epochs
    grad_clip: float = 5.0  # 0: no clipping
    clip_mode: str = "value"  # "value": each gradient element to [-grad_clip, grad_clip]; "norm": the global L2 norm
    weight_decay: float = 0.0
    class_weight: str = "none"  # "balanced": each label weighs N / (C * its count)
    char_dropout: float = 0.0  # the fraction of training characters replaced by the unknown character, per step
    valid_frac: float = 0.1  # held out of the training file when no validation file is given
    eval_every: int | None = None  # steps between evaluations; None: once per epoch
    patience: int | None = 5  # evaluations without a new best before stopping; None: never
    max_steps: int | None = None
    max_epochs: float | None = None
    max_time: float | None = 600.0
    random_seed: int | None = None
    checkpoint_dir: str = "classifier"  # not the language model's "checkpoints": the two train side by side

    def validate(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr-schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"class-weight must be one of {', '.join(CLASS_WEIGHTS)}, not {self.class_weight!r}")
        if self.batch_size < 1 or not self.learning_rate > 0 or not 0 <= self.valid_frac < 1:
            raise ValueError("batch-size and learning-rate must be positive and valid-frac in [0, 1)")
        check_min_lr(self.min_lr, self.learning_rate)
        check_clip_mode(self.clip_mode)
        if not 0 <= self.char_dropout < 1:
            raise ValueError(f"char-dropout must be in [0, 1), not {self.char_dropout}")
        for name in ("eval_every", "patience", "max_steps", "max_epochs", "max_time"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, not {value}")


@dataclass
class ClassifyResult:
    step: int
    epoch: float
    best_accuracy: float | None
    best_loss: float | None
    best_exact_match: float | None  # an ova model's: what its best evaluation is chosen by
    elapsed: float
    examples_per_sec: float
    stop_reason: str
    checkpoint_dir: str
    interrupted_by: int | None = None


@dataclass
class ClassifyPosition(lifecycle.Position):
    """Where classifier training is (lifecycle.py Position), with its place in the epoch and its best validation."""

    batch: int = 0  # batches done in the current epoch
    best_accuracy: float | None = None  # the best evaluation's figures
    best_loss: float | None = None
    best_exact_match: float | None = None  # (an ova model's best is the one of the best exact label-set match)


@dataclass
class _Split:
    """Texts as ids with their targets (N, C) and example weights (N,)."""

    encoded: object
    targets: np.ndarray
    weights: np.ndarray
    texts: list
    labels: list


def train_classifier(train_path, model_config, config, valid_path=None, resume=None, reporter=None, overwrite=False):
    """Train on ``train_path``; return a ClassifyResult. ``model_config``'s vocab_size and num_classes
    come from the data. With ``resume`` the run goes on as ``charrnn train`` does: from its exact batch,
    optimizer state and random generator, with the time already trained counting against ``max_time``
    and a time-based schedule. Raises LabelledDataError, TrainingError or CheckpointError with a one-line
    reason; nothing in ``checkpoint_dir`` is touched until the data has been read and checked."""
    reporter = reporter or lifecycle.Reporter()
    run = _start_run(_Request(train_path, model_config, config, valid_path, resume, overwrite), reporter)
    config, pos = run.config, run.pos
    reporter.start(None, {"params": run.model.num_params(), "train": len(run.train.encoded),
                          "valid": len(run.valid.encoded) if run.valid else 0, "labels": len(run.labels),
                          "vocab": len(run.vocab), "seed": config.random_seed,
                          "batches_per_epoch": run.batches_per_epoch, "resumed": resume is not None,
                          "step": pos.step, "elapsed": pos.elapsed})
    guard = lifecycle.NonFiniteGuard(run.model.params, run.optimizer, pos, reporter, lambda: _save(run, "latest.npz"))
    loop = _Loop(lifecycle.Clock(pos.elapsed), guard)
    with lifecycle.SignalCatcher(lifecycle.stopping_note(reporter)) as signals, \
            lifecycle.MetricsLog(config.checkpoint_dir, resumed=resume is not None) as log:
        while loop.stop_reason is None:
            _train_step(run, loop, signals, log, reporter)
    reporter.close()
    elapsed = loop.clock.this_run()
    return ClassifyResult(pos.step, pos.epoch + pos.batch / run.batches_per_epoch, pos.best_accuracy, pos.best_loss,
                          pos.best_exact_match, elapsed, loop.seen / max(elapsed, 1e-9), loop.stop_reason,
                          config.checkpoint_dir, signals.signum)


@dataclass
class _Loop:
    """What the loop carries from step to step besides the run's position."""

    clock: lifecycle.Clock
    guard: lifecycle.NonFiniteGuard
    seen: int = 0  # texts trained on in this run
    order: list | None = None  # the batches of epoch ``order_epoch``
    order_epoch: int | None = None
    stop_reason: str | None = None


def _train_step(run, loop, signals, log, reporter):
    """One step, phase by phase; sets ``loop.stop_reason`` when the run is to stop."""
    config, pos = run.config, run.pos
    # data: the epoch's batches, a function of the seed and the epoch alone so that resume finds its place;
    # past the end of a training file that has since shrunk, the next epoch starts
    order = _epoch_batches(run, loop)
    if pos.batch >= len(order):
        pos.epoch, pos.batch = pos.epoch + 1, 0
        return
    rows = order[pos.batch]
    # schedule: this step's learning rate
    epoch = pos.epoch + pos.batch / len(order)
    progress = budget_progress(config, pos.step, epoch, loop.clock.elapsed())
    run.optimizer.learning_rate = learning_rate(config, config.learning_rate, pos.lr_scale, progress, epoch)
    # forward and backward
    loss, grads = _loss_and_grads(run, rows)
    # update: clip the gradient, step the optimizer; a step whose loss, gradient or update is not finite is
    # never kept (the guard goes back to the last evaluated weights, at half the rate)
    if not finite_step(loss, grads):
        return loop.guard.restore("loss")
    run.optimizer.clip(grads)
    if not run.optimizer.update(run.model.params, grads):
        return loop.guard.restore("update")
    loop.guard.good_step_taken()
    pos.step, pos.batch, loop.seen = pos.step + 1, pos.batch + 1, loop.seen + len(rows)
    pos.count_loss(loss)
    if pos.batch == len(order):
        pos.epoch, pos.batch = pos.epoch + 1, 0
    # stop: a limit reached (the time trained before a resume counts), or a signal
    pos.elapsed = loop.clock.elapsed()
    loop.stop_reason = lifecycle.stop_reason(config, pos, pos.epoch + pos.batch / len(order), signals.signum)
    # evaluate, checkpoint and log; an interruption leaves no trace (no extra evaluation to sway patience),
    # so that --resume goes on exactly as the uninterrupted run
    due = pos.step % config.eval_every == 0 if config.eval_every else pos.batch == 0
    if due or loop.stop_reason not in (None, "interrupted"):
        _log(run, loop, log, reporter, len(order))
    elif loop.stop_reason == "interrupted":
        _save(run, "latest.npz")


def _epoch_batches(run, loop):
    """The batches (rows of the training texts) of the run's epoch, in their order."""
    if loop.order_epoch != run.pos.epoch:
        rng = np.random.default_rng([run.config.random_seed, run.pos.epoch])
        loop.order = length_buckets(run.train.encoded.lengths, run.config.batch_size, rng)
        loop.order_epoch = run.pos.epoch
    return loop.order


def _log(run, loop, log, reporter, batches_per_epoch):
    """Evaluate and checkpoint, write the metrics record and report it; the training-loss sums start afresh."""
    pos = run.pos
    record = {"step": pos.step, "epoch": round(pos.epoch + pos.batch / batches_per_epoch, 4),
              "train_loss": pos.take_mean_loss(), "examples_per_sec": loop.seen / max(loop.clock.this_run(), 1e-9),
              "elapsed": round(pos.elapsed, 3), "learning_rate": run.optimizer.learning_rate}
    record.update(_evaluate(run))
    if math.isfinite(record.get("val_loss", 0.0)):
        loop.guard.remember()
    log.write(record)
    reporter.step(pos.step, record)
    loop.stop_reason = loop.stop_reason or lifecycle.patience_spent(run.config, pos)


@dataclass
class _Request:
    """What ``train_classifier`` was asked to do."""

    train_path: str
    model_config: ClassifierConfig
    config: ClassifyTrainConfig
    valid_path: str | None
    resume: str | None
    overwrite: bool


@dataclass
class _Run:
    """A training run's state: what the loop, evaluation and checkpoints read and change."""

    config: ClassifyTrainConfig
    model: Classifier
    optimizer: object
    vocab: object
    labels: LabelSet
    train: _Split
    valid: _Split | None
    pos: ClassifyPosition
    rng: np.random.Generator
    data_file: dict  # io/corpus.py file_key of the training file: its path, size and modification time
    batches_per_epoch: int  # long texts go in smaller batches, so this is counted from the texts' lengths


def _start_run(request, reporter):
    """Read and check the data (and the checkpoint to resume), then prepare the directory and build the
    model and optimizer, fresh or as saved."""
    request.config.validate()
    saved = load_classifier(request.resume) if request.resume is not None else None
    config, vocab, labels, train, valid = _read_data(request, saved)
    lifecycle.open_checkpoint_dir(config.checkpoint_dir, request.resume is None, request.overwrite, KIND)
    rng = np.random.default_rng(config.random_seed)
    batches_per_epoch = len(length_buckets(train.encoded.lengths, config.batch_size))
    if saved:
        clf, meta, optimizer_state = saved
        model, pos = clf.model, ClassifyPosition.from_meta(meta)
        rng.bit_generator.state = pos.rng_state
        lifecycle.check_budget_left(config, pos, pos.epoch + pos.batch / batches_per_epoch, request.resume)
        if meta.get("data_file") not in (None, file_key(request.train_path)):
            reporter.message(f"warning: {request.train_path} is not the file {request.resume} was trained on, or it "
                             "has changed since (name, size or modification time); training goes on from the saved "
                             "position, and the validation lines drawn from it may differ")
    else:
        model = _fresh_model(replace(request.model_config, vocab_size=len(vocab) + 1, num_classes=len(labels)),
                             train.targets, rng)
        pos = ClassifyPosition()
    optimizer = make_optimizer(config.optimizer, model.params, config.learning_rate, config.grad_clip,
                               config.weight_decay, config.clip_mode)
    if saved:
        lifecycle.restore_optimizer(optimizer, optimizer_state, request.resume, config.optimizer)
    return _Run(config, model, optimizer, vocab, labels, train, valid, pos, rng, file_key(request.train_path),
                batches_per_epoch)


def _fresh_model(model_config, targets, rng):
    """A new classifier drawn from ``rng``; an ova model's output bias starts at each label's log-odds in the
    training ``targets`` (N, C), so that the first steps need not learn how rare each label is."""
    try:
        model = Classifier(model_config, rng=rng)
    except ValueError as e:
        raise lifecycle.TrainingError(str(e)) from None
    if model_config.loss == "ova":
        rate = (targets.sum(axis=0) + 0.5) / (len(targets) + 1.0)  # (C,) each label's share of the lines, smoothed
        model.params["b_out"][...] = np.log(rate / (1 - rate))
    return model


def _read_data(request, saved):
    """(config with a random seed, vocabulary, labels, training split, validation split or None); the
    vocabulary and labels are those of the checkpoint ``saved`` (TextClassifier, meta, optimizer state) if any."""
    config, train_path = lifecycle.with_seed(request.config), request.train_path
    lines = read_labelled(train_path, config.format)
    labels = saved[0].labels if saved else LabelSet.from_lines(lines.labels, train_path)
    vocab = saved[0].vocab if saved else build_vocab(lines.texts)
    if saved:
        new = sorted({n for names in lines.labels for n in names} - set(labels.names))
        if new:
            raise lifecycle.TrainingError(f"{train_path}: labels the checkpoint does not have ({', '.join(new[:5])}); "
                                "cannot resume on it")
    train_rows, valid_lines = _validation(lines, request.valid_path, config)
    weights_by_label = _class_weights(lines.labels, train_rows, labels, config.class_weight)
    loss = saved[0].model.config.loss if saved else request.model_config.loss
    train = _split([lines.texts[i] for i in train_rows], [lines.labels[i] for i in train_rows], vocab, labels,
                   weights_by_label, loss)
    valid = _split(valid_lines[0], valid_lines[1], vocab, labels, None, loss) if valid_lines else None
    return config, vocab, labels, train, valid


def _loss_and_grads(run, rows):
    """Forward and backward on the texts ``rows`` (with character dropout): the loss and its gradients."""
    batch = pad_batch(run.train.encoded, rows, len(run.vocab))
    if run.config.char_dropout:  # padding holds the unknown id already: only real characters change
        batch.ids[run.rng.random(batch.ids.shape) < run.config.char_dropout] = len(run.vocab)
    return run.model.loss_and_grads(batch.ids, batch.lengths, run.train.targets[batch.rows],
                                    run.train.weights[batch.rows], dropout_rng=run.rng)


def _evaluate(run):
    """Score the validation texts; write best.npz (a new best accuracy, lower loss breaking ties) and
    latest.npz; return the validation fields of the metrics record."""
    record, pos, valid = {}, run.pos, run.valid
    if valid is not None:
        record = _validation_record(run.model, run.vocab, run.labels, valid)
        ova = run.model.config.loss == "ova"
        key = (record["val_exact_match"] if ova else record["val_accuracy"], -record["val_loss"])
        if pos.best_loss is None or key > (pos.best_exact_match if ova else pos.best_accuracy, -pos.best_loss):
            pos.best_accuracy, pos.best_loss = record["val_accuracy"], record["val_loss"]
            pos.best_exact_match, pos.evals_since_best = record.get("val_exact_match"), 0
            _save(run, "best.npz")
        else:
            pos.evals_since_best += 1
    else:
        _save(run, "best.npz")
    _save(run, "latest.npz")
    return record


def _validation_record(model, vocab, labels, valid):
    """The metrics record's validation figures: mean loss per text (the model's own: cross-entropy, or ova's
    summed binary cross-entropies), accuracy and macro-F1; for ova, the exact label-set match of the labels of
    probability >= 0.5."""
    clf = TextClassifier(model, vocab, labels)
    probs = clf.predict_proba(valid.texts)  # (N, C)
    # at the model's own cut (softmax: the top label; ova: every label of p >= 0.5): accuracy and macro-F1 read
    # only the top prediction, whatever the cut, and the exact match reads the cut
    report = evaluate_predictions(probs, valid.labels, labels, *clf.prediction_cut())
    log_p = np.log(np.maximum(probs, 1e-30))
    if model.config.loss == "softmax":
        nll = -(valid.targets * log_p).sum(axis=1)  # (N,)
    else:
        nll = -(valid.targets * log_p + (1 - valid.targets) * np.log(np.maximum(1 - probs, 1e-30))).sum(axis=1)
    record = {"val_loss": float(nll.mean()), "val_accuracy": report["accuracy"], "val_macro_f1": report["macro_f1"]}
    if model.config.loss == "ova":
        record["val_exact_match"] = report["exact_match"]
    return record


def _save(run, name):
    """A checkpoint: parameters, optimizer state, and as JSON the configs, vocabulary, labels and position."""
    meta = {"kind": KIND, "model": asdict(run.model.config), "vocab": run.vocab.to_json(),
            "labels": run.labels.to_json(), "train": asdict(run.config), "data": run.data_file["path"],
            "data_file": run.data_file,
            **run.pos.to_meta(run.rng)}
    arrays = {f"param/{k}": v for k, v in run.model.params.items()}
    arrays.update({f"opt/{k}": v for k, v in run.optimizer.state.items()})
    write_archive(os.path.join(run.config.checkpoint_dir, name), arrays, meta)


def train_config_from(saved, given):
    """A ClassifyTrainConfig: the checkpoint's saved options, overridden by those ``given``."""
    names = {f.name for f in fields(ClassifyTrainConfig)}
    return ClassifyTrainConfig(**{**{k: v for k, v in saved.items() if k in names}, **given})


def _validation(lines, valid_path, config):
    """(rows of ``lines`` to train on, (texts, labels) to validate on or None)."""
    rows = np.arange(len(lines.texts))
    if valid_path is not None:
        valid = read_labelled(valid_path, config.format)
        return rows, (valid.texts, valid.labels)
    n_valid = int(len(rows) * config.valid_frac)
    if n_valid == 0:
        return rows, None
    shuffled = np.random.default_rng([config.random_seed, 2**31]).permutation(rows)
    held, kept = np.sort(shuffled[:n_valid]), np.sort(shuffled[n_valid:])
    if len(kept) == 0:
        raise LabelledDataError(f"{lines.path}: too few lines to hold out a validation fraction; give --valid")
    return kept, ([lines.texts[i] for i in held], [lines.labels[i] for i in held])


def _class_weights(line_labels, rows, labels, how):
    """(C,) weight of each label: 1, or N / (C * count) with ``balanced`` (count over the training rows)."""
    if how == "none":
        return np.ones(len(labels))
    counts = np.zeros(len(labels))
    index = labels.index()
    for i in rows:
        for name in line_labels[i]:
            counts[index[name]] += 1.0 / len(line_labels[i])
    return len(rows) / (len(labels) * np.maximum(counts, 1.0))


def _split(texts, line_labels, vocab, labels, weights_by_label, loss):
    """A _Split: targets (N, C) a distribution over each line's labels (softmax), or 1 for each (ova); a line's
    weight, its labels' mean weight."""
    targets, _ = labels.targets(line_labels)
    weights = targets @ weights_by_label if weights_by_label is not None else np.ones(len(texts))
    if loss == "ova":
        targets = (targets > 0).astype(targets.dtype)
    return _Split(encode_texts(texts, vocab), targets, weights, texts, line_labels)
