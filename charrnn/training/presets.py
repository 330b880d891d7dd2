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

from ..models.gpt import GPTConfig
from ..models.rnn import ModelConfig
from .run import TrainConfig

DEFAULT_LEARNING_RATES = {  # gpt: adam's is the gpt recipe's; the others are not tuned (a tenth of the RNNs')
    "adam": {"rnn": 2e-3, "lstm": 3e-3, "gru": 3e-3, "gpt": 3e-3},
    "rmsprop": {"rnn": 2e-3, "lstm": 2e-3, "gru": 2e-3, "gpt": 3e-4},
    "adagrad": {"rnn": 0.01, "lstm": 0.01, "gru": 0.03, "gpt": 1e-3},  # docs/benchmarks.md, "Choosing the defaults"
    "sgd": {"rnn": 0.5, "lstm": 1.0, "gru": 1.0, "gpt": 0.1},
}

_RECIPE_FIELDS = (
    "model", "hidden_size", "num_layers", "activation", "dropout", "late_dropout", "late_dropout_epochs", "weight_drop",
    "dtype", "batch_size", "seq_length", "optimizer", "learning_rate", "lr_schedule", "min_lr", "lr_decay",
    "lr_decay_after", "warmup", "grad_clip", "clip_mode", "weight_decay", "average", "eval_every", "max_time",
)
# every option's default, by name (the recurrent model's where both configs have a field)
DEFAULTS = {**asdict(GPTConfig(vocab_size=0)), **asdict(ModelConfig(vocab_size=0)), **asdict(TrainConfig())}
RNN_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")
GPT_OPTIONS = tuple(f.name for f in fields(GPTConfig) if f.name not in ("vocab_size", "context_length"))
MODEL_OPTIONS = tuple(dict.fromkeys(RNN_OPTIONS + GPT_OPTIONS))
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig))
RNN_ONLY = tuple(name for name in RNN_OPTIONS if name not in GPT_OPTIONS)  # activation, weight_drop
GPT_ONLY = tuple(name for name in GPT_OPTIONS if name not in RNN_OPTIONS)  # num_heads

# the seeds' set-ups have none of the regularisers the project's recipe added
_NO_REGULARISATION = {"dropout": 0.0, "late_dropout": None, "average": 0, "weight_decay": 0.0, "weight_drop": 0.0}

# how nanoGPT trains shakespeare_char (config/train_shakespeare_char.py over its train.py): AdamW 1e-3
# (betas 0.9, 0.99; weight decay 0.1), 100 warm-up steps, cosine decay to min_lr 1e-4 over the run, the
# gradient's global L2 norm clipped at 1, an evaluation every 250 steps; no dropout rise, no average.
# Where charrnn differs (no option matches): its GPT has biases (nanoGPT's here: none) and an output
# layer not tied to the embedding; weight decay acts on every parameter (nanoGPT's: matrices and
# embeddings only); the cosine runs over the whole budget with the warm-up's factor (s + 1) / 100 on top
# (nanoGPT's: from the end of the warm-up, which rises as (s + 1) / 101); an evaluation reads the whole
# validation tail (nanoGPT's: 200 random batches); float32 throughout (nanoGPT's on a GPU: bfloat16 or
# float16 autocast)
_NANOGPT_TRAINING = {"late_dropout": None, "average": 0, "optimizer": "adam", "learning_rate": 1e-3,
                     "lr_schedule": "cosine", "min_lr": 1e-4, "warmup": 100, "grad_clip": 1.0, "clip_mode": "norm",
                     "weight_decay": 0.1, "eval_every": 250}
# nanoGPT's shakespeare_char model on a CPU (its README), which the gpt recipe shares: 4 blocks, 4 heads,
# 128 wide, context 64, batch 12, no dropout
_NANOGPT_CPU_SHAPE = {"model": "gpt", "num_layers": 4, "num_heads": 4, "hidden_size": 128, "seq_length": 64,
                      "batch_size": 12, "dropout": 0.0}

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
    # the gpt recipe, chosen by measurement for a 2-core CPU (docs/benchmarks.md, "--model gpt"): what
    # --model gpt alone trains; the context length is --seq-length
    "gpt": {
        **_NANOGPT_CPU_SHAPE,
        "late_dropout": 0.1,  # long runs: dropout rises from 0 to 0.1 between epochs 12 and 40
        "late_dropout_epochs": (12.0, 40.0),
        "average": 0,
        "optimizer": "adam",
        "learning_rate": 3e-3,
        "lr_schedule": "cosine",
        "warmup": 100,
        "grad_clip": 1.0,
        "weight_decay": 0.1,
        "eval_every": 3000,
    },
    # nanoGPT's shakespeare_char on a CPU (its README: the command line that shrinks the model): the shape
    # above, nanoGPT's training (_NANOGPT_TRAINING, with the differences it lists), 2,000 steps
    "nanogpt-cpu": {
        **_NANOGPT_CPU_SHAPE,
        **_NANOGPT_TRAINING,
        "max_steps": 2000,
        "max_time": None,  # nanoGPT's runs are so many steps, however long they take
    },
    # nanoGPT's shakespeare_char "baby GPT": 6 layers, 6 heads, 384 wide, context 256, batch 64, dropout 0.2,
    # nanoGPT's training (_NANOGPT_TRAINING, with the differences it lists), 5,000 steps
    "nanogpt": {
        "model": "gpt",
        "num_layers": 6,
        "num_heads": 6,
        "hidden_size": 384,
        "seq_length": 256,
        "batch_size": 64,
        "dropout": 0.2,
        **_NANOGPT_TRAINING,
        "max_steps": 5000,
        "max_time": None,
    },
}


