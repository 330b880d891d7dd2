"""``charrnn train``: the language-model trainer's command, over training/loop.py's ``train``."""

import os

import click

from ..engines.torch_engine import DEVICES, PRECISIONS, TorchEngineError, import_torch
from ..io.checkpoint import load_checkpoint
from ..models.registry import MODEL_KINDS
from ..training.loop import train as train_model
from ..training.presets import DEFAULTS, PRESETS, finetune_configs, preset_configs, resume_config
from ..training.run import ENGINES
from .errors import user_errors
from .options import CONTEXT_SETTINGS, FiniteFloatRange, declare, explicit, training_options
from .report import ConsoleReporter, print_summary, resume_command

# how the options shared with the classifier read here (their defaults are a preset's)
LM_HELP = {
    "model": "A recurrent cell, or gpt: a Transformer (alone, it trains the gpt recipe).",
    "hidden_size": "Units per layer; for gpt the embedding width.",
    "num_layers": "Stacked layers (gpt: blocks).",
    "batch_size": "Streams B.",
}


def _preset_default(name):
    """How option ``name`` reads for ``charrnn train``: its default is the preset's (None: not given), unless the
    option has one of its own."""
    keywords = {"help": LM_HELP[name]} if name in LM_HELP else {}
    if name == "checkpoint_dir":
        return {"default": DEFAULTS[name], "show_default": True}
    if name == "learning_rate":
        return {**keywords, "note": "[default: the preset's; with another --optimizer, tuned for it and the model]"}
    if name in PRESETS["default"] and "default" not in LM_OPTIONS.get(name, {}):
        return {**keywords, "note": f"[default: {PRESETS['default'][name]}, or the preset's]"}
    return keywords


LM_OPTIONS = {
    "num_heads": {"type": click.IntRange(min=1),
                  "help": "Attention heads, for --model gpt; must divide the hidden size. "
                  f"[default: {PRESETS['gpt']['num_heads']}, or the preset's]"},
    "weight_drop": {"type": FiniteFloatRange(0, 1, max_open=True),
                    "help": "Fraction of recurrent weights dropped per step (DropConnect)."},
    "seq_length": {"type": click.IntRange(min=1), "help": "BPTT length T; for gpt the context length."},
    "warmup": {"type": click.IntRange(min=0), "metavar": "STEPS",
               "help": "Linear learning-rate warm-up over the first STEPS steps."},
    "average": {"type": click.IntRange(min=0), "metavar": "STEPS",
                "help": "Validate, save and sample a running average of the weights over about STEPS steps; 0: off."},
    "late_dropout": {"type": FiniteFloatRange(0, 1, max_open=True),
                     "help": "Raise dropout linearly from --dropout to this rate between --late-dropout-epochs."},
    "late_dropout_epochs": {"type": (FiniteFloatRange(min=0), FiniteFloatRange(min=0)), "metavar": "A B",
                            "help": "Epochs where the rise starts and ends."},
    "val_frac": {"type": FiniteFloatRange(0, 1, max_open=True), "default": DEFAULTS["val_frac"], "show_default": True,
                 "help": "Tail of the corpus held out for validation."},
    "val_files": {"flags": ("--val-file",), "multiple": True, "metavar": "FILE",
                  "type": click.Path(exists=True, dir_okay=False, readable=True, resolve_path=True),
                  "help": "Validate on FILE (repeatable), scored whole as charrnn eval scores it, instead of each "
                  "corpus file's tail (a tail is held out too only if --val-frac is given). --resume keeps them."},
    "sample_length": {"type": click.IntRange(min=0), "default": DEFAULTS["sample_length"], "show_default": True,
                      "help": "Preview sample at each evaluation; 0 disables."},
    "encoding": {"default": DEFAULTS["encoding"], "show_default": True, "help": "Text encoding of the corpus."},
    "bytes_mode": {"flags": ("--bytes",), "is_flag": True, "help": "Every byte a symbol: trains on any file."},
    "init_from": {"type": click.Path(exists=True), "metavar": "CHECKPOINT",
                  "help": "Fine-tune: start from CHECKPOINT's weights (new characters get new rows) with a fresh "
                  "optimizer, schedule and step count."},
    "workers": {"type": click.IntRange(min=1),
                "help": "Processes that compute each step, a share of the streams each. [default: one per CPU, "
                "at least 8 streams each]"},
    "sparse_embedding": {"is_flag": True,
                         "help": "Update only the rows of the input table that a step reads: faster with a vocabulary "
                         "of thousands; with Adam, RMSprop or weight decay an unread row waits, undecayed, until a "
                         "step reads it."},
    "engine": {"type": click.Choice(ENGINES), "default": DEFAULTS["engine"], "show_default": True,
               "help": "Who computes each step: charrnn's numpy code, or PyTorch (pip install 'charrnn[torch]'; "
               "several processes under torchrun: docs/scaling.md)."},
    "device": {"type": click.Choice(DEVICES), "default": DEFAULTS["device"], "show_default": True,
               "help": "With --engine torch: the CPU, or a CUDA GPU."},
    "precision": {"type": click.Choice(PRECISIONS), "default": DEFAULTS["precision"], "show_default": True,
                  "help": "With --engine torch and --dtype float32: forward and backward under torch.autocast in this "
                  "precision (float16 with a dynamic loss scale). The weights, gradient, optimizer state and update, "
                  "hidden state, layer norms, softmax and loss stay float32."},
}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("corpus", nargs=-1, required=True, type=click.Path(exists=True, readable=True))
@click.option("--preset", type=click.Choice(list(PRESETS)), default="default", show_default=True,
              help="A bundle of the options below (docs/training.md); options you give win.")
