"""A language-model training run's types: its options (``TrainConfig``), where it is (``TrainPosition``),
what it works on (``Run``, built by start.py's three constructors) and what it returns (``TrainResult``).

    config = TrainConfig(max_time=300, batch_size=64)   # every default is the project's recipe
    config.validate()                                   # ValueError, one line, for a field out of range
    run = fresh_run(setup, model_config)                # start.py: run.config, run.model, run.pos, ...
"""

import codecs
from dataclasses import dataclass

import numpy as np

from ..engines.torch_engine import DEVICES, PRECISIONS
from ..models.registry import LanguageModel
from ..nn.optim import OPTIMIZERS, WeightAverage, check_clip_mode
from ..nn.schedule import SCHEDULES, check_min_lr
from .lifecycle import Position

ENGINES = ("numpy", "torch")


@dataclass
class TrainConfig:
    """Training options; the defaults are the project's recipe (docs/benchmarks.md, "Choosing the defaults")."""

    batch_size: int = 32
    seq_length: int = 100
    optimizer: str = "adam"
    learning_rate: float | None = 3e-3  # None: presets.DEFAULT_LEARNING_RATES for the optimizer and model
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
    val_files: tuple = ()  # validated on as charrnn eval scores each (training/validation.py), besides the tails
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
        if isinstance(self.val_files, (str, bytes)):
            raise ValueError(f"val-files must be a list of paths, not the one path {self.val_files!r}")
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


@dataclass
class Run:
    """What a training run works on, fresh or resumed (``start_run``); ``pos`` and ``rng`` move as it goes."""

    config: TrainConfig  # as validated and fitted to the corpus, with a random seed
    corpus_paths: list  # absolute paths of the corpus's files, in order
    vocab: object  # io/corpus.py Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    model: LanguageModel  # CharRNN or CharGPT (models/registry.py)
    optimizer: object  # nn/optim.py Optimizer
    average: WeightAverage | None
    base_lr: float
    pos: TrainPosition
    rng: np.random.Generator  # dropout masks; its state is saved in every checkpoint
    state: tuple | None = None  # the hidden state carried into the first chunk
    resumed: bool = False  # a resumed run appends to its metrics log
    distributed: object = None  # engines/distributed.py: this process's place among torchrun's; None: alone
    init_from: str | None = None  # the checkpoint a fine-tuning run started from
    corpus_keys: tuple = ()  # io/corpus.py file_key of each corpus file as this run read it: resume tells a change
    corpus_sha256: tuple = ()  # each corpus file's SHA-256 (hex): what it was trained on, as charrnn info says
    validation: object = None  # training/validation.py ValidationFiles (--val-file), scored besides val_ids; or None

    @property
    def writer(self):
        """Whether this process writes checkpoints and metrics (process 0 of several, or the only one)."""
        return self.distributed is None or self.distributed.writer


ITERATE = "iterate."  # checkpoint optimizer-state prefix: the weights training goes on from, when averaging
