"""How well a classifier's predictions match the labels: accuracy, precision and recall at k, exact label-set
match, per-label and macro F1.

    report = evaluate_predictions(probs, line_labels, labels, k=1)                  # probs (N, C)
    report = evaluate_predictions(probs, line_labels, labels, k=2, threshold=0.5)   # multi-label (an ova model)
"""

import numpy as np


def evaluate_predictions(probs, line_labels, labels, k=1, threshold=0.0):
    """fastText's test figures and more, for ``probs`` (N, C) against each line's gold ``line_labels``.

    A line's predictions are its K likeliest labels of probability at least ``threshold``. N, P@K (right
    predictions / predictions: N·K with no threshold; 0 if none), R@K (right predictions / gold labels), the
    exact label-set match (lines whose predictions are exactly their labels), accuracy (top prediction among
    the line's labels, whatever its probability), macro-F1 over every label that is gold or predicted,
    per-label precision/recall/F1/support of the top prediction, the confusion matrix (gold label x top
    prediction), and the lines with a label the model never saw.
    """
    N, C = probs.shape
    index = labels.index()
    unseen = sorted({name for names in line_labels for name in names if name not in index})
    names = list(labels.names) + unseen  # a class's id is its position here; unseen labels after the model's
    position = {name: i for i, name in enumerate(names)}
    pairs = [(i, position[name]) for i, line in enumerate(line_labels) for name in set(line)]
    line_of, gold = (np.array(column, np.int64) for column in zip(*pairs)) if pairs else (np.zeros(0, np.int64),) * 2
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k): class ids, likeliest first
    made = np.take_along_axis(probs, top, axis=1) >= threshold  # (N, k): the predictions made
    right_at_k = int(((top[line_of] == gold[:, None]) & made[line_of]).any(axis=1).sum())  # gold labels predicted
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
        "threshold": threshold,
        "precision_at_k": right_at_k / max(int(made.sum()), 1),
        "recall_at_k": right_at_k / max(len(gold), 1),
        "exact_match": exact_match(top, made, line_of, gold, L),
        "accuracy": float(np.bincount(line_of[hit], minlength=N).astype(bool).sum() / N),
        "macro_f1": float(np.mean([v["f1"] for v in per_label.values()])),
        "per_label": per_label,
        "confusion": {"labels": [names[c] for c in shown], "counts": confusion.tolist()},
        "unseen_labels": unseen,
        "unseen_label_lines": int(len(np.unique(line_of[gold >= C]))),
    }


def exact_match(top, made, line_of, gold, L):
    """The fraction of lines whose predictions (``top`` (N, k) class ids where ``made`` (N, k)) are exactly their
    gold labels (pairs of line ``line_of`` and class ``gold``), of L classes."""
    N = len(top)
    predicted, wanted = np.zeros((N, L), bool), np.zeros((N, L), bool)  # (N, L) label sets
    predicted[np.nonzero(made)[0], top[made]] = True
    wanted[line_of, gold] = True
    return float((predicted == wanted).all(axis=1).mean())
