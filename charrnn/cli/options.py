"""What the commands' options share: click's context settings, a finite number type, which options the user
gave, and the options declared once for every command that takes them.

    @click.command(context_settings=CONTEXT_SETTINGS)
    @training_options(lambda name: {"default": TRAIN_DEFAULTS[name], "show_default": True})
    @sampling_options
    def command(**options): ...

``training_options`` declares what ``charrnn train`` and ``charrnn classify train`` share (the model's
shape, the optimizer and its schedule, the limits, the checkpoint directory, resuming); each command says
how its defaults are given (a value, or None: a preset's) with a function of the option's name, and may
narrow an option's type (``--model``: gpt is the language model's only). ``sampling_options`` declares
what sampling reads (``--temperature``, ``--top-k``, ``--top-p``, ``--length``, ``--stop``, the repetition
penalty, the beam: ``SamplingOptions``'s fields); ``shared_option`` one of
them on a command of its own (``--random-seed`` on ``charrnn sample``).
"""

import math
import re

import click

from ..inference.sample import BEAM_SCORES, SamplingOptions
from ..nn.cells import ACTIVATIONS
from ..nn.numerics import DTYPES
from ..nn.optim import CLIP_MODES, OPTIMIZERS
from ..nn.schedule import SCHEDULES

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf (a nan passes every range check: no comparison is true)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class Utf8Text(click.ParamType):
    """A text typed on the command line, refused where it holds bytes that are not UTF-8 (Python decodes them
    as lone surrogates, which no file, terminal or vocabulary takes)."""

    name = "text"

    def convert(self, value, param, ctx):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            self.fail(f"not valid UTF-8: byte {ord(value[e.start]) - 0xDC00:#04x} at character {e.start + 1}",
                      param, ctx)
        return value


class EscapedText(Utf8Text):
    """A text of one character or more in which \\n, \\t, \\r, \\0 and \\\\ stand for a newline, a tab, a carriage
    return, NUL and a backslash (a backslash before anything else is itself)."""

    ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\"}

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        text = re.sub(r"\\(.)", lambda m: self.ESCAPES.get(m.group(1), m.group(0)), value)
        if not text:
            self.fail("an empty text matches nowhere; give one character or more", param, ctx)
        return text


def explicit(ctx, name):
    """Whether the user gave option ``name`` (not its default)."""
    return ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT


def declare(specs, defaults=None, types=None):
    """A decorator adding the options ``specs`` (name -> click.option keywords, in --help order) to a command;
    ``defaults(name)`` adds keywords per option (its default, how --help shows it, a note to append to the help),
    ``types`` replaces an option's type."""
    def decorate(command):
        for name, spec in reversed(list(specs.items())):
            spec = {**spec, **(defaults(name) if defaults else {})}
            if types and name in types:
                spec["type"] = types[name]
            note = spec.pop("note", None)
            if note:
                spec["help"] = f"{spec.get('help', '')} {note}".strip()
            flags = spec.pop("flags", ("--" + name.replace("_", "-"),))
            command = click.option(*flags, name, **spec)(command)
        return command
    return decorate


MODEL_OPTIONS = {
    "model": {"type": click.Choice(("rnn", "lstm", "gru")), "help": "The recurrent cell."},
    "hidden_size": {"type": click.IntRange(min=1), "help": "Units per layer (per direction in a classifier)."},
    "num_layers": {"type": click.IntRange(min=1), "help": "Stacked layers."},
    "activation": {"type": click.Choice(ACTIVATIONS), "help": "For --model rnn."},
    "dropout": {"type": FiniteFloatRange(0, 1, max_open=True), "help": "Dropout on each layer's output."},
    "dtype": {"type": click.Choice(DTYPES), "help": "The parameters' and activations' floating-point type."},
}

OPTIMIZER_OPTIONS = {
    "batch_size": {"type": click.IntRange(min=1), "help": "Texts (streams) per step."},
    "optimizer": {"type": click.Choice(OPTIMIZERS)},
    "learning_rate": {"type": FiniteFloatRange(min=0, min_open=True)},
    "lr_schedule": {"type": click.Choice(SCHEDULES),
                    "help": "cosine: down to --min-lr over the budget (--max-steps, --max-epochs, else --max-time)."},
    "min_lr": {"type": FiniteFloatRange(min=0), "help": "Where the cosine schedule ends (at most --learning-rate)."},
    "lr_decay": {"type": FiniteFloatRange(0, 1, min_open=True),
                 "help": "Per-epoch factor of the exponential schedule."},
    "lr_decay_after": {"type": click.IntRange(min=0), "help": "Epochs before the exponential decay starts."},
    "grad_clip": {"type": FiniteFloatRange(min=0), "metavar": "C",
                  "help": "Clip the gradient at C, as --clip-mode says; 0 disables."},
    "clip_mode": {"type": click.Choice(CLIP_MODES),
                  "help": "value: clip each gradient element to [-C, C]; norm: scale the whole gradient so that its "
                  "global L2 norm is at most C (torch.nn.utils.clip_grad_norm_)."},
    "weight_decay": {"type": FiniteFloatRange(min=0), "help": "Decoupled (AdamW's) weight decay per step."},
}

