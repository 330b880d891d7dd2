"""The ``charrnn`` command line: one group over the commands, a module per family: train.py (train),
sample.py (sample), evaluate.py (eval), inspect.py (inspect, neurons), checkpoint.py (info, plot, export,
import), serve.py (serve) and classify.py (the ``classify`` group); options they share (options.py); usage
errors as one line (errors.py); reporters (report.py)."""

import signal

import click

from .. import __version__
from ..engines.pool import keep_freed_memory
from .checkpoint import export_command, import_command, info, plot
from .classify import classify
from .errors import one_line_usage_errors
from .evaluate import eval_command
from .inspect import inspect, neurons
from .options import CONTEXT_SETTINGS
from .sample import sample
from .serve import serve
from .train import train


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
      charrnn sample checkpoints --seed "Romeo." --temperature 0.8
      charrnn eval checkpoints held_out.txt
      charrnn serve checkpoints
    """
    keep_freed_memory()  # this process's allocator reuses pages, as the workers' (engines/pool.py)


for command in (train, sample, eval_command, inspect, neurons, info, plot, export_command, import_command, serve,
                classify):
    main.add_command(command)
