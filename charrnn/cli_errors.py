"""What the commands (cli.py, classify_cli.py) share: the library's errors a user can cause, reported in
one line with exit status 1; the number type every option uses; the console reports are printed on."""

import contextlib
import math
import os
import sys

import click
from rich.console import Console

from .checkpoint import CheckpointError
from .classify_data import LabelledDataError
from .data import CorpusError
from .export import ExportError
from .parallel import WorkerError
from .torch_engine import TorchEngineError
from .train import TrainingError

USER_ERRORS = (CorpusError, LabelledDataError, CheckpointError, TrainingError, ExportError, TorchEngineError,
               WorkerError, ValueError, OSError)


@contextlib.contextmanager
def user_errors():
    """Turn the library's one-line errors into click errors: message on stderr, exit status 1."""
    try:
        yield
    except BrokenPipeError:  # the reader went away (| head): click exits quietly
        raise
    except USER_ERRORS as e:
        message = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        raise click.ClickException(message) from None
    except MemoryError as e:  # numpy's says how much it could not allocate
        raise click.ClickException(f"not enough memory: {e}") from None


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf (a nan passes every range check: no comparison is true)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def console(stderr=False):
    """rich's console for a command's report: a terminal's width on a terminal; piped or redirected, no
    width limit, so a table keeps its natural width and a line stays whole (nothing cut or wrapped)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(stderr=stderr, no_color="NO_COLOR" in os.environ or None, highlight=False, soft_wrap=True,
                   width=width)
