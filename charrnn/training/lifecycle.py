"""A training run's lifecycle, shared by the language-model trainer (loop.py) and the classifier's
(classify/train.py): the checkpoint directory's rules, the position and time a run has reached (what
resume continues), its limits and stop reasons, the random seed, the optimizer state it resumes, the
metrics log, signals, the non-finite guard, and where progress is reported.

    check_checkpoint_dir(config.checkpoint_dir, fresh, overwrite, kind)  # before reading anything: refusals only
    open_checkpoint_dir(config.checkpoint_dir, fresh, overwrite, kind)   # once the data is read: make, clear
    config = with_seed(config)                                # draws a seed if none was given
    pos = Position.from_meta(meta)                            # a subclass of Position, resumed (or Position())
    check_budget_left(config, pos, epoch, resume)             # refuse to resume a run already at its limit
    clock = Clock(pos.elapsed)                                # --max-time counts the time trained before
    guard = NonFiniteGuard(model.params, optimizer, pos, reporter, save_latest)
    with SignalCatcher() as signals, MetricsLog(directory, resumed) as log:
        while ...:
            if not finite_step(loss, grads): guard.restore("loss")   # a non-finite step is never applied
            pos.elapsed = clock.elapsed()
            reason = stop_reason(config, pos, epoch, signals.signum)   # Ctrl-C ends the step, then the run
            log.write(record)
"""

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..io.checkpoint import LANGUAGE_MODEL, CheckpointError, checkpoint_kind

MAX_BAD_STEPS = 5  # non-finite steps in a row before a run stops


class TrainingError(Exception):
    """Training cannot start or go on; the message is one line for the user."""


STOPPING = ("stopping after this step, with latest.npz saved (a validation under way finishes first); interrupt "
            "again to stop at once, keeping the checkpoints last written")


class Reporter:
    """Where training tells its progress; the default is silent. The CLI supplies a console one."""

    def start(self, total_steps, info):
        pass

    def stopping(self):
        """The first signal: training stops after this step (``stopping_note``)."""
        self.message(STOPPING)

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


def stopping_note(reporter):
    """SignalCatcher's ``on_first`` for a trainer: tell ``reporter`` what the first signal does."""
    return lambda signum: reporter.stopping()


def prepare_dir(path):
    """Make the checkpoint directory, or say in one line why it cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"{path}: cannot create the checkpoint directory ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise TrainingError(f"{path}: the checkpoint directory is not writable")


MODEL_FILES = ("latest.npz", "best.npz")


def check_checkpoint_dir(directory, fresh, overwrite, kind):
    """Refuse, touching nothing, a checkpoint directory that cannot be made or written, and for a ``fresh`` run
    without ``overwrite`` one that holds a model an earlier run left; ``kind`` (io/checkpoint.py checkpoint_kind's
    names) is the run's: a model of another kind is never one to resume."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):  # the part of the path that exists
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise TrainingError(f"{directory}: cannot create the checkpoint directory ({existing} is not a directory)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrainingError(f"{directory}: the checkpoint directory is not writable")
    for name in MODEL_FILES if fresh and not overwrite else ():
        path = os.path.join(directory, name)
        if os.path.exists(path):
            held = checkpoint_kind(path)
            if held == kind:
                raise TrainingError(f"{directory} already holds a trained model ({name}); use --resume to continue "
                                    "it, --overwrite to start afresh in its place, or another --checkpoint-dir")
            what = {LANGUAGE_MODEL: "a language model", "classifier": "a classifier"}.get(
                held, "a file that is not a charrnn checkpoint")
            raise TrainingError(f"{directory} already holds {what} ({name}); give another --checkpoint-dir, or "
                                "--overwrite to replace it")


def open_checkpoint_dir(directory, fresh, overwrite, kind):
    """Make the checkpoint directory, once the run has read what it trains on (a start that fails leaves
    none); a ``fresh`` run (not a resumed one) then refuses (``check_checkpoint_dir``), or with ``overwrite``
    clears, a model an earlier run left there."""
    check_checkpoint_dir(directory, fresh, overwrite, kind)
    prepare_dir(directory)
    for name in MODEL_FILES if fresh else ():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))


@dataclass
class Position:
    """Where a run is, besides its parameters and optimizer state: what resume needs. Each trainer adds
    its own fields (its place within the epoch, its validation bests)."""

    step: int = 0
    epoch: int = 0  # passes over the training data completed
    evals_since_best: int = 0
    lr_scale: float = 1.0  # halvings by the non-finite guard (and the language model's halving schedule)
    elapsed: float = 0.0  # seconds trained so far, in all runs: --max-time and a time-based schedule count them
    loss_sum: float = 0.0  # the training losses since the last log line, so a resumed run logs the same means
    loss_count: int = 0
    rng_state: dict = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta):
        """The position a checkpoint's metadata holds (fields it lacks, from older versions: their defaults)."""
        return cls(**{k: meta[k] for k in asdict(cls()) if k in meta})

    def to_meta(self, rng):
        """The position as a checkpoint's metadata, with ``rng``'s state."""
        return asdict(replace(self, rng_state=rng.bit_generator.state))

    def count_loss(self, loss):
        self.loss_sum += loss
        self.loss_count += 1

    def take_mean_loss(self):
        """The mean training loss since the last log line; the sums start afresh."""
        mean = self.loss_sum / max(self.loss_count, 1)
        self.loss_sum, self.loss_count = 0.0, 0
        return mean


