"""Every error a user can cause: a one-line message, non-zero exit, no traceback, nothing overwritten."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn.io.checkpoint import load_checkpoint

TINY = ["--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "8",
        "--sample-length", "0", "--random-seed", "0"]


@pytest.fixture
def trained(tmp_path, small_text, cli):
    ck = tmp_path / "ck"
    result = cli(["train", small_text, "--checkpoint-dir", str(ck), "--max-steps", "5", *TINY])
    assert result.exit_code == 0, result.output
    return ck


def write(path, content, mode="w"):
    with open(path, mode) as f:
        f.write(content)
    return str(path)


def corrupt_checkpoint(tmp_path, trained, kind):
    good = (trained / "latest.npz").read_bytes()
    path = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif kind == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    elif kind == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif kind in ("future", "foreign", "pickled", "iterate"):
        with np.load(trained / "latest.npz") as npz:
            arrays = dict(npz)
        meta = json.loads(str(arrays["meta"]))
        if kind == "future":
            meta["version"] = 1000
        if kind == "foreign":
            meta["format"] = "something-else"
        arrays["meta"] = np.array(json.dumps(meta))
        if kind == "pickled":
            arrays["param/W_hy"] = np.array([{"evil": 1}], dtype=object)
        if kind == "iterate":  # --average's training weights, one of the wrong shape
            arrays.update({"opt/iterate." + k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")})
            arrays["opt/iterate.W_hy"] = arrays["opt/iterate.W_hy"][:, :-1]
        np.savez(path, **arrays)
    return str(path)


# (name, how to build the command line, the message expected on stderr)
CASES = [
    ("missing corpus", lambda t, s, c: ["train", str(t / "nope.txt")], "does not exist"),
    ("a file given twice", lambda t, s, c: ["train", s, s], "given twice"),
    ("directory without text", lambda t, s, c: ["train", str(t / "emptydir")], "no text files in this directory"),
    ("empty corpus", lambda t, s, c: ["train", write(t / "e.txt", "")], "empty"),
    ("one distinct character", lambda t, s, c: ["train", write(t / "a.txt", "a" * 5000)], "only one distinct"),
    ("invalid utf-8", lambda t, s, c: ["train", write(t / "b.txt", b"abc\n" * 100 + b"\xff\xfe" + b"x" * 99, "wb")],
     "byte 400; use --bytes"),
    ("checkpoint dir is a file", lambda t, s, c: ["train", s, "--checkpoint-dir", write(t / "f", "x") + "/sub"],
     "cannot create the checkpoint directory"),
    ("unknown encoding", lambda t, s, c: ["train", s, "--encoding", "klingon-8"], "unknown encoding 'klingon-8'"),
    ("negative hidden size", lambda t, s, c: ["train", s, "--hidden-size", "-3"], "hidden-size"),
    ("negative random seed", lambda t, s, c: ["train", s, "--random-seed", "-1"], "'--random-seed': -1 is not in"),
    ("zero batch size", lambda t, s, c: ["train", s, "--batch-size", "0"], "batch-size"),
    ("val-frac of 1", lambda t, s, c: ["train", s, "--val-frac", "1"], "val-frac"),
    ("unknown model", lambda t, s, c: ["train", s, "--model", "transformer"], "--model"),
    ("resume without checkpoint", lambda t, s, c: ["train", s, "--checkpoint-dir", str(t / "new"), "--resume"],
     "no such file"),
    ("train over a trained model", lambda t, s, c: ["train", s, "--checkpoint-dir", str(c)], "already holds a trained"),
    ("negative temperature", lambda t, s, c: ["sample", str(c), "--temperature", "-1"], "temperature"),
    ("zero length", lambda t, s, c: ["sample", str(c), "--length", "0"], "length"),
    ("seed outside vocabulary", lambda t, s, c: ["sample", str(c), "--seed", "Romeo ☃"], "'☃'"),
    ("sample missing checkpoint", lambda t, s, c: ["sample", str(t / "none.npz")], "does not exist"),
    ("empty checkpoint dir", lambda t, s, c: ["sample", str(t / "emptydir")], "no best.npz or latest.npz"),
    ("truncated checkpoint", lambda t, s, c: ["sample", corrupt_checkpoint(t, c, "truncated")], "truncated"),
    ("corrupt checkpoint", lambda t, s, c: ["eval", corrupt_checkpoint(t, c, "garbage"), s], "checkpoint"),
    ("text file as checkpoint", lambda t, s, c: ["info", corrupt_checkpoint(t, c, "text")], "not a charrnn checkpoint"),
    ("future checkpoint", lambda t, s, c: ["sample", corrupt_checkpoint(t, c, "future")], "newer than this charrnn"),
    ("foreign npz", lambda t, s, c: ["sample", corrupt_checkpoint(t, c, "foreign")], "not a charrnn checkpoint"),
    ("pickled arrays", lambda t, s, c: ["sample", corrupt_checkpoint(t, c, "pickled")], "pickled"),
    ("resume with broken averaging state", lambda t, s, c: ["train", s, "--checkpoint-dir", str(t / "r"), "--resume",
     corrupt_checkpoint(t, c, "iterate")], "inconsistent checkpoint (parameter W_hy is float32(16, "),
    ("eval missing file", lambda t, s, c: ["eval", str(c), str(t / "nope.txt")], "does not exist"),
    ("eval empty file", lambda t, s, c: ["eval", str(c), write(t / "none.txt", "")], "nothing to score"),
    ("eval only unknown characters", lambda t, s, c: ["eval", str(c), write(t / "cjk.txt", "汉字汉字")],
     "all 4 of its characters are outside the vocabulary"),
    ("eval invalid utf-8", lambda t, s, c: ["eval", str(c), write(t / "bad.txt", b"ab\xffcd", "wb")],
     "not valid utf-8 at byte 2; this model reads utf-8 text"),
]


@pytest.mark.parametrize("name,args,message", CASES, ids=[c[0] for c in CASES])
def test_user_error(tmp_path, small_text, trained, name, args, message, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)  # the default --checkpoint-dir is relative
    (tmp_path / "emptydir").mkdir()
    before = {p: (trained / p).read_bytes() for p in os.listdir(trained)}
    result = cli(args(tmp_path, small_text, trained))
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "Usage:" not in result.stderr and "Try " not in result.stderr, result.stderr  # one line, not click's three
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert {p: (trained / p).read_bytes() for p in os.listdir(trained)} == before  # nothing overwritten


def test_short_corpus_trains_with_a_smaller_chunk(tmp_path, cli):
    corpus = write(tmp_path / "short.txt", "to be or not to be, that is the question\n" * 3)
    result = cli(["train", corpus, "--checkpoint-dir", str(tmp_path / "ck"), "--max-steps", "3",
                  "--hidden-size", "8", "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    assert "shorter than one chunk" in result.stderr


def test_bytes_mode_trains_on_binary(tmp_path, cli):
    corpus = write(tmp_path / "bin.dat", bytes(range(256)) * 40 + b"\xff\xfe\x00" * 100, "wb")
    ck = tmp_path / "ck"
    result = cli(["train", corpus, "--bytes", "--checkpoint-dir", str(ck), "--max-steps", "3",
                  *TINY])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(str(ck)).vocab.bytes_mode
    sample = cli(["sample", str(ck), "--length", "20"])
    assert sample.exit_code == 0


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_and_saves(tmp_path, small_text, sig, code):
    ck = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", str(ck), "--max-steps", "100000",
         "--eval-every", "100000", *TINY],
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


def test_a_model_too_large_for_memory_is_one_line(tmp_path, small_text, cli, monkeypatch):
    """numpy's MemoryError (here from the first big allocation, as --hidden-size 1000000 raises it after
    filling 1.7 GB) is a one-line error, not a traceback."""
    def no_memory(n, rng):
        return np.empty((n, n, 10**12))  # 8e12 * n * n bytes: no machine has them
    monkeypatch.setattr("charrnn.rnn.orthogonal", no_memory)
    result = cli(["train", small_text, "--checkpoint-dir", str(tmp_path / "ck"), "--workers", "1", *TINY])
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


def test_a_checkpoint_directory_keeps_the_id_cache_of_its_corpus_alone(tmp_path, small_text, cli):
    """A run on another corpus in the same directory (--overwrite) leaves one cache, not one per corpus."""
    other = write(tmp_path / "other.txt", open(small_text, encoding="utf-8").read()[:5000])
    ck = tmp_path / "ck"
    for corpus in (small_text, other):
        result = cli(["train", corpus, "--checkpoint-dir", str(ck), "--max-steps", "2", "--overwrite", *TINY])
        assert result.exit_code == 0, result.output
    assert len([n for n in os.listdir(ck) if n.startswith("corpus-")]) == 2  # its .ids.npy and .json
