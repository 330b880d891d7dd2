"""Faults during training: non-finite steps are never applied, and a kill never leaves a bad checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn import CharRNN, ModelConfig, TrainConfig, load_checkpoint, train
from charrnn.runs import Reporter, TrainingError


class Messages(Reporter):
    def __init__(self):
        self.messages = []

    def message(self, text):
        self.messages.append(text)


def poison(monkeypatch, bad_calls, record_call):
    """Make the gradient of the given calls of loss_and_grads NaN; keep the parameters seen at call
    ``record_call`` (and at the call after the last bad one) in ``seen``."""
    real, calls, seen = CharRNN.loss_and_grads, [0], {}

    def loss_and_grads(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] in (record_call, max(bad_calls) + 1):
            seen[calls[0]] = self.params.flat.copy()
        loss, grads, state = real(self, *args, **kwargs)
        if calls[0] in bad_calls:
            grads.flat[3] = np.nan
        return loss, grads, state

    monkeypatch.setattr(CharRNN, "loss_and_grads", loss_and_grads)
    return seen


def tiny_config(tmp_path, **overrides):
    options = dict(batch_size=4, seq_length=8, eval_every=10, sample_length=0, checkpoint_dir=str(tmp_path / "ck"),
                   random_seed=0, max_time=None, optimizer="adam", learning_rate=0.01, lr_schedule="constant")
    return TrainConfig(**{**options, **overrides})


def test_non_finite_steps_restore_the_last_evaluated_model_and_halve_the_rate(tmp_path, small_text, monkeypatch):
    seen = poison(monkeypatch, bad_calls={12, 13}, record_call=11)  # call 11 starts from step 10's parameters
    reporter = Messages()
    result = train(small_text, ModelConfig(0, "gru", 16), tiny_config(tmp_path, max_steps=30), reporter=reporter)
    assert result.step == 30
    warnings = [m for m in reporter.messages if "non-finite" in m]
    assert len(warnings) == 2 and "restored the parameters of step 10" in warnings[0]
    np.testing.assert_array_equal(seen[14], seen[11])  # the step after the bad ones starts from step 10's model
    with open(tmp_path / "ck" / "metrics.jsonl") as f:
        rates = [json.loads(line)["learning_rate"] for line in f]
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(0.0025)
    reporter = Messages()  # resumed, the halvings still apply, and are said to
    train(small_text, None, tiny_config(tmp_path, max_steps=32), resume=str(tmp_path / "ck" / "latest.npz"),
          reporter=reporter)
    assert any("halved 2 times" in m and "goes on at 0.0025" in m for m in reporter.messages), reporter.messages


def test_repeated_non_finite_steps_stop_with_the_last_good_model_saved(tmp_path, small_text, monkeypatch):
    seen = poison(monkeypatch, bad_calls=set(range(12, 1000)), record_call=11)
    with pytest.raises(TrainingError, match="not finite 6 times in a row"):
        train(small_text, ModelConfig(0, "gru", 16), tiny_config(tmp_path, max_steps=100))
    saved = load_checkpoint(str(tmp_path / "ck" / "latest.npz"))
    assert saved.meta["step"] == 11
    np.testing.assert_array_equal(saved.model.params.flat, seen[11])


def test_a_rate_far_too_high_never_leaves_a_non_finite_weight_in_a_checkpoint(tmp_path, small_text):
    """--learning-rate 1e30: each step's gradient is finite but its update overflows the weights. Such an
    update is undone like a non-finite step, so six in a row stop the run with step 10's finite model (the
    good and bad steps alternated before, never six in a row, and NaN weights were saved as best.npz)."""
    reporter = Messages()
    with pytest.raises(TrainingError, match="update was not finite 6 times in a row"):
        train(small_text, ModelConfig(0, "gru", 16), tiny_config(tmp_path, max_steps=60, learning_rate=1e30,
                                                                   optimizer="sgd"), reporter=reporter)
    assert any("non-finite update" in m for m in reporter.messages)
    for name in ("latest.npz", "best.npz"):
        assert np.isfinite(load_checkpoint(str(tmp_path / "ck" / name)).model.params.flat).all(), name


def test_sigkill_at_any_moment_leaves_a_loadable_latest_checkpoint(tmp_path, small_text):
    """Kill training (checkpointing every step) at several moments; latest.npz always loads."""
    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", str(ck), "--hidden-size", "64",
           "--batch-size", "4", "--seq-length", "16", "--eval-every", "1", "--sample-length", "0", "--val-frac",
           "0.01", "-q", "--random-seed", "0"]
    rng = np.random.default_rng(0)
    steps = []
    metrics = ck / "metrics.jsonl"
    for attempt in range(4):
        records = metrics.read_text().count("\n") if attempt else 0
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []))
        deadline = time.time() + 60  # wait for this run's first checkpoint, then kill it at a random moment
        while (not metrics.exists() or metrics.read_text().count("\n") <= records) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        steps.append(load_checkpoint(str(ck / "latest.npz")).meta["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each resumed run went on from the last
    assert {f for f in os.listdir(ck) if f.endswith(".npz") and not f.startswith(".tmp-")} <= {"latest.npz", "best.npz"}
