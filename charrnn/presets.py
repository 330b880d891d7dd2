"""Named bundles of training options (``--preset``), and the rules that turn a preset and the options
a user gives into configs, the same for the command line and the Python API:

    model_config, config = preset_configs("char-rnn", hidden_size=256, max_time=60)
    train("input.txt", model_config, config)
    config = resume_config(load_checkpoint(path).meta["train"], max_time=60)
    train("input.txt", None, config, resume=path)
    model_config, config = finetune_configs(load_checkpoint(path), max_steps=500)
    train("new.txt", model_config, config, init_from=path)

``default`` is the project's recipe, chosen by measurement (docs/benchmarks.md, "Choosing the
defaults"); the others reproduce the seeds' set-ups. Every default lives in the dataclasses
(``ModelConfig``, ``TrainConfig``); ``DEFAULTS`` reads them.
"""

from dataclasses import asdict, fields, replace

from .model import ModelConfig
from .train import TrainConfig

_RECIPE_FIELDS = (
    "model", "hidden_size", "num_layers", "activation", "dropout", "late_dropout", "late_dropout_epochs", "weight_drop",
    "dtype", "batch_size", "seq_length", "optimizer", "learning_rate", "lr_schedule", "lr_decay", "lr_decay_after",
    "grad_clip", "weight_decay", "average", "eval_every", "max_time",
)
DEFAULTS = {**asdict(ModelConfig(vocab_size=0)), **asdict(TrainConfig())}  # every option's default, by name
MODEL_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig))

# the seeds' set-ups have none of the regularisers the project's recipe added
_NO_REGULARISATION = {"dropout": 0.0, "late_dropout": None, "average": 0, "weight_decay": 0.0, "weight_drop": 0.0}

PRESETS = {
    # the dataclasses' defaults are the project's recipe
    "default": {name: DEFAULTS[name] for name in _RECIPE_FIELDS},
    # Karpathy's min-char-rnn: Elman tanh, 100 units, batch 1, 25 steps of BPTT, Adagrad 0.1, clip 5
    "min-char-rnn": {
        "model": "rnn",
        "hidden_size": 100,
        "num_layers": 1,
        "activation": "tanh",
        **_NO_REGULARISATION,
        "batch_size": 1,
        "seq_length": 25,
        "optimizer": "adagrad",
        "learning_rate": 0.1,
        "lr_schedule": "constant",
        "grad_clip": 5.0,
        "eval_every": 1000,
    },
    # char-rnn's defaults: 2-layer LSTM of 128, batch 50, 50 steps, RMSprop 2e-3 decayed 0.97 per epoch after 10
    "char-rnn": {
        "model": "lstm",
        "hidden_size": 128,
        "num_layers": 2,
        "batch_size": 50,
        "seq_length": 50,
        "optimizer": "rmsprop",
        "learning_rate": 2e-3,
        "lr_schedule": "exponential",
        "lr_decay": 0.97,
        "lr_decay_after": 10,
        "grad_clip": 5.0,
        **_NO_REGULARISATION,
        "eval_every": 1000,
    },
}


def preset_options(name, given):
    """The options for preset ``name``: the default recipe, then the preset, then ``given`` (not None)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}")
    explicit = {k: v for k, v in given.items() if v is not None}
    return {**PRESETS["default"], **PRESETS[name], **explicit}


def preset_configs(preset="default", **given):
    """``ModelConfig`` and ``TrainConfig`` for a fresh run: the default recipe, then ``preset``, then the
    options ``given`` (ModelConfig and TrainConfig field names; None counts as not given). Two rules:
    a cell or optimizer other than the preset's, without a learning rate, gets its own tuned rate
    (``train.DEFAULT_LEARNING_RATES``); a dropout given without a late dropout is kept, not raised later.
    The model config's vocab_size is 0: ``train`` takes it from the corpus."""
    given = _known({k: v for k, v in given.items() if v is not None})
    values = preset_options(preset, given)
    bundle = preset_options(preset, {})
    if "learning_rate" not in given and any(values[k] != bundle[k] for k in ("optimizer", "model")):
        values["learning_rate"] = None  # another optimizer or cell than the preset's: its own tuned rate
    if "dropout" in given and "late_dropout" not in given:
        values["late_dropout"] = None  # a dropout asked for is kept, not raised later
    model_config = ModelConfig(0, **{k: values[k] for k in MODEL_OPTIONS})
    return model_config, TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_OPTIONS})


def finetune_configs(base, preset="default", **given):
    """``ModelConfig`` and ``TrainConfig`` to fine-tune ``base`` (a Checkpoint) with ``--init-from``: the
    training options of a fresh run (``preset_configs``), and the checkpoint's model, its tokenisation
    (``bytes_mode``, ``encoding``) and its dropout, except for what is ``given`` explicitly (a shape other
    than the checkpoint's is refused by ``train``). A cell other than the preset's gets its own tuned
    learning rate, as in a fresh run."""
    given = _known({k: v for k, v in given.items() if v is not None})
    model_config, config = preset_configs(preset, **given)
    saved = asdict(base.model.config)
    model_config = replace(model_config, **{k: saved[k] for k in MODEL_OPTIONS if k not in given})
    tokens = {"bytes_mode": base.vocab.bytes_mode, "encoding": base.vocab.encoding}
    config = replace(config, **{k: v for k, v in tokens.items() if k not in given})
    if "learning_rate" not in given and model_config.model != preset_options(preset, {})["model"]:
        config = replace(config, learning_rate=None)
    return model_config, config


def resume_config(saved, **given):
    """The ``TrainConfig`` to resume with: ``saved`` (a checkpoint's ``meta["train"]``) with the training
    options ``given`` on top (None counts as not given). The model comes from the checkpoint: model
    options are ignored."""
    given = _known({k: v for k, v in given.items() if v is not None})
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in TRAIN_OPTIONS},
                          **{k: v for k, v in given.items() if k in TRAIN_OPTIONS}})


def _known(options):
    unknown = sorted(set(options) - set(MODEL_OPTIONS) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    return options
