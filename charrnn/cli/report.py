"""How the commands report: rich's console for tables, training progress on a terminal or as log lines,
and the summaries a training run ends with."""

import io
import os
import shlex
import sys
import time
from dataclasses import dataclass

import click
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from ..training.lifecycle import Reporter


def console(stderr=False):
    """rich's console for a command's report: a terminal's width on a terminal; piped or redirected, no
    width limit, so a table keeps its natural width and a line stays whole (nothing cut or wrapped)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(stderr=stderr, no_color="NO_COLOR" in os.environ or None, highlight=False, soft_wrap=True,
                   width=width)


LOG_SECONDS = 10  # without a progress bar, a progress line at least this often (at the loop's next report)


class CommandReporter(Reporter):
    """What the commands' reporters share: ``quiet``, and ``resume``, the command that continues the run, said
    when a signal stops it."""

    def __init__(self, quiet=False, resume=None):
        self.quiet, self.resume = quiet, resume

    def stopping(self):
        super().stopping()
        if self.resume:
            self.message(f"to go on later: {self.resume}")

    def resuming(self, info):
        """The line a resumed run starts with."""
        return f"resuming from step {info['step']:,}, {info['elapsed']:.0f} s trained" if info.get("resumed") else None


class ConsoleReporter(CommandReporter):
    """Progress bar on a terminal; otherwise (output redirected, or a terminal of no width) a log line per
    evaluation and a progress line, with the rate and the time left, at least every LOG_SECONDS seconds;
    nothing when quiet."""

    def __init__(self, quiet=False, resume=None):
        super().__init__(quiet, resume)
        self.interactive = sys.stdout.isatty() and sys.stderr.isatty() and terminal_width(sys.stderr) > 0
        self.bar, self.val_loss, self.last_line = None, None, time.monotonic()

    def start(self, total_steps, info):
        if self.resuming(info):
            self.write(self.resuming(info))
        self.write(
            f"training {info['params']:,} parameters on {info['train_chars']:,} characters "
            f"(vocabulary {info['vocab']}, {count(info['chunks_per_epoch'], 'step')} per epoch, "
            f"validation {info['val_chars']:,}, random seed {info['seed']}"
            + (f", {info['workers']} worker processes)" if info.get("workers", 1) > 1 else ")")
        )
        self.limits = Limits(total_steps, info["max_time"], info.get("step", 0), info.get("elapsed", 0.0))
        if self.interactive and not self.quiet:
            # the bar follows whichever limit is set: steps, else seconds (so its ETA is right)
            self.by_time = total_steps is None and info["max_time"] is not None
            if self.by_time:
                total, shown = round(info["max_time"]), "{n_fmt}/{total_fmt} s trained{postfix}"
            else:
                total, shown = total_steps, "{n_fmt}/{total_fmt} steps [{elapsed}<{remaining}{postfix}]"
            self.bar = tqdm(total=total, bar_format="{l_bar}{bar}| " + shown, dynamic_ncols=True, file=sys.stderr)

    def step(self, step, info):
        if "val_loss" in info:
            self.val_loss = info["val_loss"]
        if self.bar is not None:
            done = min(round(info["elapsed"]), self.bar.total) if self.by_time else step
            self.bar.update(done - self.bar.n)
            postfix = {"step": step, "epoch": f"{info['epoch']:.2f}", "loss": f"{info['train_loss']:.3f}"}
            if self.val_loss is not None:
                postfix["val"] = f"{self.val_loss:.3f}"
            postfix["chars/s"] = f"{info['chars_per_sec']:,.0f}"
            self.bar.set_postfix(postfix, refresh=False)
        now = time.monotonic()
        if "val_loss" in info:
            self.write(
                f"step {step:,}  epoch {info['epoch']:.2f}  train loss {info['train_loss']:.4f}  "
                f"val loss {info['val_loss']:.4f}  {info['chars_per_sec']:,.0f} chars/s in steps  "
                f"{info['elapsed']:.0f}s"
            )
        elif self.bar is None and now - self.last_line >= LOG_SECONDS:
            self.write(
                f"step {step:,}  epoch {info['epoch']:.2f}  train loss {info['train_loss']:.4f}  "
                f"{info['chars_per_sec']:,.0f} chars/s  {info['elapsed']:.0f}s{self.limits.left(step, info['elapsed'])}"
            )
        else:
            return
        self.last_line = now

    def message(self, text):
        if not self.quiet:
            tqdm.write(text, file=sys.stderr)

    def sample(self, text):
        self.write("---- sample ----\n" + text + "\n----------------")

    def write(self, text):
        if self.quiet:
            return
        try:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (| head): training goes on, its reports to nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.message("note: standard output was closed; training goes on and writes its checkpoints")

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclass
class Limits:
    """A run's limits as a progress line tells the time left: ``total_steps`` (or None) at the rate of this run's
    steps since ``first_step`` (``first_elapsed`` seconds trained then), and ``max_time`` seconds (or None)."""

    total_steps: int | None
    max_time: float | None
    first_step: int
    first_elapsed: float

    def left(self, step, elapsed):
        """", about 7:55 left" at ``step`` with ``elapsed`` seconds trained; "" with no limit to go by."""
        left = []
        if self.max_time is not None:
            left.append(self.max_time - elapsed)
        if self.total_steps is not None and step > self.first_step:
            left.append((self.total_steps - step) * (elapsed - self.first_elapsed) / (step - self.first_step))
        return f", about {tqdm.format_interval(max(min(left), 0))} left" if left else ""


def terminal_width(stream):
    """The width of the terminal ``stream`` writes to; 0 for one of no size (or no terminal)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, io.UnsupportedOperation):
        return 0


