"""Sampling (inference/sample.py, models/rnn_steppers.py): steppers against the batched forward, filters, seeds, batches
of samples that are the samples one by one, priming in pieces, bytes models' characters whole."""

import numpy as np
import pytest

from charrnn.inference.sample import (
    filter_logits,
    generate,
    generate_batch,
    sample_rngs,
    stream_samples,
)
from charrnn.io.corpus import Vocab
from charrnn.models import rnn as rnn_module
from charrnn.models.rnn import CharRNN, ModelConfig
from charrnn.models.rnn_steppers import InPlaceStepper, Stepper

VOCAB = Vocab(tuple("\n !,.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def make_model(model="lstm", dtype="float64", hidden=24):  # float64: batch sizes round alike
    config = ModelConfig(len(VOCAB), model, hidden, 2, dtype=dtype)
    return CharRNN(config, rng=np.random.default_rng(0))


@pytest.mark.parametrize("model,hidden", [("gru", 16), ("lstm", 16), ("rnn", 16), ("gru", 256), ("lstm", 256)])
def test_stepper_matches_batched_forward(model, hidden):
    """One character at a time gives the batched forward's logits."""
    config = ModelConfig(vocab_size=len(VOCAB), model=model, hidden_size=hidden, num_layers=2, dtype="float64")
    net = CharRNN(config, rng=np.random.default_rng(0))
    ids = np.random.default_rng(2).integers(0, len(VOCAB), 12)
    logits, _ = net.forward(ids[:, None])
    stepper = Stepper(net, net.initial_state(1))
    for t, idx in enumerate(ids):
        np.testing.assert_allclose(stepper.step([idx])[0], logits[t, 0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model,activation", [("lstm", "tanh"), ("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid")])
@pytest.mark.parametrize("layers,streams", [(1, 1), (3, 1), (2, 4), (3, 3)])
def test_in_place_stepper_matches_batched_forward(model, activation, layers, streams):
    """States updated in place, each layer's input and state as one slice: the batched forward's logits."""
    config = ModelConfig(len(VOCAB), model, 16, layers, activation=activation, dtype="float64")
    net = CharRNN(config, rng=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, len(VOCAB), (12, streams))  # (T, B)
    start = tuple(np.random.default_rng(2).normal(size=s.shape) for s in net.initial_state(streams))
    logits, _ = net.forward(ids, start)
    stepper = InPlaceStepper(net, start)
    for t in range(len(ids)):
        np.testing.assert_allclose(stepper.step(ids[t]), logits[t], rtol=1e-10, atol=1e-12)


def test_sampling_uses_the_in_place_stepper_for_lstm_and_rnn():
    for model, kind in [("lstm", InPlaceStepper), ("rnn", InPlaceStepper), ("gru", Stepper)]:
        net = CharRNN(ModelConfig(len(VOCAB), model, 8, 2), rng=np.random.default_rng(0))
        for batch_size in (1, 3):
            stepper, _ = net.start_sampling(np.array([1, 2]), batch_size)
            assert type(stepper) is kind and stepper.batch_size == batch_size
    with pytest.raises(ValueError, match="LSTM or Elman"):
        InPlaceStepper(net, net.initial_state(1))  # a GRU


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_batched_stepper_matches_forward_stream_by_stream(model):
    """B streams stepped together give, stream by stream, the batched forward's logits."""
    net = make_model(model)
    ids = np.random.default_rng(1).integers(0, len(VOCAB), (10, 3))  # (T, B)
    start = tuple(np.random.default_rng(2).normal(size=s.shape) for s in net.initial_state(3))
    logits, _ = net.forward(ids, start)
    stepper = Stepper(net, start)
    for t in range(len(ids)):
        np.testing.assert_allclose(stepper.step(ids[t]), logits[t], rtol=1e-10, atol=1e-12)


def test_sampling_is_reproducible_and_seeded():
    net = make_model(dtype="float32", hidden=16)
    a = "".join(generate(net, VOCAB, "ROMEO.", length=200, temperature=1.0, random_seed=5))
    b = "".join(generate(net, VOCAB, "ROMEO.", length=200, temperature=1.0, random_seed=5))
    c = "".join(generate(net, VOCAB, "ROMEO.", length=200, temperature=1.0, random_seed=6))
    assert a == b and a != c
    assert a.startswith("ROMEO.") and len(a) == 206


def test_unknown_seed_characters_are_named():
    with pytest.raises(KeyError, match="'#'"):
        next(generate(make_model(dtype="float32", hidden=16), VOCAB, "ab#", length=10))


def test_top_k_and_top_p_filter():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(filter_logits(logits, 1.0, top_k=2)).sum() == 2
    assert np.isfinite(filter_logits(logits, 1.0, top_p=0.7)).sum() == 2
    assert np.isfinite(filter_logits(logits, 1.0, top_p=0.85)).sum() == 3


def test_filter_logits_row_by_row_is_the_single_row_filter():
    rows = np.random.default_rng(3).normal(size=(5, 12)) * 3
    for kwargs in ({"top_k": 3}, {"top_p": 0.6}, {"top_k": 5, "top_p": 0.9}):
        batched = filter_logits(rows, 0.7, **kwargs)
        for row, out in zip(rows, batched):
            np.testing.assert_array_equal(filter_logits(row, 0.7, **kwargs), out)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(filter_logits(logits, 1.0, top_p=0.5)).sum() == 1  # the likeliest alone holds 0.5


@pytest.mark.parametrize("options", [
    {"temperature": 1.0}, {"temperature": 0.7}, {"temperature": 1.2, "top_k": 5}, {"temperature": 0.9, "top_p": 0.8},
])
def test_sample_i_is_the_same_whatever_the_number_of_samples(options):
    """Sample i of a batch is what generate() gives with sample i's generator, for N = 1, 3 and 6."""
    net = make_model()
    alone = ["".join(generate(net, VOCAB, "The ", length=300, random_seed=rng, **options)) for rng in sample_rngs(7, 6)]
    assert len(set(alone)) == 6 and all(len(text) == 304 for text in alone)
    for n in (1, 3, 6):
        texts = ["".join(pieces) for pieces in zip(*generate_batch(net, VOCAB, n, "The ", length=300, random_seed=7,
                                                                   **options))]
        assert texts == alone[:n]


def test_greedy_batch_repeats_one_text():
    net = make_model()
    texts = ["".join(p) for p in zip(*generate_batch(net, VOCAB, 4, "", length=50, temperature=0))]
    assert len(set(texts)) == 1 and texts[0] == "".join(generate(net, VOCAB, "", length=50, temperature=0))


def test_stream_samples_in_order_whatever_the_batch_size():
    net = make_model("gru")
    runs = []
    for batch_size in (1, 2, 5, 256):
        pieces = list(stream_samples(net, VOCAB, 5, "A", length=40, random_seed=11, batch_size=batch_size))
        indices = [i for i, _ in pieces]
        assert indices == sorted(indices)  # each sample complete before the next
        runs.append(["".join(p for i, p in pieces if i == k) for k in range(5)])
    assert all(run == runs[0] for run in runs)
    assert runs[0] == ["".join(generate(net, VOCAB, "A", length=40, random_seed=rng)) for rng in sample_rngs(11, 5)]


def test_priming_in_pieces_equals_one_pass(monkeypatch, small_text):
    with open(small_text, encoding="utf-8") as f:
        text = f.read(3000)
    vocab = Vocab(tuple(sorted(set(text))))
    model = CharRNN(ModelConfig(len(vocab), "lstm", 32, 2, dtype="float64"), rng=np.random.default_rng(1))
    whole = "".join(generate(model, vocab, seed=text, length=200, temperature=0))
    monkeypatch.setattr(rnn_module, "PRIME_CHUNK", 7)
    assert "".join(generate(model, vocab, seed=text, length=200, temperature=0)) == whole


class _Scripted:
    """A stand-in model whose most likely next symbol follows ``script`` (ids), whatever it is fed."""

    def __init__(self, script, vocab_size):
        self.logits = np.eye(vocab_size)[list(script)] * 10.0  # (n, V)

    def start_sampling(self, prime, batch_size):
        scripted = self

        class Stepper:
            t = 0

            def step(self, ids):
                self.t += 1
                return np.repeat(scripted.logits[self.t][None], batch_size, axis=0)

        return Stepper(), self.logits[0]


@pytest.mark.parametrize("seed", [b"", "caf", "caf\xc3".encode("latin-1")])
def test_bytes_models_sample_characters_of_several_bytes_whole(seed):
    """A bytes model's samples are decoded as byte streams: é and ✓ arrive whole, at their last byte."""
    vocab = Vocab(tuple(range(256)), bytes_mode=True)
    wanted = "é✓ a\n"
    script = list(wanted.encode("utf-8"))
    if isinstance(seed, bytes) and seed.endswith(b"\xc3"):
        script = script[1:]  # the seed's last byte is é's first
    for pieces in (list(generate(_Scripted(script, 256), vocab, seed, length=len(script), temperature=0)),
                   [p[1] for p in generate_batch(_Scripted(script, 256), vocab, 2, seed, length=len(script),
                                                        temperature=0)]):
        text = "".join(pieces)
        assert text.endswith(wanted) and "\ufffd" not in text
        assert "" in pieces  # a lead byte alone shows nothing yet
