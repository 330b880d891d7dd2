"""Starting a language-model training run (loop.py), one of three ways, each a named constructor of the
``Run`` (run.py) it builds:

    setup = Setup(corpus_path, config, reporter, distributed, overwrite)   # what every start needs
    run = fresh_run(setup, model_config)          # a new model drawn from the seed
    run = resumed_run(setup, "ck/latest.npz")     # the checkpoint's model, position, hidden state, RNG, optimizer
    run = fine_tuned_run(setup, "ck", None)       # another model's weights, its vocabulary extended; a new run

Each reads as the run starts: the refusals that need no corpus (too little memory, a --min-lr above the
rate, another tokenisation), then the checkpoint directory (process 0 of several prepares it and the
corpus's id cache while the others wait), the corpus fitted to the chunk, the seed, the model and its
position, and last the optimizer and the running average (``_assemble``). Nothing in the checkpoint
directory is touched before the refusals, and the directory is made only once the corpus has been read;
under torchrun, ``join_processes`` gives this process's place.
"""

import contextlib
import math
import os
from dataclasses import dataclass, field, replace

import numpy as np

from ..engines.base import WorkerError
from ..engines.choice import numpy_workers
from ..engines.distributed import Distributed
from ..io.checkpoint import LANGUAGE_MODEL, CheckpointError, load_checkpoint
from ..io.corpus import CorpusError, StreamBatches, file_key, load_corpus
from ..models.registry import build_model, model_class, training_memory
from ..nn.numerics import check_params
from ..nn.optim import WeightAverage, make_optimizer
from ..nn.schedule import check_min_lr
from .finetune import extend_vocab
from .lifecycle import (
    Reporter,
    TrainingError,
    check_budget_left,
    check_checkpoint_dir,
    open_checkpoint_dir,
    restore_optimizer,
    with_seed,
)
from .memory import check_fits, free_memory
from .presets import DEFAULT_LEARNING_RATES
from .run import ITERATE, Run, TrainConfig, TrainPosition
from .validation import ValidationFiles

LARGE_VALIDATION = 5_000_000  # characters: beyond this, suggest a smaller --val-frac


@dataclass
class Setup:
    """What every start needs besides where its model comes from."""

    corpus_path: object  # a file or directory, or a list of them
    config: TrainConfig  # validated
    reporter: Reporter
    distributed: Distributed | None = None  # this process's place among torchrun's; None: alone
    overwrite: bool = False  # a fresh run may replace a model in its checkpoint directory
    validation: ValidationFiles | None = field(init=False)  # --val-file's texts, read here: before the directory

    def __post_init__(self):
        config = self.config
        self.validation = (ValidationFiles.read(config.val_files, config.encoding, config.bytes_mode)
                           if config.val_files else None)

    @property
    def writer(self):
        return self.distributed is None or self.distributed.writer


def fresh_run(setup, model_config):
    """A new model of ``model_config``'s shape for the corpus's vocabulary, its output bias at the training
    text's unigram distribution."""
    _check_memory(model_config, setup.config)  # before --overwrite clears anything
    _base_lr(setup.config, model_config.model)
    _check_dir(setup, fresh=True)
    corpus, config = _read_corpus(setup)
    _open_dir(setup, fresh=True)
    rng = np.random.default_rng(config.random_seed)
    model = _fresh_model(model_config, corpus, rng)
    return _assemble(setup, config, corpus, model, rng, TrainPosition())


def resumed_run(setup, path):
    """The run of checkpoint ``path`` going on exactly: its model (the weights training goes on from, with
    --average), position, hidden state, random generator, optimizer state and time trained. Refused if it
    has reached its limits or its data options differ (the position would mean another text)."""
    _check_dir(setup, fresh=False)
    ckpt = load_checkpoint(path)
    corpus, config = _read_corpus(setup, vocab=ckpt.vocab)
    _open_dir(setup, fresh=False)
    _check_resumable(ckpt, config)
    rng = np.random.default_rng(config.random_seed)
    model, saved_average = _take_iterate(ckpt, path)
    pos = TrainPosition.from_meta(ckpt.meta)
    if pos.rng_state:  # an imported model has no training position: it starts at step 0
        rng.bit_generator.state = pos.rng_state
    chunks_per_epoch = StreamBatches(corpus.train_ids, config.batch_size, config.seq_length).chunks_per_epoch
    check_budget_left(config, pos, pos.epoch + pos.chunk / chunks_per_epoch, path)
    run = _assemble(setup, config, corpus, model, rng, pos, state=ckpt.hidden_state or None,
                    saved_average=saved_average, resumed=True)
    _warn_if_corpus_changed(ckpt, run.corpus_keys, path, setup.reporter)
    _note_halvings(pos, config, setup.reporter)
    if ckpt.optimizer_state:  # (an imported model has none: the optimizer starts afresh)
        restore_optimizer(run.optimizer, ckpt.optimizer_state, path, config.optimizer)
    return run


