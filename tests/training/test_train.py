"""What training does, through the Python API and the command line: the learning-rate schedules, warmup, late
dropout, weight averaging, the non-finite guard, signals and kills, the memory preflight."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn import CharRNN, ModelConfig, TrainConfig, load_checkpoint, train
from charrnn.io.corpus import load_corpus
from charrnn.models.gpt import CharGPT
from charrnn.models.scoring import streams_nll
from charrnn.training.lifecycle import Reporter, TrainingError
from charrnn.training.presets import preset_configs


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


def test_halving_schedule_halves_then_stops(tmp_path, small_text, cli, small_rnn):
    """Mikolov's rule: a too-small improvement starts halving; the next one stops training."""
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--lr-schedule", "halving", "--learning-rate", "1e-7",
                  "--max-steps", "200", *small_rnn, "--eval-every", "5"])
    assert result.exit_code == 0, result.output
    assert "converged" in result.output
    rates = [json.loads(line)["learning_rate"] for line in open(os.path.join(ck, "metrics.jsonl"))]
    assert rates[0] == pytest.approx(1e-7) and rates[-1] == pytest.approx(0.5e-7)


@pytest.mark.slow
def test_late_dropout_rises_between_its_epochs(tmp_path, small_text, cli, small_rnn):
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--max-epochs", "3", "--dropout", "0.1",
                  "--late-dropout", "0.5", "--late-dropout-epochs", "1", "2", *small_rnn, "--eval-every", "20"])
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
                  "--late-dropout-epochs", "0", "1", *small_rnn, "--eval-every", "20"])
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["dropout"] for line in open(os.path.join(kept, "metrics.jsonl"))} == {0.3}


def test_average_is_what_validation_and_checkpoints_hold(tmp_path, small_text, cli, small_rnn):
    """With --average, best.npz holds the averaged weights that gave the best validation loss (the
    training weights ride along), and resuming without averaging goes on from the training weights."""
    ck = str(tmp_path / "ck")
    opts = [*small_rnn, "--eval-every", "20", "--lr-schedule", "constant", "--workers", "1"]
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


def test_python_api_trains_a_gpt(tmp_path, small_text):
    model_config, config = preset_configs(model="gpt", hidden_size=16, num_heads=2, num_layers=1, seq_length=16,
                                          batch_size=4, max_steps=6, eval_every=3, sample_length=0,
                                          checkpoint_dir=str(tmp_path / "ck"), random_seed=0)
    assert isinstance(config, TrainConfig)
    result = train(small_text, model_config, config, reporter=Reporter())
    assert result.step == 6 and result.best_val_loss is not None


def test_warmup_raises_the_rate_linearly_then_follows_the_schedule(tmp_path, small_text):
    model_config, config = preset_configs(model="gpt", hidden_size=16, num_heads=2, num_layers=1, seq_length=16,
                                          batch_size=4, max_steps=8, eval_every=8, log_every=1, sample_length=0,
                                          learning_rate=0.01, lr_schedule="constant", warmup=4,
                                          checkpoint_dir=str(tmp_path / "ck"), random_seed=0)
    train(small_text, model_config, config)
    rates = [json.loads(line)["learning_rate"] for line in open(tmp_path / "ck" / "metrics.jsonl")]
    assert rates == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01, 0.01])


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


def test_non_finite_steps_are_never_applied(tmp_path, small_text, monkeypatch):
    """The guard restores the last evaluated gpt model and halves the rate, as for the RNNs."""
    real, calls = CharGPT.loss_and_grads, [0]

    def loss_and_grads(self, *args, **kwargs):
        calls[0] += 1
        loss, grads, state = real(self, *args, **kwargs)
        if calls[0] == 7:
            grads.flat[5] = np.nan
        return loss, grads, state

    monkeypatch.setattr(CharGPT, "loss_and_grads", loss_and_grads)

    model_config, config = preset_configs(model="gpt", hidden_size=16, num_heads=2, num_layers=1, seq_length=16,
                                          batch_size=4, max_steps=10, eval_every=5, sample_length=0, workers=1,
                                          learning_rate=0.01, lr_schedule="constant", warmup=0,
                                          checkpoint_dir=str(tmp_path / "ck"), random_seed=0)
    reporter = Messages()
    result = train(small_text, model_config, config, reporter=reporter)
    assert result.step == 10
    assert any("restored the parameters of step 5" in m for m in reporter.messages)
    assert np.isfinite(load_checkpoint(str(tmp_path / "ck")).model.params.flat).all()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_and_saves(tmp_path, small_text, sig, code, tiny_rnn):
    ck = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", str(ck), "--max-steps", "100000",
         "--eval-every", "100000", *tiny_rnn],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    metrics = ck / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "training interrupted" in out
    assert "stopping after this step" in err
    ckpt = load_checkpoint(str(ck / "latest.npz"))
    assert ckpt.meta["step"] >= 20


