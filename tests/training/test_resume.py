"""A resume that continues: Ctrl-C or a limit reached, then --resume, ends where the uninterrupted run would
have; what a resume refuses."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from resumecheck import assert_same_latest

from charrnn import load_checkpoint


@pytest.fixture(scope="module")
def resume_options(small_rnn):
    """A metrics line every 10 steps, no validation before step 400."""
    return (*small_rnn, "--eval-every", "400")


def records(ck):
    with open(os.path.join(ck, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def interrupt(cmd, ck, after_lines):
    """Run ``charrnn train`` and send it SIGINT once metrics.jsonl has ``after_lines`` lines."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(ck, "metrics.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and open(metrics).read().count("\n") >= after_lines:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # stopped by the signal, not by its limit
    return load_checkpoint(os.path.join(ck, "latest.npz"))


def train_cmd(corpus, ck, options, *args):
    return [sys.executable, "-m", "charrnn", "train", corpus, "--checkpoint-dir", ck, *options, *args]


@pytest.mark.slow
def test_ctrl_c_and_resume_is_bit_identical_to_one_run(tmp_path, small_text, resume_options):
    """Over the default cosine schedule, which spans the steps across the interruption."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    limit = ["--max-steps", "400", "--eval-every", "50"]
    done = subprocess.run(train_cmd(small_text, one, resume_options, *limit), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    stopped = interrupt(train_cmd(small_text, two, resume_options, *limit), two, after_lines=3)
    assert 10 <= stopped.meta["step"] < 400 and stopped.meta["elapsed"] > 0
    # the interruption left no trace: no extra validation (it would count towards --patience and the halving rule)
    validated = [r for r in records(two) if "val_loss" in r]
    assert all(r["step"] % 50 == 0 for r in validated)
    assert stopped.meta["last_val_loss"] == (validated[-1]["val_loss"] if validated else None)
    resume = [sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", two, "--resume"]
    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_latest(one, two, 400)
    rates_one = {r["step"]: r["learning_rate"] for r in records(one)}
    rates_two = {r["step"]: r["learning_rate"] for r in records(two)}  # both parts, appended
    assert len(rates_one) == 40 and {step: rates_two[step] for step in rates_one} == rates_one  # went on
    losses_one = {r["step"]: r["train_loss"] for r in records(one)}  # the mean since the last line, across
    losses_two = {r["step"]: r["train_loss"] for r in records(two)}  # the interruption too
    assert {step: losses_two[step] for step in losses_one} == losses_one


def test_a_run_resumed_from_an_evaluation_logs_the_same_losses(tmp_path, small_text, cli, resume_options):
    """A checkpoint written at an evaluation holds no training losses of the interval just logged (they were
    counted again in the resumed run's next line, now and then, in the test above)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = ["--lr-schedule", "constant", "--eval-every", "20"]
    assert cli(["train", small_text, "--checkpoint-dir", one, *resume_options, *common,
                                     "--max-steps", "60"]).exit_code == 0
    assert cli(["train", small_text, "--checkpoint-dir", two, *resume_options, *common,
                                     "--max-steps", "40"]).exit_code == 0
    assert cli(["train", small_text, "--checkpoint-dir", two, "--resume",
                                     "--max-steps", "60"]).exit_code == 0
    assert [r["train_loss"] for r in records(two)] == [r["train_loss"] for r in records(one)]


@pytest.mark.slow
def test_ctrl_c_and_resume_continue_the_time_budget_and_its_schedule(tmp_path, small_text, cli, resume_options):
    ck = str(tmp_path / "ck")
    budget = 4.0
    stopped = interrupt(train_cmd(small_text, ck, resume_options, "--max-time", str(budget)), ck, after_lines=3)
    trained = stopped.meta["elapsed"]
    assert 0 < trained < budget
    before = records(ck)
    began = time.perf_counter()
    resumed = cli(["train", small_text, "--checkpoint-dir", ck, "--resume"])
    took = time.perf_counter() - began
    assert resumed.exit_code == 0, resumed.output
    after = records(ck)[len(before):]
    assert stopped.meta["step"] < after[0]["step"] <= stopped.meta["step"] + 10 and after[0]["elapsed"] > trained
    # ends at the budget, counted across both runs (its last step, the final validation's time before it)
    assert budget - 1.0 < after[-1]["elapsed"] < budget + 1.0
    assert took < budget - trained + 3.0  # not a second full budget
    peak = before[0]["learning_rate"] / (0.5 * (1 + math.cos(math.pi * before[0]["elapsed"] / budget)))
    # the cosine goes on from where it stopped (the rate follows the time trained), not from its peak
    assert after[0]["learning_rate"] <= peak * 0.5 * (1 + math.cos(math.pi * trained / budget)) * 1.001
    assert after[0]["learning_rate"] < before[0]["learning_rate"]
    assert load_checkpoint(os.path.join(ck, "latest.npz")).meta["elapsed"] >= budget  # best.npz may be earlier


def test_a_finished_run_resumes_only_with_a_larger_limit(tmp_path, small_text, cli, resume_options):
    ck = str(tmp_path / "ck")
    args = ["train", small_text, "--checkpoint-dir", ck, *resume_options]
    assert cli([*args, "--max-steps", "20"]).exit_code == 0
    again = cli(["train", small_text, "--checkpoint-dir", ck, "--resume"])
    assert again.exit_code == 1
    assert "its run already reached its limit (max-steps at step 20" in again.stderr
    assert "--max-steps counts the whole run: give more than 20, e.g. --max-steps 40, to train 20 steps more" \
        in again.stderr
    longer = cli(["train", small_text, "--checkpoint-dir", ck, "--resume", "--max-steps", "30"])
    assert longer.exit_code == 0, longer.output
    assert load_checkpoint(ck).meta["step"] == 30


def test_a_time_limit_counts_the_whole_run_and_its_refusal_says_what_to_give(tmp_path, small_text, cli,
                                                                            resume_options):
    """--resume --max-time 30 means 30 s in all, not 30 s more: the refusal says so, with the figure to give."""
    ck = str(tmp_path / "ck")
    assert cli(["train", small_text, "--checkpoint-dir", ck, *resume_options, "--max-steps", "5"]).exit_code == 0
    trained = round(load_checkpoint(ck).meta["elapsed"])
    again = cli(["train", small_text, "--checkpoint-dir", ck, "--resume", "--max-steps", "100", "--max-time", "0.001"])
    assert again.exit_code == 1 and len(again.stderr.splitlines()) == 1
    assert (f"--max-time counts the whole run: give more than {trained}, e.g. --max-time {trained + 0.001:g}, to "
            "train 0.001 s more") in again.stderr
    assert "the run's total, so --resume" in " ".join(cli(["train", "-h"]).stdout.split())  # and in --help


def test_resume_refuses_what_it_would_ignore_and_a_run_out_of_patience(tmp_path, small_text, cli):
    """A model option or --preset given with --resume was silently ignored; a run stopped by --patience
    trained one more evaluation interval per resume. Each is refused in one line, the checkpoint intact."""
    ck = str(tmp_path / "ck")
    options = ["--checkpoint-dir", ck, "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4",
               "--seq-length", "8", "--sample-length", "0", "--random-seed", "0", "--eval-every", "2",
               "--lr-schedule", "constant", "--learning-rate", "3", "--optimizer", "sgd", "--max-steps", "200"]
    first = cli(["train", small_text, *options, "--patience", "1"])
    assert first.exit_code == 0 and "patience" in first.output, first.output
    before = open(os.path.join(ck, "latest.npz"), "rb").read()
    for extra, message in ((["--hidden-size", "32"], "--hidden-size 32: a resumed run keeps its model's (16)"),
                           (["--preset", "char-rnn"], "--preset sets up a new run"),
                           ([], "its run already reached its limit (patience: ")):
        result = cli(["train", small_text, "--checkpoint-dir", ck, "--resume", *extra])
        assert result.exit_code != 0 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert open(os.path.join(ck, "latest.npz"), "rb").read() == before
    step = load_checkpoint(os.path.join(ck, "latest.npz")).meta["step"]
    more = cli(["train", small_text, "--checkpoint-dir", ck, "--resume", "--patience", "50",
                                     "--max-steps", str(step + 2)])
    assert more.exit_code == 0, more.output


def test_resume_on_a_shorter_corpus_starts_its_next_pass(tmp_path, small_text, cli):
    """The saved data position is past the end of a corpus that has since shrunk (same characters):
    training goes on from the start of the next pass, not an IndexError."""
    text = open(small_text, encoding="utf-8").read()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text * 3, encoding="utf-8")  # 79 chunks of 64 x 16 per epoch
    ck = str(tmp_path / "ck")
    options = ["--checkpoint-dir", ck, "--hidden-size", "16", "--num-layers", "1", "--batch-size", "64",
               "--seq-length", "16", "--sample-length", "0", "--random-seed", "0", "--eval-every", "100"]
    result = cli(["train", str(corpus), "--max-steps", "40", *options])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(os.path.join(ck, "latest.npz")).meta["chunk"] == 40
    corpus.write_text(text, encoding="utf-8")  # 26 chunks per epoch now
    result = cli(["train", str(corpus), "--resume", "--max-steps", "45", *options])
    assert result.exit_code == 0 and result.exception is None, result.output
    meta = load_checkpoint(os.path.join(ck, "latest.npz")).meta
    assert (meta["step"], meta["epoch"], meta["chunk"]) == (45, 1, 5)


