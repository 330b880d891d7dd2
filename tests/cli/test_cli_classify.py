"""`charrnn classify` on the shipped names data: train, test, predict, resume, info, bad input; --loss ova on the
names with a second label each."""

import itertools
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from types import SimpleNamespace

import numpy as np
import pytest

from charrnn.classify.data import read_labelled
from charrnn.classify.predict import TextClassifier, load_classifier

SMALL = ["--hidden-size", "16", "--random-seed", "3", "-q"]


def head(path, n, out):
    with open(path, encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    out.write_text("".join(lines), encoding="utf-8")
    return str(out)


def test_learns_names_by_language(classifier, cli, names):
    """Far above the majority class (ga, 19.6 % of the test split) after four short epochs."""
    result = cli(["classify", "test", classifier, names.test, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= {"n", "k", "precision_at_k", "recall_at_k", "accuracy", "macro_f1", "per_label"}
    assert report["n"] == 1209 and report["k"] == 1
    assert report["accuracy"] > 0.5 and report["macro_f1"] > 0.3
    assert report["precision_at_k"] == pytest.approx(report["accuracy"])  # one label a line, k = 1
    assert set(report["per_label"]["de"]) == {"precision", "recall", "f1", "support"}
    assert sum(v["support"] for v in report["per_label"].values()) == 1209


def test_the_classifier_trains_beside_a_language_model_and_no_refusal_suggests_the_other_kind(
        tmp_path, monkeypatch, cli, names, trained, classifier, small_text):
    """After the quick start (a language model in checkpoints/), classify train and the commands after it use a
    folder of their own; a folder holding a model of the other kind is refused without a --resume to follow."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained, tmp_path / "checkpoints")
    train = head(names.train, 300, tmp_path / "train.txt")
    result = cli(["classify", "train", train, "--valid", names.valid, "--max-steps", "2", *SMALL])
    assert result.exit_code == 0, result.output
    assert cli(["classify", "info", "classifier"]).exit_code == 0
    assert cli(["classify", "test", "classifier", names.test]).exit_code == 0
    for args, held in ((["train", small_text, "--checkpoint-dir", classifier], "a classifier"),
                       (["classify", "train", train, "--checkpoint-dir", "checkpoints"], "a language model")):
        refused = cli(args)
        assert refused.exit_code == 1 and f"already holds {held} (latest.npz)" in refused.stderr, refused.output
        assert "--resume" not in refused.stderr and "--overwrite" in refused.stderr


def test_test_prints_fasttext_lines_then_accuracy(classifier, cli, names):
    result = cli(["classify", "test", classifier, names.test, "-k", "2", "--per-label"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "N\t1209"
    assert lines[1].startswith("P@2\t") and lines[2].startswith("R@2\t")
    assert float(lines[1].split("\t")[1]) * 2 == pytest.approx(float(lines[2].split("\t")[1]), abs=3e-3)
    assert lines[3].startswith("accuracy\t") and lines[4].startswith("macro-F1\t")
    assert "confusion matrix" in result.output and "support" in result.output
    with open(names.test, "rb") as f:  # '-': the same file through standard input
        again = cli(["classify", "test", classifier, "-", "-k", "2", "--per-label"], input=f.read())
    assert again.output == result.output


def test_predict_streams_one_line_per_line(classifier, cli):
    text = "__label__de Müller\nRossi\n\nO'Brien\nŽůžek🙂\n"
    result = cli(["classify", "predict", classifier, "-", "-k", "2", "--prob"], input=text.encode())
    assert result.exit_code == 0, result.output
    lines = result.output.split("\n")[:-1]
    assert len(lines) == 5 and lines[2] == ""
    for line in (lines[0], lines[1], lines[3], lines[4]):
        tokens = line.split(" ")
        assert len(tokens) == 4 and tokens[0].startswith("__label__") and tokens[2].startswith("__label__")
        assert 0 <= float(tokens[3]) <= float(tokens[1]) <= 1
    only_sure = cli(["classify", "predict", classifier, "-", "-k", "3", "--threshold", "0.999"], input=b"Rossi\n")
    assert len(only_sure.output.split()) <= 1


def test_resume_continues_exactly(tmp_path, cli, names):
    data = head(names.train, 400, tmp_path / "train.txt")
    once, twice = tmp_path / "once", tmp_path / "twice"
    args = ["--valid-frac", "0.2", "--dropout", "0.1", "--lr-schedule", "constant", *SMALL]
    assert cli(["classify", "train", data, "--max-epochs", "2", "--checkpoint-dir", once, *args]).exit_code == 0
    assert cli(["classify", "train", data, "--max-epochs", "1", "--checkpoint-dir", twice, *args]).exit_code == 0
    result = cli(["classify", "train", data, "--max-epochs", "2", "--checkpoint-dir", twice, "--resume", "-q"])
    assert result.exit_code == 0, result.output
    a, b = (load_classifier(str(d / "latest.npz"))[0].model.params.flat for d in (once, twice))
    np.testing.assert_array_equal(a, b)
    # at its limit, a resume is refused in one line (it took one step past it per call), the run intact
    before = (twice / "latest.npz").read_bytes()
    result = cli(["classify", "train", data, "--max-epochs", "2", "--checkpoint-dir", twice, "--resume", "-q"])
    assert result.exit_code == 1 and "already reached its limit (max-epochs" in result.output
    assert result.output.count("\n") == 1 and (twice / "latest.npz").read_bytes() == before


def test_resume_on_a_shorter_file_starts_its_next_epoch(tmp_path, names, cli):
    """The saved batch is past the end of a training file that has since shrunk: the next epoch starts
    (it looped forever, deaf to Ctrl-C). A subprocess, so a regression fails instead of hanging."""
    ck = tmp_path / "ck"
    data = head(names.train, 1000, tmp_path / "train.txt")
    args = ["--valid", names.valid, "--batch-size", "64", "--checkpoint-dir", ck, *SMALL]
    assert cli(["classify", "train", data, "--max-steps", "12", *args]).exit_code == 0  # 15 batches per epoch
    head(names.train, 300, tmp_path / "train.txt")  # 5 batches per epoch now
    proc = subprocess.run([sys.executable, "-m", "charrnn", "classify", "train", data, "--max-steps", "14", "--resume",
                           *(str(a) for a in args if a != "-q")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "has changed since" in proc.stderr  # a changed training file is named, as charrnn train does
    position = json.loads(str(np.load(ck / "latest.npz")["meta"]))
    assert position["step"] == 14, position


def test_tsv_format(tmp_path, cli, names):
    rows = [line.split(" ", 1) for line in open(names.train, encoding="utf-8").read().splitlines()[:200]]
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"{lab[len('__label__'):]}\t{text}\n" for lab, text in rows), encoding="utf-8")
    result = cli(["classify", "train", path, "--format", "tsv", "--max-epochs", "1", "--checkpoint-dir", tmp_path / "c",
                  *SMALL])
    assert result.exit_code == 0, result.output
    assert len(TextClassifier.load(str(tmp_path / "c")).labels) > 5


def test_info_describes_a_classifier(classifier, cli):
    result = cli(["classify", "info", classifier])
    assert result.exit_code == 0 and "hidden_size" in result.output and "14: ga " in result.output


def test_sample_refuses_a_classifier_checkpoint(classifier, cli):
    result = cli(["sample", classifier])
    assert result.exit_code == 1 and "classifier" in result.output


BAD_TRAINING_FILES = [
    ("no-label.txt", "__label__a Anna\nBerta\n__label__b Carl\n", "line 2: no label"),
    ("no-text.txt", "__label__a Anna\n__label__b   \n", "line 2: a label but no text"),
    ("one-label.txt", "__label__a Anna\n__label__a Berta\n", "only one label"),
    ("empty.txt", "", "empty"),
    ("blank.txt", "\n\n  \n", "empty"),
]


@pytest.mark.parametrize("name,content,message", BAD_TRAINING_FILES)
def test_bad_training_file_one_line_error_nothing_overwritten(tmp_path, classifier, name, content, message, cli):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    before = {f: os.path.getmtime(os.path.join(classifier, f)) for f in os.listdir(classifier) if f.endswith(".npz")}
    result = cli(["classify", "train", path, "--checkpoint-dir", classifier, "--overwrite", "-q"])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    after = {f: os.path.getmtime(os.path.join(classifier, f)) for f in os.listdir(classifier) if f.endswith(".npz")}
    assert after == before


def test_valid_frac_with_a_valid_file_is_a_usage_error(tmp_path, cli, names):
    """--valid-frac was silently ignored beside --valid FILE."""
    result = cli(["classify", "train", names.train, "--valid", names.valid, "--valid-frac", "0.5",
                                       "--checkpoint-dir", str(tmp_path / "c")], prog_name="charrnn")
    assert result.exit_code == 2, result.output
    assert result.stderr == ("Error: --valid-frac holds out part of FILE and --valid gives a validation file; "
                             "give one of them (charrnn classify train --help)\n")
    assert not (tmp_path / "c").exists()


def test_negative_random_seed_is_a_usage_error(tmp_path, cli, names):
    result = cli(["classify", "train", names.train, "--random-seed", "-1", "--checkpoint-dir", tmp_path / "c"])
    assert result.exit_code == 2 and "'--random-seed': -1 is not in the range" in result.output
    assert len(result.output.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_invalid_utf8_is_one_line_error(tmp_path, classifier, cli):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"__label__a Anna\n__label__b B\xffrta\n")
    for args in (["train", path, "--checkpoint-dir", tmp_path / "c"], ["test", classifier, path]):
        result = cli(["classify", *args])
        assert result.exit_code == 1 and "line 2: not valid UTF-8" in result.output
    result = cli(["classify", "predict", classifier, "-"], input=b"Anna\nB\xffrta\n")
    assert result.exit_code == 1 and "line 2: not valid UTF-8" in result.output


def test_predict_answers_each_line_as_it_arrives(classifier):
    """Through a real pipe: the answer to a line comes before the next line is written."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "classify", "predict", classifier, "-"],
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


def test_ctrl_c_in_predict_exits_130_keeping_its_answers(classifier):
    """Ctrl-C while predict waits for more input: exit status 130, the answers given so far kept."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "classify", "predict", classifier, "-"],
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


def test_resume_refuses_new_labels_and_language_models(tmp_path, classifier, cli, names):
    path = tmp_path / "new.txt"
    path.write_text("__label__de Müller\n__label__xx Qwerty\n", encoding="utf-8")
    result = cli(["classify", "train", path, "--resume", os.path.join(classifier, "latest.npz"), "--checkpoint-dir",
                  classifier])
    assert result.exit_code == 1 and "labels the checkpoint does not have (xx)" in result.output
    lm = tmp_path / "lm"
    text = tmp_path / "text.txt"
    text.write_text("hello world, a little text to learn from. " * 20, encoding="utf-8")
    assert cli(["train", str(text), "--max-steps", "1", "--hidden-size", "8", "--num-layers",
                                     "1", "--batch-size", "2", "--seq-length", "8", "--checkpoint-dir", str(lm),
                                     "--workers", "1", "-q"]).exit_code == 0
    result = cli(["classify", "test", lm, names.test])
    assert result.exit_code == 1 and "not a classifier" in result.output


def test_unseen_test_labels_counted_and_reported(tmp_path, classifier, cli):
    path = tmp_path / "test.txt"
    path.write_text("__label__de Müller\n__label__xx Qwerty\n__label__yy Zzz\n", encoding="utf-8")
    result = cli(["classify", "test", classifier, str(path), "--json"])
    assert result.exit_code == 0
    assert "2 lines have labels the model never saw: xx, yy" in result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 3 and report["unseen_label_lines"] == 2 and report["accuracy"] <= 1 / 3
    path.write_text("__label__xx Qwerty\n", encoding="utf-8")
    result = cli(["classify", "test", classifier, path])
    assert result.exit_code == 1 and "none of its labels are the model's (xx)" in result.output


def two_labels(path, out, n=None):
    """A names file with a second label a line: whether the surname's first letter is a vowel (Ó, Aalts) or not."""
    def initial(text):
        first = unicodedata.normalize("NFD", next(c for c in text if c.isalpha()))[0].lower()
        return "vowel" if first in "aeiou" else "consonant"
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split(" ", 1) for line in itertools.islice(f, n)]
    out.write_text("".join(f"{label} __label__{initial(text)} {text}\n" for label, text in rows), encoding="utf-8")
    return str(out)


@pytest.fixture(scope="module")
def ova(tmp_path_factory, cli, names):
    """An ova classifier trained for 8 epochs on 2,000 two-label lines of the names training split (seconds): its
    checkpoint directory and the two-label test file."""
    ck = tmp_path_factory.mktemp("ova")
    train = two_labels(names.train, ck / "train.txt", 2000)
    valid, test = two_labels(names.valid, ck / "valid.txt", 400), two_labels(names.test, ck / "test.txt")
    result = cli(["classify", "train", train, "--valid", valid, "--loss", "ova", "--hidden-size", "32",
                  "--max-epochs", "8", "--dropout", "0", "--lr-schedule", "constant", "--random-seed", "1",
                  "--checkpoint-dir", ck / "ck"])
    assert result.exit_code == 0, result.output
    assert "exact label-set match" in result.output
    return SimpleNamespace(ck=str(ck / "ck"), test=test)


@pytest.mark.slow
def test_ova_learns_both_labels(ova, cli):
    """Each label its own sigmoid: the initial's label right on nearly every test line, the language far above the
    majority class (ga, 19.6 %); predict -k 2 --threshold 0.5 prints the label sets test scores."""
    clf = TextClassifier.load(ova.ck)
    assert clf.model.config.loss == "ova" and len(clf.labels) == 16
    lines = read_labelled(ova.test)
    probs = clf.predict_proba(lines.texts)  # (N, 16)
    column = clf.labels.index()
    initial = np.where(probs[:, column["vowel"]] >= 0.5, "vowel", "consonant")
    assert np.mean([i in labels for i, labels in zip(initial, lines.labels)]) > 0.95  # of 0.80 for "consonant"
    assert ((probs[:, column["vowel"]] >= 0.5) != (probs[:, column["consonant"]] >= 0.5)).mean() > 0.95
    languages = [c for name, c in column.items() if name not in ("vowel", "consonant")]
    top = [clf.labels.names[languages[i]] for i in probs[:, languages].argmax(axis=1)]
    assert np.mean([t in labels for t, labels in zip(top, lines.labels)]) > 0.5
    report = json.loads(cli(["classify", "test", ova.ck, ova.test, "-k", "2", "--threshold", "0.5", "--json"]).output)
    predicted = cli(["classify", "predict", ova.ck, ova.test, "-k", "2", "--threshold", "0.5"]).output.splitlines()
    sets = [{token[len("__label__") :] for token in line.split()} for line in predicted]
    assert len(sets) == 1209 and max(map(len, sets)) == 2
    assert report["exact_match"] == pytest.approx(np.mean([s == set(g) for s, g in zip(sets, lines.labels)]))
    assert report["exact_match"] > 0.35 and report["recall_at_k"] > 0.65
    text = cli(["classify", "test", ova.ck, ova.test, "-k", "2", "--threshold", "0.5"]).output.splitlines()
    assert text[5] == f"exact-match\t{report['exact_match']:.3f}"


@pytest.mark.slow
def test_an_ova_model_predicts_as_its_training_scores_by_default(ova, cli):
    """Without -k and --threshold an ova model's test and predict take every label of probability >= 0.5 (not the
    softmax default of one label, which made every two-label line a miss): the exact match its training
    reported for best.npz on the validation file, and on the test file what -k 16 --threshold 0.5 gives."""
    given = ["-k", "16", "--threshold", "0.5", "--json"]
    explicit = json.loads(cli(["classify", "test", ova.ck, ova.test, *given]).output)
    default = json.loads(cli(["classify", "test", ova.ck, ova.test, "--json"]).output)
    assert (default["k"], default["threshold"]) == (16, 0.5)
    assert default["exact_match"] == explicit["exact_match"] > 0.35
    valid = json.loads(cli(["classify", "test", ova.ck, os.path.join(os.path.dirname(ova.test), "valid.txt"),
                            "--json"]).output)
    with open(os.path.join(ova.ck, "metrics.jsonl")) as f:
        best = max(json.loads(line).get("val_exact_match", 0) for line in f)
    assert valid["exact_match"] == pytest.approx(best)
    predicted = cli(["classify", "predict", ova.ck, ova.test]).output.splitlines()
    assert max(len(line.split()) for line in predicted) >= 2  # a line with both its labels


def test_resume_keeps_the_loss(tmp_path, cli, names):
    """--loss other than the checkpoint's is refused in one line (the output layer would mean something else)."""
    data, ck = two_labels(names.train, tmp_path / "train.txt", 200), tmp_path / "ck"
    first = cli(["classify", "train", data, "--loss", "ova", "--max-epochs", "1", "--checkpoint-dir", ck, *SMALL])
    assert first.exit_code == 0, first.output
    assert json.loads(str(np.load(ck / "latest.npz")["meta"]))["model"]["loss"] == "ova"
    result = cli(["classify", "train", data, "--resume", "--checkpoint-dir", ck, "--loss", "softmax",
                  "--max-epochs", "2"], prog_name="charrnn")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "was trained with --loss ova, which --resume keeps" in result.stderr
    result = cli(["classify", "train", data, "--loss", "sigmoid", "--checkpoint-dir", tmp_path / "c"])
    assert result.exit_code == 2 and "'sigmoid' is not one of 'softmax', 'ova'" in result.stderr