RUN_OPTIONS = {
    "eval_every": {"type": click.IntRange(min=1), "help": "Steps between evaluations."},
    "patience": {"type": click.IntRange(min=1), "help": "Stop after this many evaluations without a new best."},
    "max_steps": {"type": click.IntRange(min=1), "help": "Stop after this many steps in all."},
    "max_epochs": {"type": FiniteFloatRange(min=0, min_open=True), "help": "Stop after this many epochs in all."},
    "max_time": {"type": FiniteFloatRange(min=0, min_open=True),
                 "help": "Stop after this many seconds of training in all runs: the run's total, so --resume "
                 "--max-time 900 after 600 s trains 300 s more."},
    "random_seed": {"type": click.IntRange(min=0), "help": "Make the run reproducible."},
    "checkpoint_dir": {"type": click.Path(file_okay=False)},
    "resume": {"is_flag": False, "flag_value": "", "metavar": "[CHECKPOINT]",
               "help": "Continue from CHECKPOINT (default: latest.npz in --checkpoint-dir)."},
    "overwrite": {"is_flag": True, "help": "Start afresh even if --checkpoint-dir holds a model (it is replaced)."},
    "quiet": {"flags": ("-q", "--quiet"), "is_flag": True, "help": "Print nothing but errors."},
}

TRAINING_OPTIONS = {**MODEL_OPTIONS, **OPTIMIZER_OPTIONS, **RUN_OPTIONS}
FLAGS = ("resume", "overwrite", "quiet")  # options whose default is their own, whatever the command's


def training_options(defaults, types=None):
    """What both trainers' commands declare (``TRAINING_OPTIONS``); ``defaults(name)``: see ``declare`` (flags
    keep their own)."""
    return declare(TRAINING_OPTIONS, lambda name: {} if name in FLAGS else defaults(name), types)


SAMPLING_OPTIONS = {
    "temperature": {"type": FiniteFloatRange(min=0), "default": 1.0, "show_default": True,
                    "help": "Below 1: safer; above 1: wilder; 0: always the most likely character."},
    "top_k": {"type": click.IntRange(min=1), "help": "Sample among the K likeliest characters."},
    "top_p": {"type": FiniteFloatRange(0, 1, min_open=True),
              "help": "Sample within the smallest set of characters holding probability P."},
    "length": {"type": click.IntRange(min=1), "default": 500, "show_default": True,
               "help": "Characters to generate (at most, with --stop)."},
    "stop": {"type": EscapedText(), "multiple": True, "metavar": "TEXT",
             "help": "End a sample where it first generates TEXT, which is not printed (repeatable; \\n, \\t, \\r, "
             "\\0 and \\\\ are a newline, a tab, a carriage return, NUL and a backslash). Without --seed each "
             "sample starts as a line starts, so --stop '\\n' on a corpus of one item a line gives whole items, "
             "printed one a line."},
    "repetition_penalty": {"type": FiniteFloatRange(min=1), "default": 1.0, "show_default": True, "metavar": "R",
                           "help": "Make each character seen in the last --repetition-window characters less "
                           "likely: its logit divided by R if positive, multiplied by R if negative (CTRL's)."},
    "repetition_window": {"type": click.IntRange(min=1), "default": SamplingOptions.repetition_window,
                          "show_default": True, "metavar": "N",
                          "help": "Characters, the seed's included, that --repetition-penalty looks back over."},
    "beam_width": {"type": click.IntRange(min=1), "metavar": "K",
                   "help": "Search for the likeliest continuations, K hypotheses at a time, instead of sampling "
                   "(the model's own probabilities; 1: greedy). --num-samples N <= K prints the N best."},
    "beam_score": {"type": click.Choice(BEAM_SCORES), "default": "total", "show_default": True,
                   "help": "How finished beam texts compete: total log-probability (favours short ones), or its mean "
                   "per character."},
}

sampling_options = declare(SAMPLING_OPTIONS)


def shared_option(name, **keywords):
    """One of the options above on a command of its own, ``keywords`` (its help, say) replacing the shared ones."""
    return declare({name: {**TRAINING_OPTIONS, **SAMPLING_OPTIONS}[name]}, lambda _: keywords)
