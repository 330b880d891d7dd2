"""``charrnn classify train`` through the run lifecycle it shares with ``charrnn train`` (training/lifecycle.py): a
resume continues the time budget, the schedule and the training-loss sums; a non-finite step restores the last
evaluated weights and halves the rate. On the shipped names data, tiny models, through the CLI."""

import json
import math
import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.classify.model import Classifier
from charrnn.classify.predict import load_classifier
from charrnn.cli import main

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")
TRAIN, VALID = (os.path.join(DATA, f"names.{s}.txt") for s in ("train", "valid"))
TIMING = ("elapsed", "examples_per_sec")  # the only fields of a record that may differ between equal runs


def classify(*args):
    return CliRunner().invoke(main, ["classify", "train", *map(str, args)], catch_exceptions=False)


def head(path, n, out):
    with open(path, encoding="utf-8") as f:
        out.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    return str(out)


def records(directory):
    with open(os.path.join(directory, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def meta(path):
    return json.loads(str(np.load(path)["meta"]))


def hook(monkeypatch, on_call):
    """Wrap Classifier.loss_and_grads: ``on_call(n, model, loss, grads)`` after its n-th call (from 1)."""
    real, calls = Classifier.loss_and_grads, [0]

    def loss_and_grads(self, *args, **kwargs):
        calls[0] += 1
        before = self.params.flat.copy()
        loss, grads = real(self, *args, **kwargs)
        on_call(calls[0], before, grads)
        return loss, grads

    monkeypatch.setattr(Classifier, "loss_and_grads", loss_and_grads)


@pytest.fixture
def names(tmp_path):
    return head(TRAIN, 300, tmp_path / "train.txt")


def test_resume_continues_the_time_budget_and_the_schedule(tmp_path, names):
    """--max-time counts the time trained before a resume, and a time-based cosine schedule goes on from
    where it was (both restarted from zero)."""
    ck = tmp_path / "ck"
    args = ["--valid", VALID, "--hidden-size", "16", "--eval-every", "2", "--random-seed", "1", "--checkpoint-dir", ck,
            "--patience", "100000"]  # the budget alone stops it
    result = classify(names, "--max-time", "1", "--lr-schedule", "cosine", "--learning-rate", "0.004", *args)
    assert result.exit_code == 0, result.output
    trained = meta(ck / "latest.npz")["elapsed"]
    assert trained >= 1
    first_run = len(records(ck))
    # a budget already spent: refused in one line, the run intact
    result = classify(names, "--max-time", "0.5", "--resume", *args)
    assert result.exit_code == 1 and "already reached its limit (max-time at step" in result.output, result.output
    result = classify(names, "--max-time", str(trained + 1), "--resume", *args)
    assert result.exit_code == 0, result.output
    resumed = records(ck)[first_run:]
    assert resumed and all(r["elapsed"] > trained for r in resumed), (trained, resumed)
    for r in resumed:  # cosine over the whole budget: at least `trained` seconds of it are gone
        assert r["learning_rate"] <= 0.004 * 0.5 * (1 + math.cos(math.pi * trained / (trained + 1))) + 1e-12
    assert meta(ck / "latest.npz")["elapsed"] >= trained + 1


def test_an_interrupted_and_resumed_run_logs_what_the_uninterrupted_run_logs(tmp_path, names, monkeypatch):
    """An interruption saves latest.npz with the training-loss sums since the last record and leaves no
    trace in the log (no extra evaluation), so the resumed run's records, means included, are the
    uninterrupted run's."""
    once, twice = tmp_path / "once", tmp_path / "twice"
    args = ["--valid", VALID, "--hidden-size", "16", "--eval-every", "5", "--max-steps", "12", "--random-seed", "2",
            "--dropout", "0.2", "--char-dropout", "0.1"]
    assert classify(names, "--checkpoint-dir", once, *args).exit_code == 0

    def interrupt(call, params, grads):
        if call == 7:  # step 7 ends, then the run: two losses counted since step 5's record
            signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as m:
        hook(m, interrupt)
        result = classify(names, "--checkpoint-dir", twice, *args)
    assert result.exit_code == 130, result.output
    saved = meta(twice / "latest.npz")
    assert saved["step"] == 7 and saved["loss_count"] == 2
    assert [r["step"] for r in records(twice)] == [5]
    result = classify(names, "--checkpoint-dir", twice, "--resume", *args)
    assert result.exit_code == 0, result.output

    def untimed(directory):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in records(directory)]

    assert untimed(twice) == untimed(once)
    a, b = (load_classifier(str(d / "latest.npz"))[0].model.params.flat for d in (once, twice))
    np.testing.assert_array_equal(a, b)


def poison(monkeypatch, bad_calls, record_calls):
    """Make the gradients of ``bad_calls`` NaN; keep the parameters each of ``record_calls`` started from."""
    seen = {}

    def on_call(call, params, grads):
        if call in record_calls:
            seen[call] = params
        if call in bad_calls:
            grads.flat[3] = np.nan

    hook(monkeypatch, on_call)
    return seen


ARGS = ["--valid", VALID, "--hidden-size", "16", "--eval-every", "5", "--random-seed", "0", "--lr-schedule",
        "constant", "--learning-rate", "0.01"]


def test_a_non_finite_step_restores_the_last_evaluated_weights_and_halves_the_rate(tmp_path, names, monkeypatch):
    """As charrnn train (tests/test_faults.py): the bad steps are not applied nor counted, the next step
    starts from step 5's (the last evaluation's) weights, and each bad step halves the rate."""
    seen = poison(monkeypatch, bad_calls={8, 9}, record_calls={6, 10})  # call 6 starts from step 5's weights
    result = classify(names, "--max-steps", "12", "--checkpoint-dir", tmp_path / "ck", *ARGS)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "non-finite" in line]
    assert len(warnings) == 2 and all("restored the parameters of step 5" in w for w in warnings), warnings
    assert "non-finite loss at step 7" in warnings[0] and "halved the learning rate to 0.005" in warnings[0]
    np.testing.assert_array_equal(seen[10], seen[6])
    logged = records(tmp_path / "ck")
    assert [r["step"] for r in logged] == [5, 10, 12]
    assert logged[0]["learning_rate"] == pytest.approx(0.01) and logged[-1]["learning_rate"] == pytest.approx(0.0025)
    assert meta(tmp_path / "ck" / "latest.npz")["lr_scale"] == 0.25  # a resume goes on at the halved rate


def test_repeated_non_finite_steps_stop_with_the_last_good_model_saved(tmp_path, names, monkeypatch):
    seen = poison(monkeypatch, bad_calls=set(range(8, 1000)), record_calls={6})
    result = classify(names, "--max-steps", "100", "--checkpoint-dir", tmp_path / "ck", *ARGS)
    assert result.exit_code == 1 and "not finite 6 times in a row" in result.output, result.output
    assert "model of step 5 in latest.npz" in result.output
    saved = load_classifier(str(tmp_path / "ck" / "latest.npz"))[0]
    np.testing.assert_array_equal(saved.model.params.flat, seen[6])