def fine_tuned_run(setup, path, model_config=None):
    """A new run from the weights of checkpoint ``path``, its vocabulary extended by the corpus's new
    symbols (finetune.py); ``model_config``: None (the checkpoint's) or one of the checkpoint's shape."""
    base = _load_base(path, setup.config)  # before --overwrite clears anything
    _base_lr(setup.config, base.model.config.model)
    _check_dir(setup, fresh=True)
    corpus, config = _read_corpus(setup, vocab=base.vocab, extend=True)
    _open_dir(setup, fresh=True)
    rng = np.random.default_rng(config.random_seed)
    model = _fine_tuned_model(base, model_config, corpus, rng, setup.reporter)
    return _assemble(setup, config, corpus, model, rng, TrainPosition(), init_from=os.path.abspath(path))


def _assemble(setup, config, corpus, model, rng, pos, **start):
    """The Run: ``model`` at ``pos`` with a fresh optimizer and running average (``start``: Run's other fields,
    and ``saved_average``, a resumed run's average)."""
    saved_average = start.pop("saved_average", None)
    if config.late_dropout is not None and config.late_dropout < getattr(model.config, "dropout", 0.0):
        setup.reporter.message(f"note: --late-dropout {config.late_dropout:g} is below the model's dropout "
                               f"{model.config.dropout:g}: dropout stays at {model.config.dropout:g}")
    base_lr = _base_lr(config, model.config.model)
    optimizer = make_optimizer(config.optimizer, model.params, base_lr, config.grad_clip, config.weight_decay,
                               config.clip_mode)
    average = WeightAverage(model.params, config.average, start=saved_average) if config.average else None
    return Run(config=config, corpus_paths=[os.path.abspath(path) for path, _ in corpus.files], vocab=corpus.vocab,
               train_ids=corpus.train_ids, val_ids=corpus.val_ids, model=model, optimizer=optimizer, average=average,
               base_lr=base_lr, pos=pos, rng=rng, distributed=setup.distributed, validation=setup.validation,
               corpus_keys=tuple(file_key(path) for path, _ in corpus.files), corpus_sha256=corpus.digests, **start)


def _check_dir(setup, fresh):
    """The checkpoint directory's refusals, touching nothing (of several processes, the others wait here while
    process 0 reads the corpus and writes its id cache)."""
    if not setup.writer:
        _meet(setup.distributed.barrier)
    check_checkpoint_dir(setup.config.checkpoint_dir, fresh and setup.writer, setup.overwrite, LANGUAGE_MODEL)


def _open_dir(setup, fresh):
    """The checkpoint directory, made once the corpus is read; a ``fresh`` run refuses, or with --overwrite
    clears, a model an earlier run left there."""
    open_checkpoint_dir(setup.config.checkpoint_dir, fresh and setup.writer, setup.overwrite, LANGUAGE_MODEL)


def _read_corpus(setup, vocab=None, extend=False):
    """The corpus, its vocabulary ``vocab`` (a resumed run's) or, with ``extend``, ``vocab`` extended by its new
    symbols (a fine-tuned model's), else its own; and the config fitted to it, with a random seed (of several
    processes, process 0's)."""
    config, reporter, distributed = setup.config, setup.reporter, setup.distributed
    vocab, extend = _with_validation_symbols(setup, vocab, extend)
    corpus = load_corpus(setup.corpus_path, config.checkpoint_dir, encoding=config.encoding,
                         bytes_mode=config.bytes_mode, vocab=vocab, val_frac=config.val_frac, extend_vocab=extend)
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


