"""Learning-rate schedules.

    constant     the base rate throughout
    cosine       from the base rate down to ``min_lr`` (0 unless set) along a half cosine over the run's
                 budget: its steps or epochs if --max-steps / --max-epochs is set, else its --max-time
    exponential  char-rnn's rule: multiply by ``decay`` after every epoch past ``decay_after``
    halving      Mikolov's RNNLM rule: once an evaluation improves validation loss by less than
                 ``MIN_IMPROVEMENT`` (relative), halve the rate at every evaluation; when an evaluation
                 after that improves by less again, stop

Any schedule can start with a linear warm-up over ``warmup`` steps (``warmup_factor``: the rate of step s,
counting from 0, times (s + 1) / warmup), as Transformers are usually trained. The non-finite-loss guard and the
halving rule multiply a persistent ``scale`` (kept in checkpoints).
"""

import math

SCHEDULES = ("constant", "cosine", "exponential", "halving")
MIN_IMPROVEMENT = 0.003


def check_min_lr(min_lr, learning_rate):
    """Raise ValueError, in one line, unless 0 <= ``min_lr`` <= ``learning_rate`` (None: not known yet)."""
    if not min_lr >= 0:
        raise ValueError(f"min-lr must be at least 0, not {min_lr}")
    if learning_rate is not None and min_lr > learning_rate:
        raise ValueError(f"min-lr {min_lr:g} is above the learning rate {learning_rate:g}: the cosine schedule "
                         "decays from the learning rate down to min-lr")


def budget_progress(config, step, epoch, elapsed):
    """How far through its budget a run is, in [0, 1]: by steps or epochs if limited, else by time."""
    fractions = []
    if config.max_steps:
        fractions.append(step / config.max_steps)
    if config.max_epochs:
        fractions.append(epoch / config.max_epochs)
    if budget_by_time(config):
        fractions.append(elapsed / config.max_time)
    return min(1.0, max(fractions, default=0.0))


def budget_by_time(config):
    """Whether ``budget_progress`` follows the seconds trained: --max-time with no step or epoch limit."""
    return bool(config.max_time) and not config.max_steps and not config.max_epochs


def warmup_factor(warmup, step):
    """The warm-up's share of the rate at ``step`` (counting from 0): (step + 1) / warmup, then 1."""
    return (step + 1) / warmup if warmup and step < warmup else 1.0


def learning_rate(config, base, scale, progress, epoch):
    """The rate for the next step."""
    if config.lr_schedule == "cosine":  # with min_lr 0, exactly base * scale * 0.5 * (1 + cos)
        floor = config.min_lr
        return (base - floor) * scale * 0.5 * (1 + math.cos(math.pi * progress)) + floor * scale
    if config.lr_schedule == "exponential":
        return base * scale * config.lr_decay ** max(0, math.floor(epoch) - config.lr_decay_after)
    return base * scale


def halving_decision(previous_val, val, halving):
    """Mikolov's rule after an evaluation: returns (halve now, stop now)."""
    if previous_val is None or val is None:
        return False, False
    improved_enough = val < previous_val * (1 - MIN_IMPROVEMENT)
    if improved_enough:
        return halving, False
    return (not halving), halving
