"""The Transformer (models/gpt.py): float64 gradient checks of the whole model, cached sampling, its scoring windows
and its step on the worker pool."""

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error

from charrnn.models.gpt import CharGPT, GPTConfig


def tiny_model(dtype="float64", **overrides):
    config = dict(vocab_size=7, hidden_size=8, num_layers=2, num_heads=2, context_length=6, dtype=dtype)
    config.update(overrides)
    model = CharGPT(GPTConfig(**config), rng=np.random.default_rng(6))
    rng = np.random.default_rng(7)
    for value in model.params.values():  # larger than the 0.02 initialisation, so every path matters
        value[...] = rng.normal(0, 0.4, value.shape)
    return model


def test_model_gradients():
    model = tiny_model()
    rng = np.random.default_rng(8)
    inputs, targets = rng.integers(0, 7, (5, 3)), rng.integers(0, 7, (5, 3))  # (T, B)
    _, grads, state = model.loss_and_grads(inputs, targets)
    assert state == ()
    for name, value in model.params.items():  # every parameter, at up to 16 of its entries
        flat = value.reshape(-1)
        picks = rng.choice(flat.size, min(16, flat.size), replace=False)
        numeric = np.zeros(len(picks))
        for j, i in enumerate(picks):
            old = flat[i]
            flat[i] = old + 1e-6
            plus = model.loss_and_grads(inputs, targets)[0]
            flat[i] = old - 1e-6
            minus = model.loss_and_grads(inputs, targets)[0]
            flat[i] = old
            numeric[j] = (plus - minus) / 2e-6
        assert rel_error(grads[name].reshape(-1)[picks], numeric) < 1e-6, name


def test_model_gradients_with_dropout():
    """The same dropout masks (same seed) in every evaluation: the loss is a smooth function of the weights."""
    model = tiny_model(dropout=0.3)
    rng = np.random.default_rng(9)
    inputs, targets = rng.integers(0, 7, (4, 2)), rng.integers(0, 7, (4, 2))

    def loss_and_grads():
        return model.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(10))

    _, grads, _ = loss_and_grads()
    for name in ("wte", "h0.attn.W_qkv", "h1.mlp.W_fc", "h1.ln2.g", "W_hy"):
        numeric = numerical_grad(lambda: loss_and_grads()[0], model.params[name])
        assert rel_error(grads[name], numeric) < 1e-6, name
    no_dropout, _, _ = model.loss_and_grads(inputs, targets)
    assert no_dropout != loss_and_grads()[0]


def test_forward_matches_loss():
    model = tiny_model()
    rng = np.random.default_rng(11)
    inputs, targets = rng.integers(0, 7, (6, 4)), rng.integers(0, 7, (6, 4))
    logits, _ = model.forward(inputs)
    assert logits.shape == (6, 4, 7)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, targets[..., None], 2).mean()
    assert model.loss_and_grads(inputs, targets)[0] == pytest.approx(expected, rel=1e-12)


def test_bad_shapes():
    with pytest.raises(ValueError, match="does not divide"):
        GPTConfig(vocab_size=5, hidden_size=10, num_heads=3).validate()
    model = tiny_model()
    with pytest.raises(ValueError, match="context"):
        model.forward(np.zeros((7, 1), int))


@pytest.mark.parametrize("B", [1, 2])
def test_cached_sampling_matches_full_recompute(B):
    """Every step's logits equal a full forward over the window the sampler holds, across several slides,
    for every stream of a batch (each with its own characters)."""
    model = tiny_model(context_length=6)
    rng = np.random.default_rng(13)
    sampler, logits = model.start_sampling(np.array([1, 2, 3]), batch_size=B)
    history = [[1, 2, 3] for _ in range(B)]
    np.testing.assert_allclose(logits, model.forward(np.array(history[0])[:, None])[0][-1, 0], atol=1e-12)
    windows = set()
    for _ in range(20):
        ids = rng.integers(0, 7, B)
        for h, i in zip(history, ids):
            h.append(int(i))
        logits = sampler.step(ids)
        assert logits.shape == (B, 7)
        n = sampler.window.shape[1]
        windows.add(n)
        assert 3 <= n <= 6  # at least half a context
        for b in range(B):
            assert sampler.window[b].tolist() == history[b][-n:]
            full = model.forward(np.array(history[b][-n:])[:, None])[0][-1, 0]
            np.testing.assert_allclose(logits[b], full, rtol=0, atol=1e-12)
    assert windows == {3, 4, 5, 6}  # it slid


def test_window_nlls_follow_the_documented_contexts():
    """Each character's score equals a forward over exactly the context the docstring promises."""
    from charrnn.models.scoring import window_nlls

    model = tiny_model(context_length=6)  # P = 6, S = 3
    ids = np.random.default_rng(14).integers(0, 7, 30)
    nlls = window_nlls(model, ids, 1, batch_size=2)
    for t in range(1, 30):
        a = 0 if t <= 6 else ((t - 7) // 3 + 1) * 3
        assert 4 <= t - a <= 6 or t <= 6
        logits = model.forward(ids[a:t, None])[0][-1, 0]
        expected = np.log(np.exp(logits).sum()) - logits[ids[t]]
        assert nlls[t - 1] == pytest.approx(expected, rel=1e-10), t
    # any split of the text gives the same numbers: pieces scored from their own offsets
    pieces = [window_nlls(model, ids[max(0, s - 6) : e], s - max(0, s - 6), max(0, s - 6))
              for s, e in ((1, 5), (5, 17), (17, 30))]
    np.testing.assert_allclose(np.concatenate(pieces), nlls, rtol=1e-12)


def test_workers_compute_the_in_process_step():
    from charrnn.engines.pool import WorkerPool

    model = tiny_model(dtype="float64")
    rng = np.random.default_rng(15)
    inputs, targets = rng.integers(0, 7, (6, 4)), rng.integers(0, 7, (6, 4))
    loss, grads, _ = model.loss_and_grads(inputs, targets)
    expected = grads.flat.copy()
    with WorkerPool(model, batch_size=4, seq_length=6, workers=2) as pool:
        pool_loss, pool_grads, state = pool.loss_and_grads(inputs, targets)
        nll, _ = pool.chunk_nll(inputs, targets)
    assert state == ()
    assert pool_loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(pool_grads.flat, expected, rtol=1e-10, atol=1e-14)
    assert nll == pytest.approx(loss * 24, rel=1e-12)
