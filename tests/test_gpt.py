"""The Transformer (attention.py, gpt.py): float64 gradient checks, a PyTorch reference, cached sampling."""

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error

from charrnn.gpt import CharGPT, GPTConfig
from charrnn.nn import attention as L


def check_layer(forward, backward, inputs, dout_shape, rng, tol=1e-6):
    """loss = sum(w * forward(**inputs)): every analytic gradient against the numerical one."""
    w = rng.normal(size=dout_shape)

    def loss():
        out, _ = forward(**{k: v.copy() for k, v in inputs.items()})
        return float((out * w).sum())

    _, cache = forward(**{k: v.copy() for k, v in inputs.items()})
    grads = backward(w.copy(), cache)
    for name, value in inputs.items():
        numeric = numerical_grad(loss, value)
        assert grads[name].shape == value.shape
        assert rel_error(grads[name], numeric) < tol, name


def test_layernorm_gradients():
    rng = np.random.default_rng(0)
    N, C = 5, 6
    inputs = {"x": rng.normal(1, 2, (N, C)), "g": rng.normal(1, 0.3, C), "b": rng.normal(0, 0.3, C)}
    check_layer(L.layernorm_forward, L.layernorm_backward, inputs, (N, C), rng)


def test_layernorm_normalises():
    rng = np.random.default_rng(1)
    out, _ = L.layernorm_forward(rng.normal(3, 5, (4, 32)), np.ones(32), np.zeros(32))
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), 1, rtol=1e-3)


def test_gelu_gradients_and_values():
    rng = np.random.default_rng(2)
    inputs = {"x": rng.normal(0, 2, (4, 7))}
    check_layer(L.gelu_forward, L.gelu_backward, inputs, (4, 7), rng)
    x = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    # the tanh form, written out
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(L.gelu_forward(x.copy())[0], expected, rtol=1e-14)


def test_mlp_gradients():
    rng = np.random.default_rng(3)
    N, C = 4, 3
    inputs = {
        "x": rng.normal(size=(N, C)),
        "W_fc": rng.normal(0, 0.5, (C, 4 * C)),
        "b_fc": rng.normal(0, 0.5, 4 * C),
        "W_proj": rng.normal(0, 0.5, (4 * C, C)),
        "b_proj": rng.normal(0, 0.5, C),
    }
    check_layer(L.mlp_forward, L.mlp_backward, inputs, (N, C), rng)


def dropout_mask(rng, shape, rate=0.4):
    return (rng.random(shape) >= rate) / (1 - rate)


@pytest.mark.parametrize("dropout", [False, True])
def test_attention_gradients(dropout):
    rng = np.random.default_rng(4)
    B, T, C, nh = 2, 5, 6, 2
    att_mask = dropout_mask(rng, (B, nh, T, T)) if dropout else None
    inputs = {
        "x": rng.normal(size=(B, T, C)),
        "W_qkv": rng.normal(0, 0.5, (C, 3 * C)),
        "b_qkv": rng.normal(0, 0.5, 3 * C),
        "W_proj": rng.normal(0, 0.5, (C, C)),
        "b_proj": rng.normal(0, 0.5, C),
    }

    def forward(**kw):
        return L.attention_forward(**kw, num_heads=nh, att_mask=att_mask)

    check_layer(forward, L.attention_backward, inputs, (B, T, C), rng)


def naive_attention(x, W_qkv, b_qkv, W_proj, b_proj, nh, att_mask=None):
    """One sequence, one head, one position at a time: the oracle for the batched version (``att_mask``:
    attention dropout, each position's weights times its row of the mask)."""
    B, T, C = x.shape
    hs = C // nh
    out = np.zeros((B, T, C))
    for b in range(B):
        q, k, v = np.split(x[b] @ W_qkv + b_qkv, 3, axis=1)
        heads = []
        for h in range(nh):
            cols = slice(h * hs, (h + 1) * hs)
            rows = []
            for t in range(T):
                scores = k[: t + 1, cols] @ q[t, cols] / np.sqrt(hs)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                if att_mask is not None:
                    p *= att_mask[b, h, t, : t + 1]
                rows.append(p @ v[: t + 1, cols])
            heads.append(np.array(rows))
        out[b] = np.concatenate(heads, axis=1) @ W_proj + b_proj
    return out


def test_attention_is_causal_and_matches_naive():
    rng = np.random.default_rng(5)
    B, T, C, nh = 2, 6, 8, 4
    x = rng.normal(size=(B, T, C))
    weights = (rng.normal(0, 0.5, (C, 3 * C)), rng.normal(0, 0.5, 3 * C), rng.normal(0, 0.5, (C, C)),
               rng.normal(0, 0.5, C))
    out, _ = L.attention_forward(x, *weights, nh)
    np.testing.assert_allclose(out, naive_attention(x, *weights, nh), rtol=1e-12, atol=1e-12)
    later = x.copy()
    later[:, 3:] += 1.0  # changing positions 3.. leaves positions 0..2 alone
    out2, _ = L.attention_forward(later, *weights, nh)
    np.testing.assert_array_equal(out2[:, :3], out[:, :3])
    assert not np.allclose(out2[:, 3:], out[:, 3:])
    att_mask = dropout_mask(rng, (B, nh, T, T))
    dropped, _ = L.attention_forward(x, *weights, nh, att_mask=att_mask)
    np.testing.assert_allclose(dropped, naive_attention(x, *weights, nh, att_mask), rtol=1e-12, atol=1e-12)
    assert not np.allclose(dropped, out)


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


def torch_reference(model):
    """A PyTorch model written here from the equations (not from our code), loaded with ``model``'s weights."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    cfg, p = model.config, model.params
    t = {name: torch.tensor(np.array(value)) for name, value in p.items()}

    class Block(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            h = f"h{self.k}."
            B, T, C = x.shape
            nh = cfg.num_heads
            a = F.layer_norm(x, (C,), t[h + "ln1.g"], t[h + "ln1.b"], eps=1e-5)
            q, k, v = (a @ t[h + "attn.W_qkv"] + t[h + "attn.b_qkv"]).split(C, dim=2)
            q, k, v = (z.view(B, T, nh, C // nh).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).reshape(B, T, C)
            x = x + y @ t[h + "attn.W_proj"] + t[h + "attn.b_proj"]
            m = F.layer_norm(x, (C,), t[h + "ln2.g"], t[h + "ln2.b"], eps=1e-5)
            m = F.gelu(m @ t[h + "mlp.W_fc"] + t[h + "mlp.b_fc"], approximate="tanh")
            return x + m @ t[h + "mlp.W_proj"] + t[h + "mlp.b_proj"]

    blocks = [Block(k) for k in range(cfg.num_layers)]

    def forward(ids):  # ids (B, T)
        x = t["wte"][ids] + t["wpe"][: ids.shape[1]]
        for block in blocks:
            x = block(x)
        x = F.layer_norm(x, (cfg.hidden_size,), t["ln_f.g"], t["ln_f.b"], eps=1e-5)
        return x @ t["W_hy"] + t["b_y"]

    return torch, forward


def test_logits_match_pytorch():
    model = tiny_model(vocab_size=11, hidden_size=12, num_layers=3, num_heads=3, context_length=9)
    torch, reference = torch_reference(model)
    ids = np.random.default_rng(12).integers(0, 11, (9, 4))  # (T, B)
    logits, _ = model.forward(ids)
    expected = reference(torch.tensor(ids.T)).numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-10)


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
    from charrnn.evaluate import window_nlls

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
