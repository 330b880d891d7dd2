"""Named bundles of training options (``--preset``); options given explicitly override them.

``default`` is the project's recipe, chosen by measurement (see README, "Choosing the defaults"); the
others reproduce the seeds' set-ups.
"""


from dataclasses import asdict

from .model import ModelConfig
from .train import TrainConfig

_RECIPE_FIELDS = (
    "model", "hidden_size", "num_layers", "activation", "dropout", "late_dropout", "late_dropout_epochs", "weight_drop",
    "dtype", "batch_size", "seq_length", "optimizer", "learning_rate", "lr_schedule", "lr_decay", "lr_decay_after",
    "grad_clip", "weight_decay", "average", "eval_every", "max_time",
)
_DEFAULTS = {**asdict(ModelConfig(vocab_size=0)), **asdict(TrainConfig())}

PRESETS = {
    # the dataclasses' defaults are the project's recipe
    "default": {name: _DEFAULTS[name] for name in _RECIPE_FIELDS},
    # Karpathy's min-char-rnn: Elman tanh, 100 units, batch 1, 25 steps of BPTT, Adagrad 0.1, clip 5
    "min-char-rnn": {
        "model": "rnn",
        "hidden_size": 100,
        "num_layers": 1,
        "activation": "tanh",
        "dropout": 0.0,
        "late_dropout": None,
        "average": 0,
        "weight_decay": 0.0,
        "weight_drop": 0.0,
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
        "dropout": 0.0,
        "late_dropout": None,
        "average": 0,
        "weight_decay": 0.0,
        "weight_drop": 0.0,
        "eval_every": 1000,
    },
}


def preset_options(name, given):
    """The options for preset ``name``: the default recipe, then the preset, then ``given`` (not None)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}")
    explicit = {k: v for k, v in given.items() if v is not None}
    return {**PRESETS["default"], **PRESETS[name], **explicit}
