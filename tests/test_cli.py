import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from resumecheck import assert_same_latest

from charrnn.evaluate import streams_nll
from charrnn.io.checkpoint import load_checkpoint
from charrnn.io.corpus import load_corpus

TINY = ["--hidden-size", "32", "--num-layers", "2", "--batch-size", "8", "--seq-length", "16",
        "--eval-every", "20", "--sample-length", "40", "--random-seed", "3"]


def test_train_sample_eval(tmp_path, small_text, cli):
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "40", *TINY])
    assert result.exit_code == 0, result.output
    assert "val loss" in result.output and "training finished" in result.output
    assert sorted(f for f in os.listdir(ck) if f.endswith(".npz") or f.endswith(".jsonl")) == [
        "best.npz", "latest.npz", "metrics.jsonl"]
    records = [json.loads(line) for line in open(os.path.join(ck, "metrics.jsonl"))]
    assert records[-1]["step"] == 40
    assert {"step", "epoch", "train_loss", "chars_per_sec", "elapsed"} <= set(records[0])
    assert [r["step"] for r in records if "val_loss" in r] == [20, 40]
    assert load_checkpoint(ck).meta["step"] in (20, 40)

    sample = cli(["sample", ck, "--seed", "Romeo", "--length", "100", "--random-seed", "1", "--temperature", "0.8"])
    assert sample.exit_code == 0
    assert sample.output.startswith("Romeo") and len(sample.output) >= 106
    again = cli(["sample", ck, "--seed", "Romeo", "--length", "100", "--random-seed", "1", "--temperature", "0.8"])
    assert again.output == sample.output

    ev = cli(["eval", ck, small_text, "--json"])
    assert ev.exit_code == 0
    figures = json.loads(ev.output)
    assert figures["chars"] == len(open(small_text).read())
    assert figures["bpc"] == pytest.approx(figures["loss"] / np.log(2))
    assert figures["perplexity"] == pytest.approx(np.exp(figures["loss"]))
    assert figures["loss"] < np.log(len(load_checkpoint(ck).vocab))  # learned something beyond uniform
    human = cli(["eval", ck, small_text])
    assert "bits/char" in human.output and "perplexity" in human.output


def test_installed_console_script(tmp_path, small_text):
    exe = shutil.which("charrnn")
    if exe is None:
        pytest.skip("charrnn is not installed as a console script")
    ck = str(tmp_path / "ck")
    train = subprocess.run([exe, "train", small_text, "--checkpoint-dir", ck, "--max-steps", "10", *TINY],
                           capture_output=True, text=True, timeout=120)
    assert train.returncode == 0, train.stderr
    sample = subprocess.run([sys.executable, "-m", "charrnn", "sample", ck, "--length", "50", "--random-seed", "2"],
                            capture_output=True, text=True, timeout=60)
    assert sample.returncode == 0 and len(sample.stdout) >= 50
    ev = subprocess.run([exe, "eval", ck, small_text, "--json"], capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0 and json.loads(ev.stdout)["chars"] > 0


@pytest.mark.parametrize("workers,extra", [("1", []), ("2", []), ("2", ["--average", "7"])])
def test_resume_is_bit_identical(tmp_path, small_text, workers, extra, cli):
    """2N steps in one run equal N steps, then N more after --resume (in one process, or on two workers;
    with a running average of the weights, the average and the weights training goes on from)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    opts = [*TINY, "--dropout", "0.1", "--optimizer", "adam", "--lr-schedule", "constant", "--workers", workers, *extra]
    assert cli(["train", small_text, "--checkpoint-dir", one, "--max-steps", "30", *opts]).exit_code == 0
    assert cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "15", *opts]).exit_code == 0
    resumed = cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "30", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    a = assert_same_latest(one, two, 30)
    assert any(key.startswith("iterate.") for key in a.optimizer_state) == bool(extra)


def test_resume_refuses_other_vocabulary(tmp_path, small_text, cli):
    ck = str(tmp_path / "ck")
    assert cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "5", *TINY]).exit_code == 0
    other = tmp_path / "other.txt"
    other.write_text("zzzz 12345 ~~~~ " * 500)
    result = cli(["train", str(other), "--checkpoint-dir", ck, "--resume"])
    assert result.exit_code == 1
    assert "vocabulary differs" in result.output


def test_help_for_every_command(cli):
    for command in ([], ["train"], ["sample"], ["eval"], ["info"], ["plot"]):
        result = cli([*command, "-h"])
        assert result.exit_code == 0 and "Example" in result.output


def test_preset_sets_options_and_explicit_flags_win(tmp_path, small_text, cli):
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--preset", "min-char-rnn", "--hidden-size", "24", "--checkpoint-dir", ck,
                  "--max-steps", "3", "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    meta = load_checkpoint(ck).meta
    assert meta["model"]["model"] == "rnn" and meta["model"]["hidden_size"] == 24  # the flag beats the preset
    assert meta["model"]["num_layers"] == 1 and meta["model"]["dropout"] == 0.0  # not the default recipe's
    assert meta["train"]["batch_size"] == 1 and meta["train"]["seq_length"] == 25
    assert meta["train"]["optimizer"] == "adagrad" and meta["train"]["learning_rate"] == 0.1
    assert meta["train"]["late_dropout"] is None


def test_halving_schedule_halves_then_stops(tmp_path, small_text, cli):
    """Mikolov's rule: a too-small improvement starts halving; the next one stops training."""
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--lr-schedule", "halving", "--learning-rate", "1e-7",
                  "--max-steps", "200", *TINY[:-2], "--eval-every", "5", "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    assert "converged" in result.output
    rates = [json.loads(line)["learning_rate"] for line in open(os.path.join(ck, "metrics.jsonl"))]
    assert rates[0] == pytest.approx(1e-7) and rates[-1] == pytest.approx(0.5e-7)


def test_a_fresh_run_never_mixes_with_an_earlier_one(tmp_path, small_text, cli):
    ck = str(tmp_path / "ck")
    assert cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "20", *TINY]).exit_code == 0
    again = cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "20", *TINY])
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    assert load_checkpoint(ck).meta["step"] == 20  # untouched
    fresh = cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "10", "--overwrite", *TINY])
    assert fresh.exit_code == 0, fresh.output
    assert load_checkpoint(os.path.join(ck, "latest.npz")).meta["step"] == 10
    best = os.path.join(ck, "best.npz")
    assert not os.path.exists(best) or load_checkpoint(best).meta["step"] <= 10
    steps = [json.loads(line)["step"] for line in open(os.path.join(ck, "metrics.jsonl"))]
    assert steps == sorted(steps) and steps[-1] == 10  # the earlier run's records are gone


