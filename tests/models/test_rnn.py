"""The recurrent language model (models/rnn.py): parameter shapes, the loss's gradients against centred numerical
differences (float64), state carried across chunks, buffers reused, streams kept apart."""


import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error

from charrnn.models.rnn import CharRNN, ModelConfig, init_params, param_shapes

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid"), ("lstm", "tanh"), ("gru", "tanh")]


def test_param_shapes_match_init():
    for model in ("rnn", "lstm", "gru"):
        config = ModelConfig(vocab_size=9, model=model, hidden_size=5, num_layers=3)
        params = init_params(config, np.random.default_rng(0))
        assert {k: v.shape for k, v in params.items()} == param_shapes(config)
        assert all(v.dtype == np.float32 for v in params.values())


@pytest.mark.parametrize("model,activation", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_network_loss_gradients(model, activation, num_layers):
    """The full loss over several timesteps from a carried (non-zero) state, every parameter."""
    V, H, T, B = 5, 4, 4, 2
    config = ModelConfig(
        vocab_size=V, model=model, hidden_size=H, num_layers=num_layers, activation=activation, dtype="float64"
    )
    rng = np.random.default_rng(1)
    net = CharRNN(config, rng=rng)
    inputs = rng.integers(0, V, (T, B))
    targets = rng.integers(0, V, (T, B))
    state = tuple(rng.normal(0, 0.5, (num_layers, B, H)) for _ in net.cell.state_names)
    if activation == "relu":
        state = tuple(np.abs(s) for s in state)
        for name in net.params:
            if ".b" in name:
                net.params[name] += 0.5

    def loss():
        return net.loss_and_grads(inputs, targets, state)[0]

    _, grads, _ = net.loss_and_grads(inputs, targets, state)
    assert set(grads) == set(net.params)
    for name, value in net.params.items():
        assert grads[name].shape == value.shape, name
        err = rel_error(grads[name], numerical_grad(loss, value))
        assert err < 1e-6, (name, err)


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_dropout_gradients_with_fixed_masks(model):
    """With dropout and weight drop on, the gradient is that of the loss under the same masks."""
    V, H, T, B = 5, 4, 3, 2
    config = ModelConfig(vocab_size=V, model=model, hidden_size=H, num_layers=2, dropout=0.3, weight_drop=0.4,
                         dtype="float64")
    net = CharRNN(config, rng=np.random.default_rng(2))
    rng = np.random.default_rng(3)
    inputs, targets = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))

    def loss():
        return net.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(7))[0]

    _, grads, _ = net.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(7))
    for name in ("l0.W_hh", "l1.W_hh", "l1.W_xh", "W_hy"):
        assert rel_error(grads[name], numerical_grad(loss, net.params[name])) < 1e-6
    assert (grads["l0.W_hh"] == 0).any()  # dropped weights get no gradient
    assert loss() != net.loss_and_grads(inputs, targets)[0]  # the masks do change the loss


def test_forward_matches_loss_and_state_carry():
    """Two chunks with the state carried equal one long chunk."""
    config = ModelConfig(vocab_size=7, model="lstm", hidden_size=6, num_layers=2, dtype="float64")
    net = CharRNN(config, rng=np.random.default_rng(4))
    ids = np.random.default_rng(5).integers(0, 7, (10, 3))
    whole, state_whole = net.forward(ids)
    first, state = net.forward(ids[:4])
    second, state = net.forward(ids[4:], state)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, atol=1e-12)
    for a, b in zip(state, state_whole):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert state_whole[0].shape == (2, 3, 6) and len(state_whole) == 2


def test_shorter_chunks_reuse_the_buffers_exactly():
    """A chunk shorter than an earlier one runs in a prefix of its buffers: same loss and gradients."""
    config = ModelConfig(vocab_size=7, model="gru", hidden_size=6, num_layers=2, dtype="float64")
    used, fresh = CharRNN(config, rng=np.random.default_rng(4)), CharRNN(config, rng=np.random.default_rng(4))
    rng = np.random.default_rng(6)
    used.loss_and_grads(rng.integers(0, 7, (12, 3)), rng.integers(0, 7, (12, 3)))
    inputs, targets = rng.integers(0, 7, (5, 3)), rng.integers(0, 7, (5, 3))
    a, b = used.loss_and_grads(inputs, targets), fresh.loss_and_grads(inputs, targets)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1].flat, b[1].flat)


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_each_stream_of_a_batch_runs_as_if_alone(model):
    """A batch's streams do not mix: the batched path (products in blocks, gate-major steps)
    gives every stream the logits and state of a batch-1 run (one product, the sampler's path)."""
    config = ModelConfig(vocab_size=7, model=model, hidden_size=5, num_layers=2, dtype="float64")
    net = CharRNN(config, rng=np.random.default_rng(7))
    ids = np.random.default_rng(8).integers(0, 7, (6, 3))
    start = tuple(np.random.default_rng(9).normal(0, 1, s.shape) for s in net.initial_state(3))
    logits, state = net.forward(ids, start)
    for b in range(3):
        alone, alone_state = net.forward(ids[:, b : b + 1], tuple(s[:, b : b + 1] for s in start))
        np.testing.assert_allclose(logits[:, b : b + 1], alone, rtol=1e-10, atol=1e-12)
        for s, a in zip(state, alone_state):
            np.testing.assert_allclose(s[:, b : b + 1], a, rtol=1e-10, atol=1e-12)
