"""A training run's lifecycle, shared by the language-model trainer (train.py) and the classifier's
(classify/train.py): the checkpoint directory's rules, signals, and where progress is reported.

    prepare_dir(config.checkpoint_dir)
    clear_previous_model(config.checkpoint_dir, overwrite)   # a fresh run: refuse or clear an old model
    with SignalCatcher() as signals:
        while signals.signum is None: ...                    # Ctrl-C ends the step, then the run
"""

import os
import signal


class TrainingError(Exception):
    """Training cannot start or go on; the message is one line for the user."""


class Reporter:
    """Where training tells its progress; the default is silent. The CLI supplies a console one."""

    def start(self, total_steps, info):
        pass

    def step(self, step, info):
        pass

    def message(self, text):
        pass

    def sample(self, text):
        pass

    def close(self):
        pass


class SignalCatcher:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a step is never cut in half. The first
    signal calls ``on_first(signum)`` (to say what happens); a second one exits at once (128 + its number),
    for a validation that would take too long to wait for: the checkpoints are those last written."""

    def __init__(self, on_first=None):
        self.signum, self.on_first = None, on_first

    def __enter__(self):
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._catch)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _catch(self, signum, frame):
        if self.signum is not None:
            raise SystemExit(128 + signum)
        self.signum = signum
        if self.on_first is not None:
            self.on_first(signum)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def prepare_dir(path):
    """Make the checkpoint directory, or say in one line why it cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"{path}: cannot create the checkpoint directory ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise TrainingError(f"{path}: the checkpoint directory is not writable")


def clear_previous_model(directory, overwrite):
    """A fresh run never mixes with an earlier one: refuse its directory, or with ``overwrite`` clear it."""
    for name in ("latest.npz", "best.npz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            if not overwrite:
                raise TrainingError(
                    f"{directory} already holds a trained model ({name}); use --resume to continue it, "
                    "--overwrite to start afresh in its place, or another --checkpoint-dir"
                )
            os.unlink(path)
