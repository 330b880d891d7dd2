"""Using a trained classifier: texts to vectors and label probabilities, and fastText's test metrics.

    clf = TextClassifier.load("checkpoints/best.npz")
    clf.encode(["Müller", "Rossi"])            # (2, D) vectors, D = 2H when bidirectional
    clf.predict_proba(["Müller"])              # (1, C), columns in clf.labels.names order
    clf.predict(["Müller"], k=2)               # [[("de", 0.93), ("nl", 0.04)]]
    report = evaluate_predictions(clf.predict_proba(texts), line_labels, clf.labels, k=1)

Texts are batched by length (longest first, ``batch_size`` at a time) and padded; results come back in
the order given.
"""

from dataclasses import dataclass

import numpy as np

from .checkpoint import CheckpointError, read_archive, resolve_checkpoint
from .classify import Classifier, ClassifierConfig, softmax
from .classify_data import LabelSet, encode_texts, length_buckets, pad_batch
from .data import Vocab

KIND = "classifier"


@dataclass
class TextClassifier:
    """A classifier with its vocabulary and labels: what a checkpoint alone rebuilds."""

    model: Classifier
    vocab: Vocab
    labels: LabelSet

    @classmethod
    def load(cls, path):
        """From a checkpoint file or directory (best.npz, else latest.npz); CheckpointError if unusable."""
        return load_classifier(path)[0]

    def encode(self, texts, batch_size=512):
        """(N, D) vectors of ``texts`` (non-empty strs)."""
        return self._run(texts, batch_size, self.model.encoder.forward, self.model.config.output_size)

    def predict_proba(self, texts, batch_size=512):
        """(N, C) label probabilities of ``texts``; columns in ``self.labels.names`` order."""
        return self._run(texts, batch_size, lambda ids, lengths: softmax(self.model.forward(ids, lengths)),
                         len(self.labels))

    def predict(self, texts, k=1, threshold=0.0, batch_size=512):
        """For each text its k likeliest (label, probability) pairs of probability >= threshold; an empty
        text gets none."""
        texts = list(texts)
        nonempty = [i for i, t in enumerate(texts) if t]
        out = [[] for _ in texts]
        if not nonempty:
            return out
        probs = self.predict_proba([texts[i] for i in nonempty], batch_size)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        for row, i in enumerate(nonempty):
            out[i] = [(self.labels.names[c], float(probs[row, c])) for c in top[row] if probs[row, c] >= threshold]
        return out

    def _run(self, texts, batch_size, fn, width):
        encoded = encode_texts(list(texts), self.vocab)
        if len(encoded) and encoded.lengths.min() == 0:
            raise ValueError("cannot classify an empty text")
        out = np.empty((len(encoded), width), self.model.params.flat.dtype)
        for rows in length_buckets(encoded.lengths, batch_size):
            batch = pad_batch(encoded, rows, len(self.vocab))
            out[batch.rows] = fn(batch.ids, batch.lengths)
        return out


def load_classifier(path):
    """(TextClassifier, meta, optimizer state) from a checkpoint; CheckpointError with a one-line reason."""
    path = resolve_checkpoint(path)
    meta, arrays = read_archive(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path}: a language-model checkpoint, not a classifier (see charrnn classify train)")
    try:
        config = ClassifierConfig(**meta["model"])
        vocab, labels = Vocab.from_json(meta["vocab"]), LabelSet(tuple(meta["labels"]))
        params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
        model = Classifier(config, params=params)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({e})") from None
    if len(vocab) + 1 != config.vocab_size or len(labels) != config.num_classes:
        raise CheckpointError(f"{path}: inconsistent checkpoint (vocabulary or label count)")
    optimizer_state = {k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")}
    return TextClassifier(model, vocab, labels), meta, optimizer_state


def evaluate_predictions(probs, line_labels, labels, k=1):
    """fastText's test figures and more, for ``probs`` (N, C) against each line's gold ``line_labels``.

    N, P@K (right labels among the K predictions / N·K), R@K (right labels among the K predictions /
    gold labels), accuracy (top prediction among the line's labels), macro-F1 over every label that is
    gold or predicted, per-label precision/recall/F1/support of the top prediction, the confusion
    matrix (gold label x top prediction), and the lines with a label the model never saw.
    """
    N, C = probs.shape
    index = labels.index()
    unseen = sorted({name for names in line_labels for name in names if name not in index})
    names = list(labels.names) + unseen  # a class's id is its position here; unseen labels after the model's
    position = {name: i for i, name in enumerate(names)}
    pairs = [(i, position[name]) for i, line in enumerate(line_labels) for name in set(line)]
    line_of, gold = (np.array(column, np.int64) for column in zip(*pairs)) if pairs else (np.zeros(0, np.int64),) * 2
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k): class ids, likeliest first
    right_at_k = int((top[line_of] == gold[:, None]).any(axis=1).sum())  # gold labels among the k predictions
    predicted = top[:, 0]  # (N,)
    hit = predicted[line_of] == gold  # (pairs,): the top prediction is this gold label
    L = len(names)
    support, n_pred = np.bincount(gold, minlength=L), np.bincount(predicted, minlength=L)
    tp = np.bincount(gold[hit], minlength=L)
    per_label = {}
    for c, name in enumerate(names):
        if support[c] or n_pred[c]:
            precision = tp[c] / n_pred[c] if n_pred[c] else 0.0
            recall = tp[c] / support[c] if support[c] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_label[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                               "support": int(support[c])}
    shown = np.array([c for c, name in enumerate(names) if name in per_label])
    confusion = np.bincount(gold * L + predicted[line_of], minlength=L * L).reshape(L, L)[np.ix_(shown, shown)]
    return {
        "n": N,
        "k": k,
        "precision_at_k": right_at_k / (N * top.shape[1]),
        "recall_at_k": right_at_k / max(len(gold), 1),
        "accuracy": float(np.bincount(line_of[hit], minlength=N).astype(bool).sum() / N),
        "macro_f1": float(np.mean([v["f1"] for v in per_label.values()])),
        "per_label": per_label,
        "confusion": {"labels": [names[c] for c in shown], "counts": confusion.tolist()},
        "unseen_labels": unseen,
        "unseen_label_lines": int(len(np.unique(line_of[gold >= C]))),
    }
