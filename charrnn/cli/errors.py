"""Errors a user can cause, as one line: the library's errors with exit status 1, click's usage errors
with exit status 2 and a pointer to the command's help."""

import contextlib

import click

from ..classify.data import LabelledDataError
from ..engines.base import WorkerError
from ..engines.torch_engine import TorchEngineError
from ..io.checkpoint import CheckpointError
from ..io.corpus import CorpusError
from ..io.export import ExportError
from ..training.lifecycle import TrainingError

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


class OneLineUsageError(click.ClickException):
    """A usage error as one line, ``Error: ... (charrnn sample --help)``, exit status 2 as click's own."""

    exit_code = 2


@contextlib.contextmanager
def one_line_usage_errors():
    """click's usage errors as one line: the message and where to find help."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:  # a bare group: its help, as click shows it
        raise
    except click.UsageError as e:
        hint = f" ({e.ctx.command_path} --help)" if e.ctx is not None else ""
        raise OneLineUsageError(e.format_message() + hint) from None
