"""Using a trained classifier: texts to vectors and label probabilities.

    clf = TextClassifier.load("classifier/best.npz")
    clf.encode(["Müller", "Rossi"])            # (2, D) vectors, D = 2H when bidirectional
    clf.predict_proba(["Müller"])              # (1, C), columns in clf.labels.names order
    clf.predict(["Müller"], k=2)               # [[("de", 0.93), ("nl", 0.04)]]
    clf.predict(["Müller"], k=3, threshold=0.5)   # a model trained with loss "ova": every label of p >= 0.5

Texts are batched by length (longest first, ``batch_size`` at a time) and padded; results come back in
the order given.
"""

from dataclasses import dataclass

import numpy as np

from ..io.checkpoint import CheckpointError, read_archive, resolve_checkpoint
from ..io.corpus import Vocab
from .data import LabelSet, encode_texts, length_buckets, pad_batch
from .model import Classifier, ClassifierConfig

KIND = "classifier"
OVA_THRESHOLD = 0.5  # an ova model's labels are predicted from this probability (training scores it so)


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
        """(N, C) label probabilities of ``texts``; columns in ``self.labels.names`` order. A softmax model's
        rows sum to 1; an ova model's probabilities are each label's own."""
        return self._run(texts, batch_size, self.model.probabilities, len(self.labels))

    def prediction_cut(self):
        """The (k, threshold) a prediction takes by default: a softmax model's likeliest label (1, 0.0); an ova
        model's every label of probability >= OVA_THRESHOLD, as its training scores it."""
        if self.model.config.loss == "ova":
            return len(self.labels), OVA_THRESHOLD
        return 1, 0.0

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
