"""The ``charrnn`` command line: one group over the language-model commands (lm.py), the commands that look
inside a model (inspect.py) and ``classify`` (classify.py); usage errors become one line (errors.py)."""

import signal

import click

from .. import __version__
from ..engines.pool import keep_freed_memory
from .classify import classify
from .errors import one_line_usage_errors
from .inspect import COMMANDS as INSPECT_COMMANDS
from .lm import COMMANDS
from .options import CONTEXT_SETTINGS


class CharrnnGroup(click.Group):
    """The top-level group: every command's and subcommand's usage errors (bad option values, missing
    paths, unknown options) become one line instead of click's three (Usage / Try / Error), and Ctrl-C
    exits quietly with status 130, not click's ``Aborted!`` and 1."""

    def make_context(self, info_name, args, parent=None, **extra):
        with one_line_usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with one_line_usage_errors():
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt:  # Ctrl-C in sample, eval, classify predict: 130 as train and serve
                raise click.exceptions.Exit(128 + signal.SIGINT) from None


@click.group(cls=CharrnnGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="charrnn")
def main():
    """Character-level language models (RNN, LSTM, GRU, GPT) in numpy: train, sample, eval.

    \b
    Example:
      charrnn train data/shakespeare.txt
      charrnn sample checkpoints --seed "ROMEO." --temperature 0.8
      charrnn eval checkpoints held_out.txt
      charrnn serve checkpoints
    """
    keep_freed_memory()  # this process's allocator reuses pages, as the workers' (engines/pool.py)


for command in (*COMMANDS, *INSPECT_COMMANDS, classify):
    main.add_command(command)
