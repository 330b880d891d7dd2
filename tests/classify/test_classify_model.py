"""The classifier's math: gradients against numerical differences (float64), padding that changes
nothing, the forward pass against PyTorch's bidirectional LSTM and GRU with the same weights, and the ova
output (a sigmoid per label) against a label-at-a-time reference."""

import math

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error

from charrnn.classify.model import POOLS, Classifier, ClassifierConfig, reversal_index

CELLS = [("rnn", "tanh"), ("lstm", "tanh"), ("gru", "tanh")]


def loss_only(clf, ids, lengths, targets, weights=None):
    """The weighted cross-entropy of ``Classifier.loss_and_grads``, from the forward pass alone."""
    logits = clf.forward(ids, lengths)
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    weights = np.ones(len(lengths)) if weights is None else weights
    return float(-(weights[:, None] * targets * log_probs).sum() / weights.sum())


def random_batch(rng, lengths, V):
    lengths = np.array(sorted(lengths, reverse=True))
    T = lengths[0]
    ids = rng.integers(0, V, (T, len(lengths)))
    ids[np.arange(T)[:, None] >= lengths[None, :]] = V - 1  # padding
    return ids, lengths


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("model,activation", CELLS)
def test_gradients_bidirectional_masked(model, activation, pool):
    """Every parameter's gradient of the weighted loss, two bidirectional layers, texts of four lengths."""
    rng = np.random.default_rng(1)
    cfg = ClassifierConfig(vocab_size=7, num_classes=3, model=model, hidden_size=4, num_layers=2, pool=pool,
                           activation=activation, dtype="float64")
    clf = Classifier(cfg, rng=rng)
    ids, lengths = random_batch(rng, [5, 3, 3, 1], 7)
    targets = np.array([[1, 0, 0], [0, 0.5, 0.5], [0, 0, 1], [0, 1, 0]], float)
    weights = np.array([1.0, 2.0, 0.5, 1.5])
    loss, grads = clf.loss_and_grads(ids, lengths, targets, weights)
    assert loss == pytest.approx(loss_only(clf, ids, lengths, targets, weights), rel=1e-12)
    for name, value in clf.params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            value[i] = old + 1e-6
            plus = loss_only(clf, ids, lengths, targets, weights)
            value[i] = old - 1e-6
            minus = loss_only(clf, ids, lengths, targets, weights)
            value[i] = old
            numeric[i] = (plus - minus) / 2e-6
        assert rel_error(grads[name], numeric) < 1e-6, name


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_gradients_with_dropout(model):
    """With dropout on (the same masks each time from a seeded generator) the gradients still check."""
    cfg = ClassifierConfig(vocab_size=6, num_classes=2, model=model, hidden_size=3, num_layers=2, dropout=0.3,
                           dtype="float64")
    clf = Classifier(cfg, rng=np.random.default_rng(2))
    ids, lengths = random_batch(np.random.default_rng(3), [4, 2, 1], 6)
    targets = np.eye(2)[[0, 1, 1]]

    def loss():
        return clf.loss_and_grads(ids, lengths, targets, dropout_rng=np.random.default_rng(4))

    _, grads = loss()
    value = clf.params["l0.bwd.W_hh"]
    numeric = np.zeros_like(value)
    for i in np.ndindex(value.shape):
        old = value[i]
        value[i] = old + 1e-6
        plus = loss()[0]
        value[i] = old - 1e-6
        minus = loss()[0]
        value[i] = old
        numeric[i] = (plus - minus) / 2e-6
    assert rel_error(grads["l0.bwd.W_hh"], numeric) < 1e-6