class Clock:
    """Seconds trained, counting those of the runs before this one (``already``)."""

    def __init__(self, already=0.0):
        self.started = time.perf_counter()
        self.start = self.started - already

    def elapsed(self):
        """Seconds trained in all runs so far."""
        return time.perf_counter() - self.start

    def this_run(self):
        """Seconds since this run started."""
        return time.perf_counter() - self.started


def stop_reason(config, pos, epoch, signum=None, reserve=0.0):
    """Why a run at ``pos`` (``epoch``: epochs done, with a fraction) stops now, or None: a signal, else
    the first limit of ``config`` (max_steps, max_epochs, max_time, against ``pos.elapsed`` and the ``reserve``
    seconds the run's last evaluation will take) reached."""
    if signum is not None:
        return "interrupted"
    if config.max_steps and pos.step >= config.max_steps:
        return "max-steps"
    if config.max_epochs and epoch >= config.max_epochs:
        return "max-epochs"
    if config.max_time and pos.elapsed + reserve >= config.max_time:
        return "max-time"
    return None


def patience_spent(config, pos):
    """"patience" once ``config.patience`` evaluations in a row brought no new best, else None."""
    if config.patience and pos.evals_since_best >= config.patience:
        return "patience"
    return None


def check_budget_left(config, pos, epoch, resume):
    """Refuse to resume a run that has already reached a limit: one more step would go past it. A limit counts
    the whole run, so the refusal says what to give for more: --max-time 30 after 150 s trained is spent."""
    spent = stop_reason(config, pos, epoch)
    if spent:
        done, limit, unit = {"max-steps": (pos.step, config.max_steps, "steps"),
                             "max-epochs": (round(epoch, 2), config.max_epochs, "epochs"),
                             "max-time": (round(pos.elapsed), config.max_time, "s")}[spent]
        raise TrainingError(
            f"{resume}: its run already reached its limit ({spent} at step {pos.step}, {pos.elapsed:.0f} s trained); "
            f"--{spent} counts the whole run: give more than {done:g}, e.g. --{spent} {done + limit:g}, to train "
            f"{limit:g} {unit} more"
        )
    if patience_spent(config, pos):
        raise TrainingError(
            f"{resume}: its run already reached its limit (patience: {pos.evals_since_best} evaluations without a "
            f"better validation loss at step {pos.step}); give a larger --patience to train on"
        )


def with_seed(config):
    """``config`` with a random seed: its own, or one drawn now (and saved with the run)."""
    if config.random_seed is not None:
        return config
    return replace(config, random_seed=int(np.random.SeedSequence().entropy % 2**32))


def restore_optimizer(optimizer, state, resume, name):
    """Load a checkpoint's optimizer ``state``; CheckpointError if it is not optimizer ``name``'s."""
    try:
        optimizer.load_state(state)
    except ValueError as e:
        raise CheckpointError(f"{resume}: cannot resume with optimizer {name} ({e})") from None


class MetricsLog:
    """``metrics.jsonl`` in the checkpoint directory: a JSON record a line, appended to by a resumed run,
    flushed as written. ``writer`` False (a process other than torchrun's first): nothing is written."""

    def __init__(self, directory, resumed, writer=True):
        self.path = os.path.join(directory, "metrics.jsonl") if writer else os.devnull
        self.mode = "a" if resumed and writer else "w"

    def __enter__(self):
        self.file = open(self.path, self.mode)
        return self

    def write(self, record):
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def __exit__(self, *exc):
        self.file.close()


class NonFiniteGuard:
    """Keeps the parameters and optimizer state of the last good evaluation, and goes back to them. A
    step whose loss or gradient is not finite, or whose update leaves a weight non-finite (a rate far too
    high), is never kept: the loop calls ``restore``, which puts them back with half the learning rate
    (``pos.lr_scale``) and stops the run (calling ``save_latest()``, then raising TrainingError) after
    ``MAX_BAD_STEPS`` such steps in a row, so no checkpoint ever holds a non-finite weight."""

    def __init__(self, params, optimizer, pos, reporter, save_latest):
        self.params, self.optimizer, self.pos, self.reporter = params, optimizer, pos, reporter
        self.save_latest, self.bad_steps = save_latest, 0
        self.remember()

    def remember(self):
        """Take the present parameters and optimizer state as the ones to go back to."""
        self.good_params = self.params.flat.copy()
        self.good_optimizer = {k: v.copy() for k, v in self.optimizer.state.items()}
        self.good_step = self.pos.step

    def good_step_taken(self):
        """A step was applied: the count of bad steps in a row starts again."""
        self.bad_steps = 0

    def restore(self, what):
        """A bad step (``what``: "loss" or "update" was not finite): back to the remembered parameters and
        optimizer state (numpy's: an engine on a device then takes them), at half the rate."""
        self.bad_steps += 1
        self.params.flat[...] = self.good_params
        self.optimizer.load_state(self.good_optimizer)
        if self.bad_steps > MAX_BAD_STEPS:
            self.save_latest()
            raise TrainingError(
                f"loss, gradient or update was not finite {self.bad_steps} times in a row, down to learning rate "
                f"{self.optimizer.learning_rate:.3g}; stopped, with the model of step {self.good_step} in latest.npz"
            )
        self.pos.lr_scale /= 2
        self.reporter.message(
            f"warning: non-finite {what} at step {self.pos.step}; restored the parameters of step {self.good_step} "
            f"and halved the learning rate to {self.optimizer.learning_rate / 2:.3g}"
        )
