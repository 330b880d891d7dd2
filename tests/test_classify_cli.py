"""``charrnn classify`` on the shipped names data: train, test, predict, resume, the Python API, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.classify.predict import TextClassifier, load_classifier
from charrnn.cli import main

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
TRAIN, VALID, TEST = (os.path.join(DATA, f"names.{s}.txt") for s in ("train", "valid", "test"))
SMALL = ["--hidden-size", "16", "--random-seed", "3", "-q"]


def run(*args, input=None):
    return CliRunner().invoke(main, ["classify", *map(str, args)], input=input)


def head(path, n, out):
    with open(path, encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    out.write_text("".join(lines), encoding="utf-8")
    return str(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small classifier trained for 4 epochs on 2,000 lines of the training split (a few seconds)."""
    ckpt = tmp_path_factory.mktemp("clf")
    data = head(TRAIN, 2000, ckpt / "train.txt")
    result = run("train", data, "--valid", VALID, "--hidden-size", "32", "--max-epochs", "4", "--dropout", "0",
                 "--lr-schedule", "constant", "--random-seed", "1", "--checkpoint-dir", ckpt, "-q")
    assert result.exit_code == 0, result.output
    return str(ckpt)


def test_learns_names_by_language(trained):
    """Far above the majority class (ga, 19.6 % of the test split) after four short epochs."""
    result = run("test", trained, TEST, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= {"n", "k", "precision_at_k", "recall_at_k", "accuracy", "macro_f1", "per_label"}
    assert report["n"] == 1209 and report["k"] == 1
    assert report["accuracy"] > 0.5 and report["macro_f1"] > 0.3
    assert report["precision_at_k"] == pytest.approx(report["accuracy"])  # one label a line, k = 1
    assert set(report["per_label"]["de"]) == {"precision", "recall", "f1", "support"}
    assert sum(v["support"] for v in report["per_label"].values()) == 1209


def test_test_prints_fasttext_lines_then_accuracy(trained):
    result = run("test", trained, TEST, "-k", "2", "--per-label")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "N\t1209"
    assert lines[1].startswith("P@2\t") and lines[2].startswith("R@2\t")
    assert float(lines[1].split("\t")[1]) * 2 == pytest.approx(float(lines[2].split("\t")[1]), abs=3e-3)
    assert lines[3].startswith("accuracy\t") and lines[4].startswith("macro-F1\t")
    assert "confusion matrix" in result.output and "support" in result.output
    with open(TEST, "rb") as f:  # '-': the same file through standard input
        assert run("test", trained, "-", "-k", "2", "--per-label", input=f.read()).output == result.output


def test_predict_streams_one_line_per_line(trained):
    text = "__label__de Müller\nRossi\n\nO'Brien\nŽůžek🙂\n"
    result = run("predict", trained, "-", "-k", "2", "--prob", input=text.encode())
    assert result.exit_code == 0, result.output
    lines = result.output.split("\n")[:-1]
    assert len(lines) == 5 and lines[2] == ""
    for line in (lines[0], lines[1], lines[3], lines[4]):
        tokens = line.split(" ")
        assert len(tokens) == 4 and tokens[0].startswith("__label__") and tokens[2].startswith("__label__")
        assert 0 <= float(tokens[3]) <= float(tokens[1]) <= 1
    only_sure = run("predict", trained, "-", "-k", "3", "--threshold", "0.999", input=b"Rossi\n")
    assert len(only_sure.output.split()) <= 1


def test_python_api_encoder_and_classifier(trained):
    clf = TextClassifier.load(trained)
    texts = ["Müller", "Rossi", "Ó Coighin", "X"]
    vectors = clf.encode(texts)
    assert vectors.shape == (4, 2 * 32)
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    for i, t in enumerate(texts):  # order kept, and batching changes nothing
        np.testing.assert_allclose(clf.predict_proba([t])[0], probs[i], rtol=1e-4, atol=1e-6)
    assert clf.predict(["Rossi", ""], k=2)[1] == []


def test_resume_continues_exactly(tmp_path):
    data = head(TRAIN, 400, tmp_path / "train.txt")
    once, twice = tmp_path / "once", tmp_path / "twice"
    args = ["--valid-frac", "0.2", "--dropout", "0.1", "--lr-schedule", "constant", *SMALL]
    assert run("train", data, "--max-epochs", "2", "--checkpoint-dir", once, *args).exit_code == 0
    assert run("train", data, "--max-epochs", "1", "--checkpoint-dir", twice, *args).exit_code == 0
    result = run("train", data, "--max-epochs", "2", "--checkpoint-dir", twice, "--resume", "-q")
    assert result.exit_code == 0, result.output
    a, b = (load_classifier(str(d / "latest.npz"))[0].model.params.flat for d in (once, twice))
    np.testing.assert_array_equal(a, b)
    # at its limit, a resume is refused in one line (it took one step past it per call), the run intact
    before = (twice / "latest.npz").read_bytes()
    result = run("train", data, "--max-epochs", "2", "--checkpoint-dir", twice, "--resume", "-q")
    assert result.exit_code == 1 and "already reached its limit (max-epochs" in result.output
    assert result.output.count("\n") == 1 and (twice / "latest.npz").read_bytes() == before

def test_resume_on_a_shorter_file_starts_its_next_epoch(tmp_path):
    """The saved batch is past the end of a training file that has since shrunk: the next epoch starts
    (it looped forever, deaf to Ctrl-C). A subprocess, so a regression fails instead of hanging."""
    ck = tmp_path / "ck"
    data = head(TRAIN, 1000, tmp_path / "train.txt")
    args = ["--valid", VALID, "--batch-size", "64", "--checkpoint-dir", ck, *SMALL]
    assert run("train", data, "--max-steps", "12", *args).exit_code == 0  # 15 batches per epoch
    head(TRAIN, 300, tmp_path / "train.txt")  # 5 batches per epoch now
    proc = subprocess.run([sys.executable, "-m", "charrnn", "classify", "train", data, "--max-steps", "14", "--resume",
                           *(str(a) for a in args if a != "-q")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "has changed since" in proc.stderr  # a changed training file is named, as charrnn train does
    position = json.loads(str(np.load(ck / "latest.npz")["meta"]))
    assert position["step"] == 14, position


def test_tsv_format(tmp_path):
    rows = [line.split(" ", 1) for line in open(TRAIN, encoding="utf-8").read().splitlines()[:200]]
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"{lab[len('__label__'):]}\t{text}\n" for lab, text in rows), encoding="utf-8")
    result = run("train", path, "--format", "tsv", "--max-epochs", "1", "--checkpoint-dir", tmp_path / "c", *SMALL)
    assert result.exit_code == 0, result.output
    assert len(TextClassifier.load(str(tmp_path / "c")).labels) > 5


def test_info_describes_a_classifier(trained):
    result = run("info", trained)
    assert result.exit_code == 0 and "hidden_size" in result.output and "14: ga " in result.output


def test_sample_refuses_a_classifier_checkpoint(trained):
    result = CliRunner().invoke(main, ["sample", trained])
    assert result.exit_code == 1 and "classifier" in result.output


BAD_TRAINING_FILES = [
    ("no-label.txt", "__label__a Anna\nBerta\n__label__b Carl\n", "line 2: no label"),
    ("no-text.txt", "__label__a Anna\n__label__b   \n", "line 2: a label but no text"),
    ("one-label.txt", "__label__a Anna\n__label__a Berta\n", "only one label"),
    ("empty.txt", "", "empty"),
    ("blank.txt", "\n\n  \n", "empty"),
]


@pytest.mark.parametrize("name,content,message", BAD_TRAINING_FILES)
def test_bad_training_file_one_line_error_nothing_overwritten(tmp_path, trained, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    before = {f: os.path.getmtime(os.path.join(trained, f)) for f in os.listdir(trained) if f.endswith(".npz")}
    result = run("train", path, "--checkpoint-dir", trained, "--overwrite", "-q")
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert {f: os.path.getmtime(os.path.join(trained, f)) for f in os.listdir(trained) if f.endswith(".npz")} == before


def test_valid_frac_with_a_valid_file_is_a_usage_error(tmp_path):
    """--valid-frac was silently ignored beside --valid FILE."""
    result = CliRunner().invoke(main, ["classify", "train", TRAIN, "--valid", VALID, "--valid-frac", "0.5",
                                       "--checkpoint-dir", str(tmp_path / "c")], prog_name="charrnn")
    assert result.exit_code == 2, result.output
    assert result.stderr == ("Error: --valid-frac holds out part of FILE and --valid gives a validation file; "
                             "give one of them (charrnn classify train --help)\n")
    assert not (tmp_path / "c").exists()


def test_negative_random_seed_is_a_usage_error(tmp_path):
    result = run("train", TRAIN, "--random-seed", "-1", "--checkpoint-dir", tmp_path / "c")
    assert result.exit_code == 2 and "'--random-seed': -1 is not in the range" in result.output
    assert len(result.output.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_invalid_utf8_is_one_line_error(tmp_path, trained):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"__label__a Anna\n__label__b B\xffrta\n")
    for args in (["train", path, "--checkpoint-dir", tmp_path / "c"], ["test", trained, path]):
        result = run(*args)
        assert result.exit_code == 1 and "line 2: not valid UTF-8" in result.output
    result = run("predict", trained, "-", input=b"Anna\nB\xffrta\n")
    assert result.exit_code == 1 and "line 2: not valid UTF-8" in result.output


def test_unseen_test_labels_counted_and_reported(tmp_path, trained):
    path = tmp_path / "test.txt"
    path.write_text("__label__de Müller\n__label__xx Qwerty\n__label__yy Zzz\n", encoding="utf-8")
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 keeps stderr apart
    result = runner.invoke(main, ["classify", "test", trained, str(path), "--json"])
    assert result.exit_code == 0
    assert "2 lines have labels the model never saw: xx, yy" in result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 3 and report["unseen_label_lines"] == 2 and report["accuracy"] <= 1 / 3
    path.write_text("__label__xx Qwerty\n", encoding="utf-8")
    result = run("test", trained, path)
    assert result.exit_code == 1 and "none of its labels are the model's (xx)" in result.output


def test_predict_answers_each_line_as_it_arrives(trained):
    """Through a real pipe: the answer to a line comes before the next line is written."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "classify", "predict", trained, "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        for name in ("Rossi", "Müller"):
            proc.stdin.write(f"{name}\n".encode())
            proc.stdin.flush()
            assert proc.stdout.readline().decode().startswith("__label__")
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_ctrl_c_in_predict_exits_130_keeping_its_answers(trained):
    """Ctrl-C while predict waits for more input: exit status 130, the answers given so far kept."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "classify", "predict", trained, "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("Rossi\n")
    proc.stdin.flush()
    answer = proc.stdout.readline()
    time.sleep(0.5)  # back in its read of the next line
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert answer.startswith("__label__") and rest == ""
    assert "Traceback" not in err and "Aborted" not in err and len(err.splitlines()) <= 1, err


def test_a_very_long_line_goes_alone(trained):
    """A 20,000-character line beside short ones: its own batch, the short ones' results unchanged."""
    clf = TextClassifier.load(trained)
    probs = clf.predict_proba(["Rossi" * 4000, "Rossi", "Müller"])
    np.testing.assert_allclose(probs[1:], clf.predict_proba(["Rossi", "Müller"]), rtol=1e-4, atol=1e-6)
    assert set(clf.model.encoder._buffers) == {1, 2}  # batch sizes whose buffers are kept: the last two


def test_resume_refuses_new_labels_and_language_models(tmp_path, trained):
    path = tmp_path / "new.txt"
    path.write_text("__label__de Müller\n__label__xx Qwerty\n", encoding="utf-8")
    result = run("train", path, "--resume", os.path.join(trained, "latest.npz"), "--checkpoint-dir", trained)
    assert result.exit_code == 1 and "labels the checkpoint does not have (xx)" in result.output
    lm = tmp_path / "lm"
    text = tmp_path / "text.txt"
    text.write_text("hello world, a little text to learn from. " * 20, encoding="utf-8")
    assert CliRunner().invoke(main, ["train", str(text), "--max-steps", "1", "--hidden-size", "8", "--num-layers",
                                     "1", "--batch-size", "2", "--seq-length", "8", "--checkpoint-dir", str(lm),
                                     "--workers", "1", "-q"]).exit_code == 0
    result = run("test", lm, TEST)
    assert result.exit_code == 1 and "not a classifier" in result.output