def test_reversal_index_reverses_each_text_in_place():
    lengths = np.array([4, 2, 1])
    ids = np.arange(12).reshape(4, 3)
    reversed_ids = ids.reshape(-1)[reversal_index(lengths, 4)].reshape(4, 3)
    assert reversed_ids[:, 0].tolist() == [9, 6, 3, 0]
    assert reversed_ids[:, 1].tolist() == [4, 1, 7, 10]  # text of 2, then its padding where it was
    assert reversed_ids[:, 2].tolist() == [2, 5, 8, 11]


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_padding_changes_nothing(model, pool):
    """A text's logits alone equal its logits in a batch of longer and shorter texts."""
    rng = np.random.default_rng(5)
    cfg = ClassifierConfig(vocab_size=9, num_classes=4, model=model, hidden_size=8, num_layers=2, pool=pool,
                           dtype="float64")
    clf = Classifier(cfg, rng=rng)
    ids, lengths = random_batch(rng, [9, 6, 6, 4, 2, 1], 9)
    together = clf.forward(ids, lengths)
    for b, n in enumerate(lengths):
        alone = clf.forward(ids[:n, b : b + 1], lengths[b : b + 1])
        np.testing.assert_allclose(alone[0], together[b], rtol=1e-12, atol=1e-12)