def _with_validation_symbols(setup, vocab, extend):
    """The vocabulary to read the corpus with: a new one (``vocab`` None, or ``extend``) takes in the validation
    files' symbols, as it takes in those of a validation tail; a resumed run's stays as saved, and a note names
    the validation characters outside it (left out of the validation loss, as charrnn eval leaves them out)."""
    files = setup.validation
    if files is None:
        return vocab, extend
    if vocab is None or extend:
        return (files.vocab if vocab is None else vocab.extended(files.vocab)), True
    known = set(vocab.symbols)
    outside = [s for s in files.vocab.symbols if s not in known]
    if outside:
        setup.reporter.message(f"note: the validation files hold {len(outside)} character{'s' * (len(outside) > 1)} "
                               f"outside the model's vocabulary, left out of the validation loss (as charrnn eval "
                               f"leaves them out): {files.vocab.preview(outside, 20)}")
    return vocab, extend


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


def _base_lr(config, kind):
    """The run's base learning rate: the config's, else the one tuned for its optimizer and model ``kind``;
    raises TrainingError if the config's min_lr is above it."""
    base_lr = config.learning_rate or DEFAULT_LEARNING_RATES[config.optimizer][kind]
    try:
        check_min_lr(config.min_lr, base_lr)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return base_lr


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
    workers = 1 if config.engine == "torch" else numpy_workers(config, model_class(model_config))
    # with worker processes, a copy of the parameters and a gradient per worker in shared memory besides
    params, step = training_memory(model_config, config.batch_size, config.seq_length,
                                   copies=4 + (workers if workers > 1 else 0))
    check_fits(params, step, config.batch_size, config.seq_length)


def _fresh_model(model_config, corpus, rng):
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
    counts = corpus.counts - np.bincount(corpus.val_ids, minlength=len(vocab)) + 1.0
    model.params["b_y"][...] = np.log(counts / counts.sum())
    return model


def _load_base(init_from, config):
    """The checkpoint to fine-tune (``init_from``); refused if it reads another tokenisation."""
    base = load_checkpoint(init_from)
    if base.vocab.bytes_mode != config.bytes_mode:
        kind = "bytes (--bytes)" if base.vocab.bytes_mode else "characters"
        raise TrainingError(f"{init_from}: that model reads {kind}; fine-tune it with the same --bytes setting")
    return base


def _fine_tuned_model(base, model_config, corpus, rng, reporter):
    """``base``'s model over the corpus's vocabulary (finetune.py): new symbols get fresh rows."""
    new = [s for s in corpus.vocab.symbols if s not in base.vocab.symbols]
    if new:
        reporter.message(f"note: {len(new)} characters new to the model: {corpus.vocab.preview(new, 40)}")
    counts = corpus.counts - np.bincount(corpus.val_ids, minlength=len(corpus.vocab))  # the training text's
    try:
        return extend_vocab(base.model, base.vocab, corpus.vocab, rng, counts, config=model_config)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def _check_resumable(ckpt, config):
    """Refuse to resume with data options other than the checkpoint's: the data position would mean another text."""
    saved = ckpt.meta.get("train", {})
    for name in ("batch_size", "seq_length", "val_frac", "bytes_mode", "encoding"):
        if name in saved and saved[name] != getattr(config, name):
            raise TrainingError(
                f"cannot resume with {name.replace('_', '-')} {getattr(config, name)}: the checkpoint was "
                f"trained with {saved[name]}"
            )


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


def _warn_if_corpus_changed(ckpt, corpus_keys, resume, reporter):
    """A resumed run on a corpus edited since (same characters) goes on from its saved position in the new
    text: say so, since it is no longer the same run. (A checkpoint from before this check says nothing.)"""
    saved = ckpt.meta.get("corpus_files")
    if saved is not None and saved != list(corpus_keys):
        reporter.message(f"warning: the corpus has changed since {resume} was written (its files' names, sizes "
                         "or modification times differ); training goes on from the saved position in the new text")


def _note_halvings(pos, config, reporter):
    """A resumed run whose rate was halved scales a --learning-rate given now too: say so."""
    if pos.lr_scale != 1.0:
        halvings = round(-math.log2(pos.lr_scale))
        reporter.message(f"note: this run's learning rate was halved {halvings} time{'s' * (halvings != 1)} "
                         f"(non-finite steps, the halving schedule); --learning-rate {config.learning_rate:g} "
                         f"goes on at {config.learning_rate * pos.lr_scale:.3g}")


def join_processes(config):
    """This process's place among torchrun's processes (engines/distributed.py), or None for one process."""
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
def leaving(distributed):
    """Leave the process group when training ends, however it ends."""
    try:
        yield
    finally:
        if distributed is not None:
            distributed.close()
