"""`charrnn train` as users run it: train then sample and eval, the installed script, presets and flags, a fresh
run beside an earlier one, several corpora, bytes, what it prints (or not) and a closed output."""

import fcntl
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from charrnn import load_checkpoint
from charrnn.cli import report
from charrnn.models.gpt import CharGPT
from charrnn.training import loop

try:
    import pty
except ImportError:  # not POSIX
    pty = None


def test_train_sample_eval(tmp_path, small_text, cli, small_rnn):
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "40", *small_rnn, "--eval-every", "20",
                  "--sample-length", "40", "--random-seed", "3"])
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


@pytest.mark.slow
def test_installed_console_script(tmp_path, small_text, small_rnn):
    exe = shutil.which("charrnn")
    if exe is None:
        pytest.skip("charrnn is not installed as a console script")
    ck = str(tmp_path / "ck")
    train = subprocess.run([exe, "train", small_text, "--checkpoint-dir", ck, "--max-steps", "10", *small_rnn],
                           capture_output=True, text=True, timeout=120)
    assert train.returncode == 0, train.stderr
    sample = subprocess.run([sys.executable, "-m", "charrnn", "sample", ck, "--length", "50", "--random-seed", "2"],
                            capture_output=True, text=True, timeout=60)
    assert sample.returncode == 0 and len(sample.stdout) >= 50
    ev = subprocess.run([exe, "eval", ck, small_text, "--json"], capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0 and json.loads(ev.stdout)["chars"] > 0


@pytest.mark.slow
def test_train_sample_eval_info(tmp_path, small_text, cli, tiny_gpt):
    ck = str(tmp_path / "ck")
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "20", *tiny_gpt])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(ck)
    assert isinstance(ckpt.model, CharGPT) and ckpt.model.config.context_length == 16
    assert ckpt.hidden_state == ()
    records = [json.loads(line) for line in open(os.path.join(ck, "metrics.jsonl"))]
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20]
    sample = cli(["sample", ck, "--seed", "Romeo", "--length", "60", "--random-seed", "1", "--top-p", "0.9"])
    assert sample.exit_code == 0 and sample.output.startswith("Romeo") and len(sample.output) >= 65
    assert cli(["sample", ck, "--seed", "Romeo", "--length", "60", "--random-seed", "1", "--top-p", "0.9"]).output \
        == sample.output
    ev = json.loads(cli(["eval", ck, small_text, "--json"]).output)
    assert ev["chars"] == len(open(small_text).read())
    assert ev["loss"] < np.log(len(ckpt.vocab))
    info = cli(["info", ck])
    assert "num_heads" in info.output and "context_length" in info.output
    epoch, chunk = ckpt.meta["epoch"], ckpt.meta["chunk"]
    assert chunk > 0 and f"{epoch} complete, then {chunk} steps into the next" in info.output


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


def test_a_fresh_run_never_mixes_with_an_earlier_one(tmp_path, small_text, cli, small_rnn):
    ck = str(tmp_path / "ck")
    assert cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "20", *small_rnn]).exit_code == 0
    again = cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "20", *small_rnn])
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    assert load_checkpoint(ck).meta["step"] == 20  # untouched
    fresh = cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "10", "--overwrite", *small_rnn])
    assert fresh.exit_code == 0, fresh.output
    assert load_checkpoint(os.path.join(ck, "latest.npz")).meta["step"] == 10
    best = os.path.join(ck, "best.npz")
    assert not os.path.exists(best) or load_checkpoint(best).meta["step"] <= 10
    steps = [json.loads(line)["step"] for line in open(os.path.join(ck, "metrics.jsonl"))]
    assert steps == sorted(steps) and steps[-1] == 10  # the earlier run's records are gone


