"""Starting a language-model training run (train.py): fresh, resumed from a checkpoint, or fine-tuning
another model's weights; and, under torchrun, this process's place among several.

    run = start_run(Request(corpus_path, model_config, config, resume, init_from, overwrite), reporter,
                    distributed)

A run reads its corpus (process 0 of several writes the id cache while the others wait), fits the chunk
to a short text, draws its seed, and builds the model, its position, the optimizer and the running
average of the weights. A resumed run's model, position, hidden state, random generator and optimizer
state are the checkpoint's; refusals (a spent budget, another tokenisation, too little memory) come
before anything in the checkpoint directory is touched.
"""

import contextlib
import math
import os
from dataclasses import dataclass, replace

import numpy as np

from ..engines.base import WorkerError
from ..engines.choice import numpy_workers
from ..engines.distributed import Distributed
from ..io.checkpoint import CheckpointError, load_checkpoint
from ..io.corpus import CorpusError, StreamBatches, file_key, load_corpus
from ..models.registry import LanguageModel, build_model, model_class, training_memory
from ..nn.numerics import check_params
from ..nn.optim import WeightAverage, make_optimizer
from ..nn.schedule import check_min_lr
from .finetune import extend_vocab
from .lifecycle import (
    Position,
    TrainingError,
    check_budget_left,
    open_checkpoint_dir,
    restore_optimizer,
    with_seed,
)
from .memory import check_fits, free_memory

DEFAULT_LEARNING_RATES = {  # gpt: adam's is the gpt recipe's; the others are not tuned (a tenth of the RNNs')
    "adam": {"rnn": 2e-3, "lstm": 3e-3, "gru": 3e-3, "gpt": 3e-3},
    "rmsprop": {"rnn": 2e-3, "lstm": 2e-3, "gru": 2e-3, "gpt": 3e-4},
    "adagrad": {"rnn": 0.01, "lstm": 0.01, "gru": 0.03, "gpt": 1e-3},  # docs/benchmarks.md, "Choosing the defaults"
    "sgd": {"rnn": 0.5, "lstm": 1.0, "gru": 1.0, "gpt": 0.1},
}
LARGE_VALIDATION = 5_000_000  # characters: beyond this, suggest a smaller --val-frac


@dataclass
class TrainPosition(Position):
    """Where language-model training is (runs.Position), with its place in the epoch and its validation."""

    chunk: int = 0  # chunks done in the current epoch
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    halving: bool = False  # the halving schedule has started halving


@dataclass
class Request:
    """What ``train`` was asked to do."""

    corpus_path: object
    model_config: object
    config: object  # train.TrainConfig
    resume: str | None
    init_from: str | None
    overwrite: bool


@dataclass
class Run:
    """What a training run works on, fresh or resumed (``start_run``); ``pos`` and ``rng`` move as it goes."""

    config: object  # train.TrainConfig, as validated and fitted to the corpus, with a random seed
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
    distributed: object = None  # engines/distributed.py: this process's place among torchrun's; None: alone
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


def start_run(request, reporter, distributed):
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
    base_lr = _base_lr(config, model.config.model)
    optimizer = make_optimizer(config.optimizer, model.params, base_lr, config.grad_clip, config.weight_decay,
                               config.clip_mode)
    average = WeightAverage(model.params, config.average, start=start.saved_average) if config.average else None
    if ckpt and ckpt.optimizer_state:  # (an imported model has none: the optimizer starts afresh)
        restore_optimizer(optimizer, ckpt.optimizer_state, request.resume, config.optimizer)
    paths = [os.path.abspath(path) for path, _ in corpus.files]
    init_from = os.path.abspath(request.init_from) if request.init_from is not None else None
    return Run(config, paths, corpus.vocab, corpus.train_ids, corpus.val_ids, model, optimizer, average, base_lr,
                start.pos, rng, start.state, resumed=ckpt is not None, distributed=distributed, init_from=init_from,
                corpus_keys=corpus_keys)


def _base_lr(config, kind):
    """The run's base learning rate: the config's, else the one tuned for its optimizer and model ``kind``;
    raises TrainingError if the config's min_lr is above it."""
    base_lr = config.learning_rate or DEFAULT_LEARNING_RATES[config.optimizer][kind]
    try:
        check_min_lr(config.min_lr, base_lr)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return base_lr


def _open_run(request, distributed):
    """The checks that need no corpus, then the checkpoint directory (of several processes, process 0's
    work): return the checkpoint to resume and the one to fine-tune (each None if not asked for)."""
    config, resume = request.config, request.resume
    if request.model_config is not None and resume is None and request.init_from is None:
        _check_memory(request.model_config, config)  # before --overwrite clears anything
    base = _load_base(request.init_from, resume, config)  # before --overwrite clears anything
    if resume is None:  # and a --min-lr above the rate tuned for the model
        kind = request.model_config if request.model_config is not None else base.model.config
        _base_lr(config, kind.model)
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
    workers = 1 if config.engine == "torch" else numpy_workers(config, model_class(model_config))
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
