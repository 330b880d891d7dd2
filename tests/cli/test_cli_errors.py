"""Every error a user can cause, across the commands: a one-line message, non-zero exit, no traceback, nothing
overwritten."""

import json
import os

import numpy as np
import pytest


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
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "new").exists()  # no folder left behind


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


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt", "--hidden-size", "30", "--num-heads", "4"], "--num-heads 4 does not divide --hidden-size 30"),
    (["--model", "gpt", "--activation", "relu"], "--activation is for the recurrent models"),
    (["--model", "gpt", "--weight-drop", "0.1"], "--weight-drop is for the recurrent models"),
    (["--preset", "nanogpt-cpu", "--activation", "relu"], "--activation is for the recurrent models"),
    (["--model", "lstm", "--num-heads", "2"], "--num-heads is for --model gpt, not --model lstm"),
    (["--num-heads", "2"], "--num-heads is for --model gpt"),
])
def test_options_of_the_other_kind_are_one_line_errors(tmp_path, small_text, args, message, cli):
    result = cli(["train", small_text, "--checkpoint-dir", str(tmp_path / "ck"), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