def test_resume_on_a_changed_corpus_warns(tmp_path, small_text, cli, resume_options):
    """Same characters, other text: the run goes on, with one warning line; an unchanged corpus gets none."""
    corpus = tmp_path / "corpus.txt"
    text = open(small_text, encoding="utf-8").read()
    corpus.write_text(text, encoding="utf-8")
    ck = str(tmp_path / "ck")
    args = ["train", str(corpus), "--checkpoint-dir", ck, *resume_options]
    assert cli([*args, "--max-steps", "5"]).exit_code == 0
    same = cli([*args, "--resume", "--max-steps", "10"])
    assert same.exit_code == 0, same.output
    assert "changed" not in same.stderr
    corpus.write_text("".join(reversed(text.splitlines(keepends=True))), encoding="utf-8")  # same size, too
    stat = corpus.stat()
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a second later, however coarse the clock
    changed = cli([*args, "--resume", "--max-steps", "15"])
    assert changed.exit_code == 0, changed.output
    warnings = [line for line in changed.stderr.splitlines() if "changed" in line]
    assert warnings == [f"warning: the corpus has changed since {ck}/latest.npz was written (its files' names, "
                        "sizes or modification times differ); training goes on from the saved position in the new "
                        "text"], changed.stderr
    assert load_checkpoint(os.path.join(ck, "latest.npz")).meta["step"] == 15


