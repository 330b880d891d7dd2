"""The run lifecycle (training/lifecycle.py) as both trainers show it through the CLI: ``charrnn train`` and ``charrnn
classify train`` stop on a signal, refuse a spent resume and log alike."""

import json
import os
import shlex
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn import CharRNN
from charrnn.classify.model import Classifier
from charrnn.cli import main

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")
NAMES = os.path.join(DATA, "names.train.txt")
SHAKESPEARE = os.path.join(DATA, "shakespeare.txt")
TRAINERS = {  # the command, its corpus, its model class and tiny options
    "lm": (["train"], SHAKESPEARE, CharRNN, ["--model", "gru", "--hidden-size", "16", "--batch-size", "4",
                                               "--seq-length", "8", "--sample-length", "0", "--workers", "1"]),
    "classifier": (["classify", "train"], NAMES, Classifier, ["--hidden-size", "16", "--valid-frac", "0.1"]),
}


def run(trainer, tmp_path, *args):
    command, corpus, _, options = TRAINERS[trainer]
    tmp_path.mkdir(exist_ok=True)
    text = tmp_path / "corpus.txt"
    if not text.exists():
        with open(corpus, encoding="utf-8") as f:
            text.write_text(f.read(30_000), encoding="utf-8")
    args = [*command, text, "--checkpoint-dir", tmp_path / "ck", "--random-seed", "1", *options, *args]
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def interrupted_run(trainer, tmp_path, monkeypatch):
    """A run of ``trainer`` that gets a SIGINT during its fourth step (eval every 5): its result and meta."""
    model_class = TRAINERS[trainer][2]
    real, calls = model_class.loss_and_grads, [0]

    def loss_and_grads(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:
            signal.raise_signal(signal.SIGINT)
        return real(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(model_class, "loss_and_grads", loss_and_grads)
        result = run(trainer, tmp_path, "--max-steps", "20", "--eval-every", "5")
    return result, json.loads(str(np.load(tmp_path / "ck" / "latest.npz")["meta"]))


def test_a_signal_ends_the_step_saves_latest_and_adds_nothing_to_the_log_in_both_trainers(tmp_path, monkeypatch):
    """The first Ctrl-C is announced, the step under way ends, latest.npz holds it with the loss sums; no
    extra evaluation or record (the classifier evaluated and logged, and said nothing)."""
    for trainer in TRAINERS:
        result, meta = interrupted_run(trainer, tmp_path / trainer, monkeypatch)
        assert result.exit_code == 130, (trainer, result.output)
        assert "stopping after this step, with latest.npz saved" in result.output, trainer
        assert (meta["step"], meta["loss_count"]) == (4, 4), trainer
        with open(tmp_path / trainer / "ck" / "metrics.jsonl") as f:
            assert f.read() == "", trainer


def test_an_interrupted_run_says_how_to_go_on_and_the_resumed_run_where_it_starts_in_both_trainers(
        tmp_path, monkeypatch):
    """Ctrl-C's note and the summary name the command that continues the run; that command, run, says it resumes."""
    for trainer in TRAINERS:
        result, meta = interrupted_run(trainer, tmp_path / trainer, monkeypatch)
        command = shlex.join(["charrnn", *TRAINERS[trainer][0], str(tmp_path / trainer / "corpus.txt"),
                              "--checkpoint-dir", str(tmp_path / trainer / "ck"), "--resume"])
        assert f"to go on later: {command}" in result.stderr, (trainer, result.stderr)
        assert command in result.stdout, (trainer, result.stdout)
        resumed = CliRunner().invoke(main, [*shlex.split(command)[1:], "--max-steps", "6"], catch_exceptions=False)
        assert resumed.exit_code == 0, (trainer, resumed.output)
        assert resumed.stdout.startswith(f"resuming from step 4, {meta['elapsed']:.0f} s trained\n"), trainer


def test_a_resume_at_a_spent_limit_is_refused_alike_by_both_trainers(tmp_path):
    messages = {}
    for trainer in TRAINERS:
        assert run(trainer, tmp_path / trainer, "--max-steps", "3", "--eval-every", "5").exit_code == 0
        before = (tmp_path / trainer / "ck" / "latest.npz").read_bytes()
        result = run(trainer, tmp_path / trainer, "--max-steps", "3", "--resume")
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert (tmp_path / trainer / "ck" / "latest.npz").read_bytes() == before
        messages[trainer] = result.output.split("latest.npz: ")[1]
    assert messages["lm"] == messages["classifier"]
    assert messages["lm"].startswith("its run already reached its limit (max-steps at step 3, 0 s trained); "
                                     "--max-steps counts the whole run: give more than 3, e.g. --max-steps 6, to "
                                     "train 3 steps more")


def test_both_trainers_carry_the_time_trained_across_a_resume(tmp_path):
    """Both checkpoints hold the seconds trained in all runs, and a resumed run's records count on from them."""
    for trainer in TRAINERS:
        directory = tmp_path / trainer
        assert run(trainer, directory, "--max-steps", "5", "--eval-every", "5").exit_code == 0
        first = json.loads(str(np.load(directory / "ck" / "latest.npz")["meta"]))["elapsed"]
        assert run(trainer, directory, "--max-steps", "10", "--resume").exit_code == 0
        with open(directory / "ck" / "metrics.jsonl") as f:
            logged = [json.loads(line) for line in f]
        assert [r["step"] for r in logged] == [5, 10], trainer
        assert logged[0]["elapsed"] == pytest.approx(first, abs=1e-3) and logged[1]["elapsed"] > first, trainer
