"""Each optimizer's in-place update against its textbook formula, over a few steps."""

import numpy as np
import pytest

from charrnn.optim import make_optimizer


def reference(name, p, grads, lr, clip):
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = np.clip(g, -clip, clip)
        if name == "sgd":
            p -= lr * g
        elif name == "adagrad":
            m += g * g
            p -= lr * g / np.sqrt(m + 1e-8)
        elif name == "rmsprop":
            m = 0.95 * m + 0.05 * g * g
            p -= lr * g / (np.sqrt(m) + 1e-8)
        else:
            m = 0.9 * m + 0.1 * g
            v = 0.99 * v + 0.01 * g * g
            p -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8 / np.sqrt(1 - 0.99**t))
    return p


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam"])
def test_update_matches_formula(name):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3))
    grads = [rng.normal(scale=3, size=(4, 3)) for _ in range(4)]
    params = {"w": start.copy()}
    opt = make_optimizer(name, params, 0.05, grad_clip=2.0)
    for g in grads:
        opt.step(params, {"w": g.copy()})
    np.testing.assert_allclose(params["w"], reference(name, start, grads, 0.05, 2.0), rtol=1e-10, atol=1e-12)
    assert int(opt.state["steps"]) == 4


def test_weight_decay_shrinks_parameters():
    params = {"w": np.ones(3)}
    make_optimizer("sgd", params, 0.1, weight_decay=0.5).step(params, {"w": np.zeros(3)})
    np.testing.assert_allclose(params["w"], 0.95)
