"""The torch engine computes what the numpy model computes, alone and split over processes."""

import numpy as np
import pytest

from charrnn import CharRNN, GPTConfig, ModelConfig
from charrnn.evaluate import chunk_nll, chunk_nlls
from charrnn.gpt import CharGPT

torch = pytest.importorskip("torch")
from charrnn.engines.torch_engine import TorchEngine, TorchEngineError  # noqa: E402

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


def twin_models(model, activation="tanh", **extra):
    config = ModelConfig(11, model, 16, 2, activation=activation, dtype="float64", **{"dropout": 0.0, **extra})
    net = CharRNN(config, rng=np.random.default_rng(0))
    return net, CharRNN(config, params=dict(net.params))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model,activation", CELLS)
def test_loss_gradients_state_and_scores_match_numpy(model, activation, device):
    net, reference = twin_models(model, activation)
    rng = np.random.default_rng(1)
    inputs, targets = rng.integers(0, 11, (9, 5)), rng.integers(0, 11, (9, 5))
    state = tuple(rng.normal(size=(2, 5, 16)) for _ in net.cell.state_names)
    with TorchEngine(net, device=device) as engine:
        for carried in (None, state):
            loss, grads, final = engine.loss_and_grads(inputs, targets, carried)
            want_loss, want_grads, want_final = reference.loss_and_grads(inputs, targets, carried)
            assert loss == pytest.approx(want_loss, abs=1e-12)
            for name in want_grads:
                np.testing.assert_allclose(grads[name], want_grads[name], rtol=0, atol=1e-12, err_msg=name)
            for a, b in zip(final, want_final):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
            nll, final = engine.chunk_nll(inputs, targets, carried)
            want_nll, want_final = chunk_nll(reference, inputs, targets, carried)
            assert nll == pytest.approx(want_nll, abs=1e-10)
            for a, b in zip(final, want_final):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def twin_gpts():
    config = GPTConfig(11, hidden_size=16, num_layers=2, num_heads=4, context_length=8, dtype="float64")
    net = CharGPT(config, rng=np.random.default_rng(0))
    rng = np.random.default_rng(5)
    for value in net.params.values():  # larger than the 0.02 initialisation, biases and gains off 0 and 1
        value += rng.normal(0.0, 0.3, value.shape)
    return net, CharGPT(config, params=dict(net.params))


@pytest.mark.parametrize("device", DEVICES)
def test_gpt_loss_gradients_and_scores_match_numpy(device):
    """The same weights give gpt.py's loss, every gradient and every position's score (float64)."""
    net, reference = twin_gpts()
    rng = np.random.default_rng(1)
    inputs, targets = rng.integers(0, 11, (8, 5)), rng.integers(0, 11, (8, 5))
    with TorchEngine(net, device=device) as engine:
        loss, grads, state = engine.loss_and_grads(inputs, targets)
        nlls, _ = engine.chunk_nlls(inputs[:6], targets[:6])  # a shorter window than the context
    want_loss, want_grads, _ = reference.loss_and_grads(inputs, targets)
    assert state == () and loss == pytest.approx(want_loss, abs=1e-12)
    for name in want_grads:
        np.testing.assert_allclose(grads[name], want_grads[name], rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(nlls, chunk_nlls(reference, inputs[:6], targets[:6], None)[0], rtol=0, atol=1e-12)


def test_gpt_dropout_follows_the_seed():
    """The step's seed fixes every mask (embeddings, attention weights, branches): same seed, same step."""
    net, reference = twin_gpts()
    rng = np.random.default_rng(3)
    inputs, targets = rng.integers(0, 11, (8, 4)), rng.integers(0, 11, (8, 4))
    with TorchEngine(net) as engine:
        first = engine.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(7), dropout=0.2)
        first = first[1].flat.copy()
        again = engine.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(7), dropout=0.2)[1].flat
        assert np.array_equal(first, again)
        other = engine.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(8), dropout=0.2)[1].flat
        assert not np.allclose(first, other)
    assert not np.allclose(first, reference.loss_and_grads(inputs, targets)[1].flat)


def test_engine_reads_parameters_as_they_are_updated():
    """The optimizer updates numpy's parameters in place; the next step must see them."""
    net, reference = twin_models("lstm")
    rng = np.random.default_rng(2)
    inputs, targets = rng.integers(0, 11, (6, 3)), rng.integers(0, 11, (6, 3))
    with TorchEngine(net) as engine:
        engine.loss_and_grads(inputs, targets)
        net.params.flat[...] += 0.01
        reference.params.flat[...] += 0.01
        _, grads, _ = engine.loss_and_grads(inputs, targets)
    np.testing.assert_allclose(grads.flat, reference.loss_and_grads(inputs, targets)[1].flat, rtol=0, atol=1e-12)


def test_dropout_and_weight_drop_follow_the_seed():
    """Masks come from the training RNG: the same seed gives the same step, another seed another, and the
    expected loss stays that of the model (inverted dropout)."""
    net, _ = twin_models("gru", dropout=0.3, weight_drop=0.2)
    rng = np.random.default_rng(3)
    inputs, targets = rng.integers(0, 11, (8, 4)), rng.integers(0, 11, (8, 4))
    with TorchEngine(net) as engine:
        first = engine.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(7))[1].flat.copy()
        again = engine.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(7))[1].flat.copy()
        other = engine.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(8))[1].flat.copy()
        plain = engine.loss_and_grads(inputs, targets)[1].flat.copy()
    assert np.array_equal(first, again)
    assert not np.allclose(first, other) and not np.allclose(first, plain)


def test_sigmoid_rnn_is_refused_in_one_line():
    net, _ = twin_models("rnn", "sigmoid")
    with pytest.raises(TorchEngineError, match="tanh or relu"):
        TorchEngine(net)


def test_cuda_without_a_gpu_is_refused_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    net, _ = twin_models("lstm")
    with pytest.raises(TorchEngineError, match="no CUDA GPU") as info:
        TorchEngine(net, device="cuda")
    assert "\n" not in str(info.value)