def _torch_state_dict(clf, torch):
    """Our weights in PyTorch's layout: W_ih (G·H, in), gates reordered (LSTM: ours i, f, o, g; theirs
    i, f, g, o), biases split (GRU: b_hn is theirs b_hh's n part)."""
    cfg, H = clf.config, clf.config.hidden_size
    state = {}
    for k in range(cfg.num_layers):
        for d, suffix in (("fwd", ""), ("bwd", "_reverse")):
            p = {name.split(".")[-1]: value for name, value in clf.params.items() if name.startswith(f"l{k}.{d}.")}
            W_xh, W_hh, b = p["W_xh"], p["W_hh"], p["b"]
            if k == 0:
                W_xh = W_xh[:-1]  # the one-hot rows of the real symbols: torch reads a one-hot input
            b_hh = np.zeros_like(b)
            if cfg.model == "lstm":
                order = np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])
                W_xh, W_hh, b = W_xh[:, order], W_hh[:, order], b[order]
            else:
                b_hh[2 * H :] = p["b_hn"]
            for name, value in ((f"weight_ih_l{k}{suffix}", W_xh.T), (f"weight_hh_l{k}{suffix}", W_hh.T),
                                (f"bias_ih_l{k}{suffix}", b), (f"bias_hh_l{k}{suffix}", b_hh)):
                state[name] = torch.tensor(np.ascontiguousarray(value))
    return state


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_forward_matches_pytorch_bidirectional(model):
    """Pool ``last`` is h_n of nn.LSTM/nn.GRU(bidirectional=True) over packed sequences; ``max`` and
    ``mean`` pool its per-position outputs."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    V = 10
    cfg = ClassifierConfig(vocab_size=V + 1, num_classes=3, model=model, hidden_size=5, num_layers=2,
                           dtype="float64")
    clf = Classifier(cfg, rng=rng)
    ids, lengths = random_batch(rng, [7, 5, 5, 2, 1], V)
    rnn = getattr(torch.nn, model.upper())(V, 5, num_layers=2, bidirectional=True).double()
    rnn.load_state_dict(_torch_state_dict(clf, torch))
    onehot = torch.nn.functional.one_hot(torch.tensor(ids), V).double()  # (T, B, V)
    packed = torch.nn.utils.rnn.pack_padded_sequence(onehot, torch.tensor(lengths))
    with torch.no_grad():
        out, state = rnn(packed)
    h_n = (state[0] if model == "lstm" else state).numpy()  # (layers·2, B, H)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out)
    out = out.numpy()  # (T, B, 2H)
    np.testing.assert_allclose(clf.encoder.forward(ids, lengths), np.concatenate([h_n[-2], h_n[-1]], 1), atol=1e-12)
    valid = np.arange(len(out))[:, None, None] < lengths[None, :, None]
    for pool, expected in (("max", np.where(valid, out, -np.inf).max(0)), ("mean", out.sum(0) / lengths[:, None])):
        clf.encoder.config.pool = pool
        np.testing.assert_allclose(clf.encoder.forward(ids, lengths), expected, atol=1e-12)


@pytest.mark.parametrize("pool", POOLS)
def test_gradients_one_direction(pool):
    """--no-bidirectional: the forward direction alone, D = H."""
    rng = np.random.default_rng(7)
    cfg = ClassifierConfig(vocab_size=5, num_classes=2, model="gru", hidden_size=3, num_layers=2, pool=pool,
                           bidirectional=False, dtype="float64")
    clf = Classifier(cfg, rng=rng)
    ids, lengths = random_batch(rng, [4, 3, 1], 5)
    targets = np.eye(2)[[0, 1, 0]]
    assert clf.encoder.forward(ids, lengths).shape == (3, 3)
    _, grads = clf.loss_and_grads(ids, lengths, targets)
    for name, value in clf.params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            value[i] = old + 1e-6
            plus = loss_only(clf, ids, lengths, targets)
            value[i] = old - 1e-6
            minus = loss_only(clf, ids, lengths, targets)
            value[i] = old
            numeric[i] = (plus - minus) / 2e-6
        assert rel_error(grads[name], numeric) < 1e-6, name


def ova_loss_naive(clf, ids, lengths, targets, weights):
    """The ova loss from the logits, a text and a label at a time: the weighted mean over texts of
    sum_c -y log p - (1 - y) log(1 - p), p = 1 / (1 + e^-z)."""
    logits = clf.forward(ids, lengths)
    total = 0.0
    for b, c in np.ndindex(logits.shape):
        p = 1.0 / (1.0 + math.exp(-logits[b, c]))
        total += weights[b] * -(targets[b, c] * math.log(p) + (1 - targets[b, c]) * math.log(1 - p))
    return total / weights.sum()


@pytest.mark.parametrize("model,pool", [("lstm", "last"), ("gru", "max")])
def test_ova_loss_probabilities_and_gradients(model, pool):
    """--loss ova: the loss against the label-at-a-time reference, each label's probability its own sigmoid, and
    every parameter's gradient against numerical differences; lines with two labels, one, none."""
    rng = np.random.default_rng(8)
    cfg = ClassifierConfig(vocab_size=7, num_classes=3, model=model, hidden_size=4, num_layers=2, pool=pool,
                           dtype="float64", loss="ova")
    clf = Classifier(cfg, rng=rng)
    ids, lengths = random_batch(rng, [5, 3, 3, 1], 7)
    targets = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], float)
    weights = np.array([1.0, 2.0, 0.5, 1.5])
    logits = clf.forward(ids, lengths)
    probs = clf.probabilities(ids, lengths)
    assert probs == pytest.approx(1 / (1 + np.exp(-logits)), rel=1e-12)
    assert not np.allclose(probs.sum(axis=1), 1)  # not a distribution: each label on its own
    loss, grads = clf.loss_and_grads(ids, lengths, targets, weights)
    assert loss == pytest.approx(ova_loss_naive(clf, ids, lengths, targets, weights), rel=1e-12)
    for name, value in clf.params.items():
        numeric = numerical_grad(lambda: ova_loss_naive(clf, ids, lengths, targets, weights), value)
        assert rel_error(grads[name], numeric) < 1e-6, name


def test_ova_loss_stays_finite_for_confident_logits():
    """softplus and the sigmoid without overflow: a logit of ±800 costs what it should, 800 nats or none."""
    cfg = ClassifierConfig(vocab_size=4, num_classes=2, hidden_size=2, dtype="float64", loss="ova")
    clf = Classifier(cfg, rng=np.random.default_rng(9))
    clf.params["W_out"][...] = 0
    clf.params["b_out"][...] = [800.0, -800.0]
    ids, lengths = random_batch(np.random.default_rng(9), [3], 4)
    assert clf.probabilities(ids, lengths).tolist() == [[1.0, 0.0]]
    loss, grads = clf.loss_and_grads(ids, lengths, np.array([[1.0, 0.0]]))
    assert loss == pytest.approx(0.0, abs=1e-12) and np.isfinite(grads.flat).all()
    loss, _ = clf.loss_and_grads(ids, lengths, np.array([[0.0, 1.0]]))
    assert loss == pytest.approx(1600.0)
