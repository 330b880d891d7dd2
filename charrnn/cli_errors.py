"""The library's errors a user can cause, as the command line reports them: one line, exit status 1; and
the number type every option uses."""

import contextlib
import math

import click

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