def resume_command(command, inputs, checkpoint_dir, default_dir, options=()):
    """The command line that continues a run: ``command`` (its words after charrnn) on ``inputs`` with
    ``options``, and its --checkpoint-dir unless it is the default."""
    where = ["--checkpoint-dir", checkpoint_dir] if checkpoint_dir != default_dir else []
    return shlex.join(["charrnn", *command, *inputs, *options, *where, "--resume"])


class ClassifyReporter(CommandReporter):
    """A line per evaluation on stdout (nothing when quiet); warnings on stderr."""

    def start(self, total_steps, info):
        if self.resuming(info):
            self._echo(self.resuming(info))
        self._echo(f"training {info['params']:,} parameters on {info['train']:,} texts, {info['labels']} labels "
                   f"(vocabulary {info['vocab']}, {info['batches_per_epoch']:,} batches per epoch, validation "
                   f"{info['valid']:,} texts, random seed {info['seed']})")

    def step(self, step, info):
        line = (f"step {step:,}  epoch {info['epoch']:.2f}  train loss {info['train_loss']:.4f}  "
                f"{info['examples_per_sec']:,.0f} texts/s  {info['elapsed']:.0f}s")
        if "val_loss" in info:
            line += (f"  val loss {info['val_loss']:.4f}  accuracy {info['val_accuracy']:.4f}  "
                     f"macro-F1 {info['val_macro_f1']:.4f}")
        if "val_exact_match" in info:
            line += f"  exact match {info['val_exact_match']:.4f}"
        self._echo(line)

    def message(self, text):
        if not self.quiet:
            click.echo(text, err=True)

    def _echo(self, text):
        if not self.quiet:
            click.echo(text)


def training_summary(train):
    """A checkpoint's training options in one line: optimizer, rate and schedule, batch, limits, engine,
    gradient clipping and the cosine schedule's final rate (a checkpoint from before those options:
    elementwise clipping, and 0)."""
    schedule = train.get("lr_schedule", "?")
    if train.get("warmup"):
        schedule += f" after {train['warmup']} warm-up steps"
    limits = [f"{train[k]:g} {unit}" for k, unit in (("max_steps", "steps"), ("max_epochs", "epochs"),
                                                      ("max_time", "s")) if train.get(k)]
    rise = ""
    if train.get("late_dropout"):
        start, end = train["late_dropout_epochs"]
        rise = f", dropout rising to {train['late_dropout']:g} (epochs {start:g}-{end:g})"
    clip = train.get("grad_clip")
    if not clip:
        clip = "none"
    elif train.get("clip_mode", "value") == "norm":
        clip = f"global L2 norm to {clip:g} (clip-mode norm)"
    else:
        clip = f"each element to [-{clip:g}, {clip:g}] (clip-mode value)"
    floor = f"; min lr {train.get('min_lr', 0.0):g}" if train.get("lr_schedule") == "cosine" else ""
    rate = train.get("learning_rate")
    rate = f"{rate:g}" if rate is not None else "at the rate tuned for it and the model"
    return (f"{train.get('optimizer')} {rate}, {schedule}, batch "
            f"{train.get('batch_size')} x {train.get('seq_length')}{rise}; limit {' or '.join(limits) or 'none'}; "
            f"engine {train.get('engine')}; gradient clip: {clip}{floor}")


def count(n, noun):
    """'1 step', '2,000 steps'."""
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


def print_summary(result, resume=None):
    """The table a finished or interrupted training run ends with; ``resume``: the command that goes on."""
    table = Table(title="training interrupted" if result.interrupted_by else "training finished", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # a path or command is folded, never cut short
    table.add_row("stopped by", result.stop_reason)
    table.add_row("steps", f"{result.step:,} (epoch {result.epoch:.2f})")
    if result.best_val_loss is not None:
        bits = result.best_val_loss / 0.6931471805599453
        table.add_row("best val loss", f"{result.best_val_loss:.4f} nats/char ({bits:.3f} bits/char)")
    table.add_row("time", f"{result.elapsed:.1f} s in this run, {result.chars_per_sec:,.0f} chars/s all told "
                          "(validation, checkpoints and start-up included)")
    table.add_row("checkpoints", result.checkpoint_dir)
    if result.interrupted_by and resume:
        table.add_row("to go on", resume)
    console().print(table)
