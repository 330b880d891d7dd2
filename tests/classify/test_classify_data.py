"""Labelled lines, label sets, class weights and padded batches."""

import numpy as np
import pytest

from charrnn.classify.data import (
    LabelledDataError,
    LabelSet,
    build_vocab,
    encode_texts,
    length_buckets,
    pad_batch,
    read_labelled,
    split_labels,
)
from charrnn.classify.metrics import evaluate_predictions
from charrnn.classify.train import _class_weights


def test_split_labels_fasttext_and_tsv():
    assert split_labels("__label__de __label__at Müller Lüdenscheid") == (("de", "at"), "Müller Lüdenscheid")
    assert split_labels("  __label__x\tText") == (("x",), "Text")
    assert split_labels("no labels here") == ((), "no labels here")
    assert split_labels("a __label__late one") == ((), "a __label__late one")  # labels come first
    assert split_labels("de,at\tMüller", "tsv") == (("de", "at"), "Müller")
    assert split_labels("de\tA\tB", "tsv") == (("de",), "A\tB")


def test_read_labelled_skips_blank_lines_and_names_bad_ones(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("\ufeff__label__a Anna\u2028Berta\n\n__label__b Bo\r\n".encode())
    data = read_labelled(str(path))
    assert data.texts == ["Anna\u2028Berta", "Bo"] and data.labels == [("a",), ("b",)] and data.line_numbers == [1, 3]
    path.write_text("__label__a Anna\n__label__b\n", encoding="utf-8")
    with pytest.raises(LabelledDataError, match="line 2: a label but no text"):
        read_labelled(str(path))
    with pytest.raises(LabelledDataError, match="is a directory"):
        read_labelled(str(tmp_path))


def test_label_set_targets_share_weight_among_a_lines_labels():
    labels = LabelSet.from_lines([("a",), ("b",), ("a", "c")])
    assert labels.names == ("a", "b", "c")  # most frequent first
    Y, unknown = labels.targets([("a", "c"), ("zz",), ("b", "zz")])
    np.testing.assert_allclose(Y, [[0.5, 0, 0.5], [0, 0, 0], [0, 1, 0]])
    assert unknown.tolist() == [0, 1, 1]


def test_balanced_class_weights_equalise_the_labels():
    line_labels = [("a",)] * 6 + [("b",)] * 2
    labels = LabelSet.from_lines(line_labels)
    weights = _class_weights(line_labels, range(8), labels, "balanced")
    np.testing.assert_allclose(weights, [8 / (2 * 6), 8 / (2 * 2)])
    assert weights[0] * 6 == pytest.approx(weights[1] * 2)  # each label's examples weigh as much in all


def test_batches_pad_after_each_text_longest_first():
    texts = ["abc", "a", "ab", "abcd"]
    vocab = build_vocab(texts)
    encoded = encode_texts(texts + ["zz"], vocab)
    assert encoded.ids[-2:].tolist() == [len(vocab)] * 2  # unknown characters
    batch = pad_batch(encoded, [0, 1, 2, 3], pad_id=9)
    assert batch.rows.tolist() == [3, 0, 2, 1] and batch.lengths.tolist() == [4, 3, 2, 1]
    assert batch.ids[:, 3].tolist() == [0, 9, 9, 9]
    buckets = length_buckets(np.array([5, 1, 4, 2, 3, 6]), 2)
    assert [b.tolist() for b in buckets] == [[5, 0], [2, 4], [3, 1]]


def test_metrics_against_hand_counts():
    labels = LabelSet(("a", "b", "c"))
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    gold = [("a",), ("b",), ("c",), ("c", "b")]
    report = evaluate_predictions(probs, gold, labels, k=2)
    # top-2: {a,b} {a,b} {c,b} {b,c}: right 1 + 1 + 1 + 2 = 5 of 8 predictions, of 5 gold labels
    assert report["precision_at_k"] == pytest.approx(5 / 8) and report["recall_at_k"] == pytest.approx(5 / 5)
    assert report["accuracy"] == pytest.approx(3 / 4)  # top-1: a, a, c, b
    assert report["per_label"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert report["per_label"]["b"]["recall"] == 0.5 and report["per_label"]["b"]["precision"] == 1.0
    assert report["confusion"]["counts"][1] == [1, 1, 0]  # gold b: predicted a once, b once (line 4)


def test_multi_label_metrics_with_a_threshold_against_hand_counts():
    """An ova model's independent probabilities: the predictions are the top k of at least the threshold."""
    labels = LabelSet(("a", "b", "c"))
    probs = np.array([[0.9, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.1, 0.4], [0.7, 0.95, 0.6]])
    gold = [("a", "b"), ("a",), ("c",), ("b", "c")]
    report = evaluate_predictions(probs, gold, labels, k=2, threshold=0.5)
    # predictions: {a,b} {a} {} {b,a}: right 2 + 1 + 0 + 1 = 4 of 5 predictions, of 6 gold labels
    assert report["precision_at_k"] == pytest.approx(4 / 5) and report["recall_at_k"] == pytest.approx(4 / 6)
    assert report["exact_match"] == pytest.approx(2 / 4) and report["threshold"] == 0.5
    assert report["accuracy"] == 1.0  # top-1, whatever its probability: a, a, c, b, each among the gold
    every = evaluate_predictions(probs, gold, labels, k=3, threshold=0.5)  # line 4 predicts c too: {b,a,c}
    assert every["exact_match"] == pytest.approx(2 / 4) and every["precision_at_k"] == pytest.approx(5 / 6)
    none = evaluate_predictions(probs, gold, labels, k=2, threshold=0.99)
    assert none["precision_at_k"] == 0.0 and none["recall_at_k"] == 0.0 and none["exact_match"] == 0.0
    single = evaluate_predictions(probs, [("a",), ("a",), ("c",), ("b",)], labels)  # k 1, no threshold: accuracy
    assert single["exact_match"] == single["accuracy"] == 1.0


def test_long_texts_make_smaller_batches():
    lengths = np.array([10_000, 9_000, 50, 40, 30, 20])
    sizes = [len(b) for b in length_buckets(lengths, 4, max_chars=16_384)]
    assert sizes == [1, 1, 4]  # 10,000 and 9,000 characters go alone; the short ones 4 at a time