def test_late_dropout_rises_between_its_epochs(tmp_path, small_text, cli):
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--max-epochs", "3", "--dropout", "0.1",
                  "--late-dropout", "0.5", "--late-dropout-epochs", "1", "2", *TINY[:-4], "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in open(os.path.join(ck, "metrics.jsonl"))]
    rates = [(r["epoch"], r["dropout"]) for r in records]
    assert all(d == pytest.approx(0.1) for e, d in rates if e <= 1.0)
    assert all(d == pytest.approx(0.5) for e, d in rates if e >= 2.05)
    middle = [d for e, d in rates if 1.1 < e < 1.9]
    assert middle and middle == sorted(middle) and 0.1 < middle[0] < middle[-1] < 0.5
    # a --dropout given without --late-dropout is kept as it is: the default recipe's rise is off
    kept = str(tmp_path / "kept")
    result = cli(["train", small_text, "--checkpoint-dir", kept, "--max-epochs", "1.5", "--dropout", "0.3",
                  "--late-dropout-epochs", "0", "1", *TINY[:-4], "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["dropout"] for line in open(os.path.join(kept, "metrics.jsonl"))} == {0.3}


def test_average_is_what_validation_and_checkpoints_hold(tmp_path, small_text, cli):
    """With --average, best.npz holds the averaged weights that gave the best validation loss (the
    training weights ride along), and resuming without averaging goes on from the training weights."""
    ck = str(tmp_path / "ck")
    opts = [*TINY, "--lr-schedule", "constant", "--workers", "1"]
    args = ["train", small_text, "--checkpoint-dir", ck, "--max-steps", "60", "--average", "20", *opts]
    assert cli(args).exit_code == 0
    best = load_checkpoint(os.path.join(ck, "best.npz"))
    corpus = load_corpus(small_text, ck)
    _, val_ids = corpus.split(0.1)
    nll, n = streams_nll(best.model, val_ids, 8, 16)
    assert nll / n == pytest.approx(best.meta["best_val_loss"], rel=1e-6)
    iterate = {k[len("iterate."):]: v for k, v in best.optimizer_state.items() if k.startswith("iterate.")}
    assert set(iterate) == set(best.model.params)
    assert not np.allclose(iterate["l0.W_hh"], best.model.params["l0.W_hh"])
    latest = load_checkpoint(os.path.join(ck, "latest.npz"))
    assert "running average over 20 steps" in cli(["info", ck]).output
    args = ["train", small_text, "--checkpoint-dir", ck, "--max-steps", "61", "--average", "0", "--resume"]
    assert cli(args).exit_code == 0
    went_on = load_checkpoint(os.path.join(ck, "latest.npz"))
    assert not any(k.startswith("iterate.") for k in went_on.optimizer_state)
    went = went_on.model.params["l0.W_hh"]
    from_iterate = np.linalg.norm(went - latest.optimizer_state["iterate.l0.W_hh"])
    assert 0 < from_iterate < np.linalg.norm(went - latest.model.params["l0.W_hh"]) / 3  # one step from the weights


@pytest.mark.parametrize("args,message", [
    (["sample", "{corpus}", "--top-k", "-3"],
     "Error: Invalid value for '--top-k': -3 is not in the range x>=1. (charrnn sample --help)"),
    (["eval", "{tmp}/nope", "{corpus}"],
     "Error: Invalid value for 'CHECKPOINT': Path '{tmp}/nope' does not exist. (charrnn eval --help)"),
    (["train", "{corpus}", "--no-such-option"], "Error: No such option '--no-such-option'. (charrnn train --help)"),
    (["--bogus"], "Error: No such option '--bogus'. (charrnn --help)"),
    (["smaple"], "Error: No such command 'smaple'. Did you mean 'sample'? (charrnn --help)"),
    (["classify", "train"], "Error: Missing argument 'FILE'. (charrnn classify train --help)"),
    (["classify", "predict", "{corpus}", "-", "-k", "0"],
     "Error: Invalid value for '-k': 0 is not in the range x>=1. (charrnn classify predict --help)"),
    (["classify", "nope"], "Error: No such command 'nope'. (charrnn classify --help)"),
    (["sample", "{corpus}", "--seed", "A", "--prime-file", "{corpus}"],  # raised by the command itself
     "Error: give --seed or --prime-file, not both (charrnn sample --help)"),
])
def test_usage_errors_are_one_line(tmp_path, small_text, args, message, cli):
    fill = {"corpus": small_text, "tmp": str(tmp_path)}
    result = cli([a.format(**fill) for a in args], prog_name="charrnn")
    assert result.exit_code == 2, result.output
    assert result.stderr == message.format(**fill) + "\n"
    assert result.stdout == ""