def test_short_corpus_trains_with_a_smaller_chunk(tmp_path, cli):
    corpus = tmp_path / "short.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 3)
    result = cli(["train", corpus, "--checkpoint-dir", str(tmp_path / "ck"), "--max-steps", "3",
                  "--hidden-size", "8", "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    assert "shorter than one chunk" in result.stderr


def test_bytes_mode_trains_on_binary(tmp_path, cli, tiny_rnn):
    corpus = tmp_path / "bin.dat"
    corpus.write_bytes(bytes(range(256)) * 40 + b"\xff\xfe\x00" * 100)
    ck = tmp_path / "ck"
    result = cli(["train", corpus, "--bytes", "--checkpoint-dir", str(ck), "--max-steps", "3",
                  *tiny_rnn])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(str(ck)).vocab.bytes_mode
    sample = cli(["sample", str(ck), "--length", "20"])
    assert sample.exit_code == 0


def test_train_on_files_and_a_directory_from_the_command_line(tmp_path, texts, cli):
    root, pieces = texts
    ck = tmp_path / "ck"
    tiny = ["--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "16",
            "--sample-length", "0", "--random-seed", "0", "--max-steps", "5"]
    (root / "sub" / "d.txt").write_text(pieces["a.txt"][::-1], encoding="utf-8")
    args = ["train", str(root / "b.txt"), str(root / "sub"), "--checkpoint-dir", str(ck), *tiny]
    result = cli(args)
    assert result.exit_code == 0, result.output
    files = [str(root / "b.txt"), str(root / "sub" / "c.txt"), str(root / "sub" / "d.txt")]
    assert load_checkpoint(str(ck)).meta["corpus"] == [os.path.abspath(f) for f in files]
    n_val = sum(int(len(p) * 0.1) for p in (pieces["b.txt"], pieces["sub/c.txt"], pieces["a.txt"]))
    assert f"validation {n_val:,}" in result.stdout and "corpus: 3 files" in result.stderr
    (cache,) = [ck / f for f in os.listdir(ck) if f.endswith(".ids.npy")]
    stamp = cache.stat().st_mtime_ns
    resumed = cli([*args, "--resume", "--max-steps", "8"])
    assert resumed.exit_code == 0, resumed.output
    assert cache.stat().st_mtime_ns == stamp  # unchanged files: the cache is reused
    (root / "sub" / "d.txt").write_text(pieces["a.txt"], encoding="utf-8")  # one file changes
    again = cli([*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert cache.stat().st_mtime_ns != stamp  # rebuilt
    missing = cli(["train", str(root / "b.txt"), str(root / "nope.txt")])
    assert missing.exit_code == 2 and len(missing.stderr.splitlines()) == 1
    assert "nope.txt" in missing.stderr and "does not exist" in missing.stderr


def test_a_checkpoint_directory_keeps_the_id_cache_of_its_corpus_alone(tmp_path, small_text, cli, tiny_rnn):
    """A run on another corpus in the same directory (--overwrite) leaves one cache, not one per corpus."""
    other = tmp_path / "other.txt"
    other.write_text(open(small_text, encoding="utf-8").read()[:5000])
    ck = tmp_path / "ck"
    for corpus in (small_text, other):
        result = cli(["train", corpus, "--checkpoint-dir", str(ck), "--max-steps", "2", "--overwrite", *tiny_rnn])
        assert result.exit_code == 0, result.output
    assert len([n for n in os.listdir(ck) if n.startswith("corpus-")]) == 2  # its .ids.npy and .json


def test_quiet_training_prints_nothing(tmp_path, small_text, cli):
    result = cli(["train", small_text, "--checkpoint-dir", str(tmp_path / "ck"), "--max-steps",
                  "5", "--hidden-size", "16", "-q"])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    noted = cli(["train", small_text, "--checkpoint-dir", str(tmp_path / "low"), "--max-steps", "2", "--hidden-size",
                 "16", "--dropout", "0.3", "--late-dropout", "0.1", "--sample-length", "0"])
    assert "note: --late-dropout 0.1 is below the model's dropout 0.3: dropout stays at 0.3" in noted.stderr
    info = cli(["info", str(tmp_path / "ck" / "latest.npz")]).stdout  # the run's training options too
    assert "adam 0.003, cosine, batch 32 x 100, dropout rising to 0.45 (epochs 4-16); limit 5 steps or 600 s" in info


@pytest.mark.slow
def test_training_goes_on_when_its_output_is_closed(tmp_path, small_text):
    """charrnn train ... | head -1: the reader leaves after the first line; training runs to its end (it used
    to stop silently with exit status 1 at its next report), saying so once on stderr."""
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", str(ck),
                             "--max-steps", "30", "--eval-every", "5", "--hidden-size", "16", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("training ")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "standard output was closed; training goes on" in err
    assert load_checkpoint(str(ck / "latest.npz")).meta["step"] == 30


def test_without_a_terminal_a_progress_line_comes_every_few_seconds_with_the_time_left(tmp_path, small_text, cli,
                                                                                       tiny_rnn, monkeypatch):
    """Output redirected: besides the evaluations' lines, a line at least every LOG_SECONDS (here 0.2 s) says
    where the run is, how fast it goes and how long it has left."""
    monkeypatch.setattr(report, "LOG_SECONDS", 0.2)
    result = cli(["train", small_text, "--checkpoint-dir", tmp_path / "ck", "--max-time", "1.2", "--eval-every",
                  "100000", "--workers", "1", *tiny_rnn])
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stdout.splitlines() if line.endswith(" left")]
    assert len(progress) >= 3, result.stdout
    assert all(re.fullmatch(r"step [\d,]+  epoch [\d.]+  train loss [\d.]+  [\d,]+ chars/s  \ds, about 00:0\d left",
                            line) for line in progress), progress


def run_in_terminal(args, columns):
    """Run ``args`` with stdout and stderr on a new pseudo-terminal ``columns`` wide (0: a terminal of no size, as
    some CI runners give); its exit status and what it wrote there."""
    master, slave = pty.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the command has exited and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.skipif(pty is None, reason="needs a POSIX pseudo-terminal")
def test_the_progress_bar_shows_seconds_trained_of_the_budget_and_chars_per_second(tmp_path, small_text, tiny_rnn):
    """On a time budget the bar reads "2/3 s trained ... chars/s=...", never tqdm's "1.05s/s"; a terminal of no
    width gets log lines instead of a bar."""
    args = [sys.executable, "-m", "charrnn", "train", small_text, "--max-time", "3", "--workers", "1", *tiny_rnn]
    code, shown = run_in_terminal([*args, "--checkpoint-dir", str(tmp_path / "bar")], columns=120)
    assert code == 0, shown
    assert re.search(r"\d/3 s trained, step=\d+, epoch=[\d.]+, loss=[\d.]+, .*chars/s=[\d,]+", shown), shown
    assert not re.search(r"\d(s|it|step)/s", shown), shown
    code, shown = run_in_terminal([*args, "--checkpoint-dir", str(tmp_path / "lines")], columns=0)
    assert code == 0, shown
    assert "s trained" not in shown and "%|" not in shown and "training finished" in shown, shown


@pytest.mark.slow
def test_a_time_budget_keeps_time_for_the_evaluation_it_ends_with(tmp_path, small_text, cli, tiny_rnn, monkeypatch):
    """--max-time 3 with evaluations of 1.5 s (a slow preview): the run ends its last evaluation by 3 s (and the
    checkpoints' writing), not 1.5 s after; its checkpoint counts the budget spent, so a resume is refused."""
    preview = loop.generate

    def slow_preview(*args, **kwargs):
        time.sleep(1.5)
        return preview(*args, **kwargs)

    monkeypatch.setattr(loop, "generate", slow_preview)
    ck = tmp_path / "ck"
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--max-time", "3", "--eval-every", "300",
                  "--workers", "1", *tiny_rnn, "--sample-length", "5"])
    assert result.exit_code == 0, result.output
    took = float(re.search(r"([\d.]+) s in this run", result.stdout).group(1))
    assert took < 4.2, result.stdout  # 3 s, a step and the checkpoints (the evaluation after the budget: 4.5 s or more)
    assert load_checkpoint(str(ck / "latest.npz")).meta["elapsed"] >= 3
    again = cli(["train", small_text, "--checkpoint-dir", ck, "--resume"])
    assert again.exit_code == 1 and "(max-time at step" in again.stderr


@pytest.fixture
def surnames(tmp_path, names):
    """The bundled surnames, one a line without their labels (real text): a training file, and a validation file
    with one character the training file lacks (``Ω``)."""
    def plain(path, out, extra=""):
        with open(path, encoding="utf-8") as f:
            out.write_text("".join(line.split(" ", 1)[1] for line in f) + extra, encoding="utf-8")
        return str(out)
    return plain(names.train, tmp_path / "train.txt"), plain(names.valid, tmp_path / "valid.txt", "Ωmega\n")


@pytest.mark.parametrize("kind", ["rnn", "gpt"])
def test_val_file_loss_is_what_eval_prints(tmp_path, cli, surnames, tiny_rnn, tiny_gpt, kind):
    """The validation loss of --val-file is charrnn eval's loss of the checkpoint on that file, exactly, also after
    --resume (which keeps the file); its characters are in the vocabulary and no tail is held out."""
    train, valid = surnames
    ck = str(tmp_path / "ck")
    options = ("--sample-length", "0", *(tiny_rnn if kind == "rnn" else tiny_gpt))
    result = cli(["train", train, "--val-file", valid, "--checkpoint-dir", ck, "--max-steps", "10",
                  "--eval-every", "5", *options])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(os.path.join(ck, "latest.npz"))
    assert ckpt.meta["train"]["val_files"] == [os.path.abspath(valid)] and ckpt.meta["train"]["val_frac"] == 0.0
    assert "Ω" in ckpt.vocab.symbols and "Ω" not in open(train, encoding="utf-8").read()
    for steps in (10, 20):
        if steps == 20:
            resumed = cli(["train", train, "--resume", "--checkpoint-dir", ck, "--max-steps", "20", "-q"])
            assert resumed.exit_code == 0, resumed.output
        records = [json.loads(line) for line in open(os.path.join(ck, "metrics.jsonl"))]
        assert records[-1]["step"] == steps
        ev = json.loads(cli(["eval", os.path.join(ck, "latest.npz"), valid, "--json"]).output)
        assert ev["oov_chars"] == 0 and ev["chars"] == len(open(valid, encoding="utf-8").read())
        assert records[-1]["val_loss"] == ev["loss"]


@pytest.mark.parametrize("content,message", [(b"", "the validation file is empty"),
                                             (b"Smith\n\xff\xfeJones\n", "not valid utf-8 at byte 6")])
def test_a_bad_val_file_is_one_line_and_clears_nothing(tmp_path, cli, surnames, tiny_rnn, content, message):
    train, _ = surnames
    ck = tmp_path / "ck"
    assert cli(["train", train, "--checkpoint-dir", ck, "--max-steps", "2", *tiny_rnn]).exit_code == 0
    before = (ck / "latest.npz").read_bytes()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    result = cli(["train", train, "--val-file", bad, "--checkpoint-dir", ck, "--max-steps", "2", "--overwrite",
                  *tiny_rnn])
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert (ck / "latest.npz").read_bytes() == before  # --overwrite cleared nothing


def test_resume_without_its_val_file_is_one_line(tmp_path, cli, surnames, tiny_rnn):
    train, valid = surnames
    ck = tmp_path / "ck"
    first = cli(["train", train, "--val-file", valid, "--checkpoint-dir", ck, "--max-steps", "2", *tiny_rnn])
    assert first.exit_code == 0, first.output
    os.remove(valid)
    result = cli(["train", train, "--resume", "--checkpoint-dir", ck, "--max-steps", "4"])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "cannot read this validation file" in result.stderr and os.path.basename(valid) in result.stderr
