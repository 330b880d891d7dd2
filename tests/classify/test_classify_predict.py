"""The classifier's Python API (classify/predict.py): encoder vectors, probabilities and labels, batching that
changes nothing, a very long line batched alone."""

import numpy as np

from charrnn.classify.predict import TextClassifier


def test_python_api_encoder_and_classifier(classifier):
    clf = TextClassifier.load(classifier)
    texts = ["Müller", "Rossi", "Ó Coighin", "X"]
    vectors = clf.encode(texts)
    assert vectors.shape == (4, 2 * 32)
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    for i, t in enumerate(texts):  # order kept, and batching changes nothing
        np.testing.assert_allclose(clf.predict_proba([t])[0], probs[i], rtol=1e-4, atol=1e-6)
    assert clf.predict(["Rossi", ""], k=2)[1] == []


def test_a_very_long_line_goes_alone(classifier):
    """A 20,000-character line beside short ones: its own batch, the short ones' results unchanged."""
    clf = TextClassifier.load(classifier)
    probs = clf.predict_proba(["Rossi" * 4000, "Rossi", "Müller"])
    np.testing.assert_allclose(probs[1:], clf.predict_proba(["Rossi", "Müller"]), rtol=1e-4, atol=1e-6)
    assert set(clf.model.encoder._buffers) == {1, 2}  # batch sizes whose buffers are kept: the last two