def preset_options(name, given):
    """The options for preset ``name``: the default recipe, then the preset, then ``given`` (not None)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}")
    explicit = {k: v for k, v in given.items() if v is not None}
    return {**PRESETS["default"], **PRESETS[name], **explicit}


def preset_configs(preset="default", **given):
    """The model config (``ModelConfig``, or ``GPTConfig`` for gpt) and ``TrainConfig`` for a fresh run:
    the default recipe, then ``preset``, then the options ``given`` (config field names; None counts as
    not given). Rules: a model of the other kind than the preset's (gpt against the recurrent ones)
    starts from its own kind's recipe (``gpt`` or ``default``); a cell or optimizer other than the
    preset's, without a learning rate, gets its own tuned rate (``DEFAULT_LEARNING_RATES``); a
    dropout given without a late dropout is kept, not raised later; gpt's context length is
    ``seq_length``. Options of the other kind (``--activation`` with gpt, ``--num-heads`` with an RNN)
    raise ValueError. The model config's vocab_size is 0: ``train`` takes it from the corpus."""
    given = _known({k: v for k, v in given.items() if v is not None})
    if "model" in given and _is_gpt(given["model"]) != _is_gpt(preset_options(preset, {})["model"]):
        preset = "gpt" if _is_gpt(given["model"]) else "default"
    values = preset_options(preset, given)
    bundle = preset_options(preset, {})
    _check_kind(values["model"], given)
    if "learning_rate" not in given and any(values[k] != bundle[k] for k in ("optimizer", "model")):
        values["learning_rate"] = None  # another optimizer or cell than the preset's: its own tuned rate
    if "dropout" in given and "late_dropout" not in given:
        values["late_dropout"] = None  # a dropout asked for is kept, not raised later
    if _is_gpt(values["model"]):
        model_config = GPTConfig(0, **{k: values[k] for k in GPT_OPTIONS}, context_length=values["seq_length"])
    else:
        model_config = ModelConfig(0, **{k: values[k] for k in RNN_OPTIONS})
    replace(model_config, vocab_size=2).validate()  # a bad shape fails now, not after reading the corpus
    return model_config, TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_OPTIONS})


def finetune_configs(base, preset="default", **given):
    """``ModelConfig`` and ``TrainConfig`` to fine-tune ``base`` (a Checkpoint) with ``--init-from``: the
    training options of a fresh run (``preset_configs``), and the checkpoint's model, its tokenisation
    (``bytes_mode``, ``encoding``) and its dropout, except for what is ``given`` explicitly (a shape other
    than the checkpoint's is refused by ``train``). A cell other than the preset's gets its own tuned
    learning rate, as in a fresh run."""
    given = _known({k: v for k, v in given.items() if v is not None})
    saved = asdict(base.model.config)
    if _is_gpt(saved["model"]) and "model" not in given:  # a gpt checkpoint trains with the gpt recipe
        preset = preset if _is_gpt(preset_options(preset, {})["model"]) else "gpt"
    model_config, config = preset_configs(preset, **given)
    kept = {k: saved[k] for k in (GPT_OPTIONS if _is_gpt(model_config.model) else RNN_OPTIONS)
            if k not in given and k in saved}
    if _is_gpt(model_config.model) and "seq_length" not in given and "context_length" in saved:
        kept["context_length"] = saved["context_length"]  # gpt trains on windows of its context length
        config = replace(config, seq_length=saved["context_length"])
    model_config = replace(model_config, **kept)
    tokens = {"bytes_mode": base.vocab.bytes_mode, "encoding": base.vocab.encoding}
    config = replace(config, **{k: v for k, v in tokens.items() if k not in given})
    if "learning_rate" not in given and model_config.model != preset_options(preset, {})["model"]:
        config = replace(config, learning_rate=None)
    return model_config, config


def resume_config(saved, saved_model=None, **given):
    """The ``TrainConfig`` to resume with: ``saved`` (a checkpoint's ``meta["train"]``) with the training
    options ``given`` on top (None counts as not given). The model comes from the checkpoint
    (``saved_model``: its ``meta["model"]``): model options are ignored, but a ``model`` other than the
    checkpoint's raises ValueError."""
    given = _known({k: v for k, v in given.items() if v is not None})
    if saved_model and "model" in given and given["model"] != saved_model.get("model"):
        raise ValueError(
            f"cannot resume a {saved_model.get('model')} checkpoint as --model {given['model']}; train a new "
            "model in another --checkpoint-dir (or with --overwrite)"
        )
    changed = [k for k in MODEL_OPTIONS if k in given and saved_model and given[k] != saved_model.get(k)]
    if changed:
        k = changed[0]
        raise ValueError(
            f"--{k.replace('_', '-')} {given[k]}: a resumed run keeps its model's ({saved_model.get(k)}); to change "
            "it, start from these weights with --init-from in another --checkpoint-dir"
        )
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in TRAIN_OPTIONS},
                          **{k: v for k, v in given.items() if k in TRAIN_OPTIONS}})


def _is_gpt(model):
    return model == "gpt"


def _check_kind(model, given):
    """Raise ValueError for an option given that the other kind of model has, not ``model``."""
    wrong = [k for k in (RNN_ONLY if _is_gpt(model) else GPT_ONLY) if k in given]
    if wrong:
        options = ", ".join("--" + k.replace("_", "-") for k in wrong)
        kind = "the recurrent models (rnn, lstm, gru)" if _is_gpt(model) else "--model gpt"
        raise ValueError(f"{options} {'is' if len(wrong) == 1 else 'are'} for {kind}, not --model {model}")


def _known(options):
    unknown = sorted(set(options) - set(MODEL_OPTIONS) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    return options
