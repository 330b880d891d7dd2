"""The cells against their textbook equations: a plain, slow reference forward pass.

The reference is written from the equations of docs/models.md, independently of cells.py:
sigmoid as 1 / (1 + e^-a) and tanh as np.tanh, every gate in the natural (B, G·H) layout sliced by
columns, one Python loop over timesteps and layers, the one-hot input as a product with an explicit
one-hot matrix. The gradient checks show that backward matches forward; these show that forward is
the model it claims to be, so a mistake made the same way in both (two gates swapped, a bias on the
wrong block) fails here.

The Transformer's forward pass is checked the same way against a PyTorch model written from its equations.
"""

import numpy as np
import pytest

from charrnn.models.gpt import CharGPT, GPTConfig
from charrnn.models.rnn import CharRNN, ModelConfig

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid"), ("lstm", "tanh"), ("gru", "tanh")]

V, H = 7, 8


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


ACTIVATION = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0), "sigmoid": sigmoid}


def reference_forward(params, model, activation, ids, state):
    """Logits (T, B, V) and final state for ``ids`` (T, B) from ``state`` (a tuple of (L, B, H))."""
    T, B = ids.shape
    L = state[0].shape[0]
    h = [state[0][k].copy() for k in range(L)]  # (B, H) each
    c = [state[1][k].copy() for k in range(L)] if model == "lstm" else None
    logits = np.empty((T, B, V))
    for t in range(T):
        x = np.eye(V)[ids[t]]  # (B, V): one-hot
        for k in range(L):
            W_xh, W_hh, b = params[f"l{k}.W_xh"], params[f"l{k}.W_hh"], params[f"l{k}.b"]
            if model == "rnn":  # h = f(x W_xh + h W_hh + b)
                h[k] = ACTIVATION[activation](x @ W_xh + h[k] @ W_hh + b)
            elif model == "lstm":  # [i, f, o, g] = [σ, σ, σ, tanh](x W_xh + h W_hh + b)
                a = x @ W_xh + h[k] @ W_hh + b  # (B, 4H)
                i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 2 * H : 3 * H])
                g = np.tanh(a[:, 3 * H :])
                c[k] = f * c[k] + i * g
                h[k] = o * np.tanh(c[k])
            else:  # [r, z] = σ(x W_xrz + h W_hrz + b_rz); n = tanh(x W_xn + b_n + r (h W_hn + b_hn)); h = (1-z) n + z h
                xa, ha = x @ W_xh + b, h[k] @ W_hh  # (B, 3H) each
                r = sigmoid(xa[:, :H] + ha[:, :H])
                z = sigmoid(xa[:, H : 2 * H] + ha[:, H : 2 * H])
                n = np.tanh(xa[:, 2 * H :] + r * (ha[:, 2 * H :] + params[f"l{k}.b_hn"]))
                h[k] = (1 - z) * n + z * h[k]
            x = h[k]
        logits[t] = x @ params["W_hy"] + params["b_y"]
    final = (np.stack(h),) if model != "lstm" else (np.stack(h), np.stack(c))
    return logits, final


def random_model(model, activation, num_layers, seed=0):
    """A float64 model with every parameter drawn at random (no zero biases, no orthogonal symmetry)."""
    config = ModelConfig(V, model, H, num_layers, activation=activation, dropout=0.0, dtype="float64")
    net = CharRNN(config, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    for value in net.params.values():
        value[...] = rng.normal(0.0, 0.5, value.shape)
    return net


def random_inputs(net, T, B, seed=2):
    rng = np.random.default_rng(seed)
    ids, targets = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state = tuple(rng.normal(0.0, 0.5, s.shape) for s in net.initial_state(B))
    if net.config.activation == "relu":
        state = tuple(np.abs(s) for s in state)
    return ids, targets, state


def cross_entropy(logits, targets):
    z = logits - logits.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, targets[..., None], axis=-1).mean()


@pytest.mark.parametrize("model,activation", CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("B", [1, 5])
def test_forward_matches_the_textbook_equations(model, activation, num_layers, B):
    """Logits and final state of ``forward`` (the sampler's path at batch 1, the per-gate blocks above)
    and the loss of ``loss_and_grads`` (the training path) against the reference."""
    net = random_model(model, activation, num_layers)
    ids, targets, state = random_inputs(net, T=6, B=B)
    want_logits, want_state = reference_forward(net.params, model, activation, ids, state)
    logits, final = net.forward(ids, state)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-10, atol=1e-12)
    assert len(final) == len(want_state)
    for got, want in zip(final, want_state):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    loss, _, train_final = net.loss_and_grads(ids, targets, state)
    assert loss == pytest.approx(cross_entropy(want_logits, targets), rel=1e-12)
    for got, want in zip(train_final, want_state):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model,first,second", [("lstm", 0, 1), ("lstm", 2, 3), ("gru", 0, 1), ("gru", 1, 2)])
def test_the_reference_tells_swapped_gates_apart(model, first, second):
    """The comparison can fail: a model whose gate blocks ``first`` and ``second`` are swapped (in W_xh,
    W_hh and b) is a different model, and the reference says so."""
    net = random_model(model, "tanh", 2)
    ids, _, state = random_inputs(net, T=6, B=3)
    want_logits, _ = reference_forward(net.params, model, "tanh", ids, state)
    for name in ("W_xh", "W_hh", "b"):
        for k in range(2):
            value = net.params[f"l{k}.{name}"]
            a, b = value[..., first * H : (first + 1) * H].copy(), value[..., second * H : (second + 1) * H].copy()
            value[..., first * H : (first + 1) * H], value[..., second * H : (second + 1) * H] = b, a
    logits, _ = net.forward(ids, state)
    assert np.abs(logits - want_logits).max() > 1e-3


def test_the_lstm_forget_bias_starts_on_the_block_the_reference_reads_as_f():
    net = CharRNN(ModelConfig(V, "lstm", H, 2), rng=np.random.default_rng(0))
    for k in range(2):
        b = net.params[f"l{k}.b"]
        assert (b[H : 2 * H] == 1).all() and (np.delete(b, np.s_[H : 2 * H]) == 0).all()


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


def random_gpt():
    """A float64 gpt with every parameter drawn at random (larger than the 0.02 initialisation)."""
    config = GPTConfig(vocab_size=11, hidden_size=12, num_layers=3, num_heads=3, context_length=9, dtype="float64")
    model = CharGPT(config, rng=np.random.default_rng(6))
    rng = np.random.default_rng(7)
    for value in model.params.values():
        value[...] = rng.normal(0, 0.4, value.shape)
    return model


def test_logits_match_pytorch():
    model = random_gpt()
    torch, reference = torch_reference(model)
    ids = np.random.default_rng(12).integers(0, 11, (9, 4))  # (T, B)
    logits, _ = model.forward(ids)
    expected = reference(torch.tensor(ids.T)).numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-10)