@training_options(_preset_default, types={"model": click.Choice(MODEL_KINDS)})
@declare(LM_OPTIONS, _preset_default)
@click.pass_context
def train(ctx, corpus, preset, resume, init_from, overwrite, quiet, **options):
    """Train a character model on CORPUS: one or more text files and directories (a directory: its text
    files, in sorted order). Each file's tail is held out for validation, or with --val-file, FILE is.

    Writes latest.npz, best.npz and metrics.jsonl to --checkpoint-dir.

    \b
    Example:
      charrnn train data/shakespeare.txt --max-time 300
      charrnn train data/shakespeare.txt --resume --max-time 900    # 600 s more: limits count the whole run
      charrnn train input.txt --preset min-char-rnn
      charrnn train names.train.txt --val-file names.valid.txt
      charrnn train letters/ diaries/ --init-from checkpoints --checkpoint-dir tuned
    """
    quiet = quiet or int(os.environ.get("RANK", "0")) > 0  # under torchrun, process 0 speaks for all
    given = {name: value for name, value in options.items() if explicit(ctx, name)}
    if "val_files" in given and "val_frac" not in given and resume is None:
        given["val_frac"] = 0.0  # the files validate instead of the tails
    if resume is not None and init_from is not None:
        raise click.UsageError("--init-from starts a new run from a model's weights and --resume continues a run; "
                               "give one of them")
    if resume is not None and explicit(ctx, "preset"):
        raise click.UsageError("--preset sets up a new run; --resume continues one with its own settings")
    with user_errors():
        if resume is not None:
            resume = resume or os.path.join(options["checkpoint_dir"], "latest.npz")
            meta = load_checkpoint(resume).meta
            model_config, config = None, resume_config(meta.get("train", {}), meta.get("model"), **given)
            if config.engine == "torch" and "engine" not in given:
                _check_kept_engine(resume)
        elif init_from is not None:
            model_config, config = finetune_configs(load_checkpoint(init_from), preset, **given)
        else:
            model_config, config = preset_configs(preset, **given)
        going_on = resume_command(["train"], corpus, config.checkpoint_dir, DEFAULTS["checkpoint_dir"])
        result = train_model(list(corpus), model_config, config, resume=resume,
                             reporter=ConsoleReporter(quiet, going_on), overwrite=overwrite, init_from=init_from)
    if not quiet:
        print_summary(result, going_on)
    if result.interrupted_by is not None:
        ctx.exit(128 + result.interrupted_by)


def _check_kept_engine(checkpoint):
    """A run trained with --engine torch resumes with it: say so if this Python has no PyTorch."""
    try:
        import_torch()
    except TorchEngineError:
        raise click.ClickException(f"{checkpoint} was trained with --engine torch, which --resume keeps, and "
                                   "PyTorch is not installed here: pip install 'charrnn[torch]', or resume "
                                   "with --engine numpy") from None