@pytest.mark.slow
def test_a_second_signal_stops_at_once_during_a_long_validation(tmp_path, small_text):
    """A validation pass can take minutes: the first Ctrl-C waits for it (and says so), a second one exits
    at once (130) with the checkpoints last written intact (it was ignored until the pass ended)."""
    ck = tmp_path / "ck"
    text = tmp_path / "big.txt"
    text.write_text(open(small_text, encoding="utf-8").read() * 15, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", str(text), "--checkpoint-dir", str(ck), "--max-steps", "100000",
         "--eval-every", "2", "--val-frac", "0.5", "--hidden-size", "256", "--batch-size", "4", "--seq-length", "8",
         "--sample-length", "0", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (ck / "latest.npz").exists():  # the first validation has ended
        time.sleep(0.05)
    time.sleep(0.3)  # into the next validation (two steps take a few ms, a validation seconds)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    start = time.time()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - start < 2.0, err
    assert "Traceback" not in err and "stopping after this step" in err
    assert load_checkpoint(str(ck / "latest.npz")).meta["step"] >= 2


@pytest.mark.slow
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


def test_a_model_too_large_for_memory_is_one_line(tmp_path, small_text, cli, monkeypatch, tiny_rnn):
    """numpy's MemoryError (here from the first big allocation, as --hidden-size 1000000 raises it after
    filling 1.7 GB) is a one-line error, not a traceback."""
    def no_memory(n, rng):
        return np.empty((n, n, 10**12))  # 8e12 * n * n bytes: no machine has them
    monkeypatch.setattr("charrnn.nn.layers.orthogonal", no_memory)
    result = cli(["train", small_text, "--checkpoint-dir", str(tmp_path / "ck"), "--workers", "1", *tiny_rnn])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stderr.startswith("Error: not enough memory: Unable to allocate")
    assert result.stderr.count("\n") == 1


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="free memory is read from Linux's /proc/meminfo")
@pytest.mark.parametrize("args", [["--hidden-size", "200000"],  # 8.6 TB of parameters and optimizer state
                                  ["--model", "gpt", "--hidden-size", "32", "--num-heads", "2", "--seq-length",
                                   "100000"]])  # 2.5 TB of attention weights a step
def test_a_model_that_cannot_fit_is_refused_before_anything_is_touched(tmp_path, small_text, trained, cli, args):
    """Refused in one line before the corpus is read or --overwrite clears the previous model (it used to
    be killed by the kernel, or fail in a worker after writing a step-0 checkpoint)."""
    before = (trained / "latest.npz").read_bytes()
    result = cli(["train", small_text, "--checkpoint-dir", str(trained), "--overwrite", "--max-steps", "1", *args])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "needs at least" in result.stderr and "GB free here" in result.stderr
    assert (trained / "latest.npz").read_bytes() == before


def test_sparse_embedding_is_exact_for_adagrad_without_decay(tmp_path, small_text, cli, small_rnn):
    """--sparse-embedding updates only the input table's rows each step reads: with Adagrad and no weight decay
    the same model as without it, bit for bit (on two worker processes)."""
    def run(name, *options):
        ck = tmp_path / name
        result = cli(["train", small_text, "--checkpoint-dir", ck, *small_rnn, "--max-steps", "6", "--eval-every",
                      "6", "--workers", "2", "--optimizer", "adagrad", "--weight-decay", "0", *options])
        assert result.exit_code == 0, result.output
        return load_checkpoint(str(ck / "latest.npz")).model.params

    np.testing.assert_array_equal(run("dense").flat, run("sparse", "--sparse-embedding").flat)