@pytest.mark.parametrize("workers,extra", [("1", []), pytest.param("2", [], marks=pytest.mark.slow),
                                           pytest.param("2", ["--average", "7"], marks=pytest.mark.slow)])
def test_resume_is_bit_identical(tmp_path, small_text, workers, extra, cli, small_rnn):
    """2N steps in one run equal N steps, then N more after --resume (in one process, or on two workers;
    with a running average of the weights, the average and the weights training goes on from)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    opts = [*small_rnn, "--eval-every", "20", "--dropout", "0.1", "--optimizer", "adam", "--lr-schedule", "constant",
            "--workers", workers, *extra]
    assert cli(["train", small_text, "--checkpoint-dir", one, "--max-steps", "30", *opts]).exit_code == 0
    assert cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "15", *opts]).exit_code == 0
    resumed = cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "30", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    a = assert_same_latest(one, two, 30)
    assert any(key.startswith("iterate.") for key in a.optimizer_state) == bool(extra)


def test_resume_refuses_other_vocabulary(tmp_path, small_text, cli, small_rnn):
    ck = str(tmp_path / "ck")
    assert cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "5", *small_rnn]).exit_code == 0
    other = tmp_path / "other.txt"
    other.write_text("zzzz 12345 ~~~~ " * 500)
    result = cli(["train", str(other), "--checkpoint-dir", ck, "--resume"])
    assert result.exit_code == 1
    assert "vocabulary differs" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_gpt_resume_is_bit_identical(tmp_path, small_text, workers, cli, tiny_gpt):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    opts = [*tiny_gpt, "--dropout", "0.1", "--lr-schedule", "constant", "--workers", workers]
    assert cli(["train", small_text, "--checkpoint-dir", one, "--max-steps", "20", *opts]).exit_code == 0
    assert cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "10", *opts]).exit_code == 0
    resumed = cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "20", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_latest(one, two, 20)


def test_resuming_as_another_model_is_a_one_line_error(tmp_path, small_text, cli, tiny_gpt):
    ck = str(tmp_path / "ck")
    assert cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "3", *tiny_gpt]).exit_code == 0
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--resume", "--model", "lstm"])
    assert result.exit_code == 1
    assert "cannot resume a gpt checkpoint as --model lstm" in result.output
