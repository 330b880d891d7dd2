"""Each optimizer's in-place update against its textbook formula, over a few steps."""

import numpy as np
import pytest

from charrnn.nn.optim import WeightAverage, make_optimizer
from charrnn.nn.packed import Packed


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
    params = Packed({"b": (2,), "w": (4, 3)}, np.float64, {"b": [1.0, -1.0], "w": start})
    opt = make_optimizer(name, params, 0.05, grad_clip=2.0)
    for g in grads:
        opt.step(params, Packed(params.shapes(), np.float64, {"w": g}))
    np.testing.assert_allclose(params["w"], reference(name, start, grads, 0.05, 2.0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(params["b"], [1.0, -1.0])  # a zero gradient leaves it be (adagrad, adam: eps)
    assert int(opt.state["steps"]) == 4


def test_weight_decay_shrinks_parameters():
    params = Packed({"w": (3,)}, np.float64, {"w": np.ones(3)})
    make_optimizer("sgd", params, 0.1, weight_decay=0.5).step(params, Packed({"w": (3,)}, np.float64))
    np.testing.assert_allclose(params["w"], 0.95)


def test_state_round_trip_continues_identically():
    """A saved and reloaded state gives the same next update (what resume relies on)."""
    rng = np.random.default_rng(1)
    shapes = {"a": (3, 2), "b": (5,)}
    grads = [Packed(shapes, np.float64, {k: rng.normal(size=s) for k, s in shapes.items()}) for _ in range(3)]
    one = Packed(shapes, np.float64)
    first = make_optimizer("adam", one, 0.01)
    for g in grads[:2]:
        first.step(one, Packed(shapes, np.float64, g))
    two = Packed(shapes, np.float64, one)
    second = make_optimizer("adam", two, 0.01)
    second.load_state({k: v.copy() for k, v in first.state.items()})
    first.step(one, Packed(shapes, np.float64, grads[2]))
    second.step(two, Packed(shapes, np.float64, grads[2]))
    np.testing.assert_array_equal(one.flat, two.flat)
    with pytest.raises(ValueError, match="does not match"):
        make_optimizer("rmsprop", two, 0.01).load_state(first.state)


def test_weight_average_is_the_mean_then_an_exponential_average():
    """Weight 1/t for the first ``horizon`` updates (the plain mean), then 1/horizon."""
    rng = np.random.default_rng(2)
    iterates = [rng.normal(size=5) for _ in range(7)]
    params = Packed({"w": (5,)}, np.float64, {"w": rng.normal(size=5)})
    average = WeightAverage(params, horizon=3)
    for t, value in enumerate(iterates, start=1):
        params["w"][...] = value
        average.update(params, t)
    expected = np.mean(iterates[:3], axis=0)
    for value in iterates[3:]:
        expected = expected + (value - expected) / 3
    np.testing.assert_allclose(average.params["w"], expected, rtol=1e-12)
    assert average.params.flat is not params.flat


def whole_vector_adam(p, grads, lr, weight_decay):
    """Adam with decoupled weight decay as passes over the whole vector, each as Adam's ``_update`` makes it."""
    m, v, tmp = np.zeros_like(p), np.zeros_like(p), np.empty_like(p)
    for t, g in enumerate(grads, start=1):
        p *= 1.0 - lr * weight_decay
        m *= 0.9
        np.multiply(g, 1 - 0.9, out=tmp)
        m += tmp
        v *= 0.99
        np.multiply(g, g, out=tmp)
        tmp *= 1 - 0.99
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += 1e-8
        np.divide(m, tmp, out=tmp)
        tmp *= lr * np.sqrt(1 - 0.99**t) / (1 - 0.9**t)
        p -= tmp
    return p


def test_blocked_update_gives_the_whole_vector_numbers():
    """An update runs block by block (BLOCK elements at a time), on a thread per CPU from SHARED_BLOCKS blocks:
    bit for bit what passes over the whole vector give, across block edges (float32)."""
    from charrnn.nn.optim import BLOCK, SHARED_BLOCKS

    rng = np.random.default_rng(3)
    n = SHARED_BLOCKS * BLOCK + BLOCK // 2
    start = rng.normal(size=n).astype(np.float32)
    grads = [rng.normal(size=n).astype(np.float32) for _ in range(3)]
    params = Packed({"w": (n,)}, np.float32, {"w": start})
    opt = make_optimizer("adam", params, 3e-3, grad_clip=0, weight_decay=0.1)
    for g in grads:
        assert opt.update(params, Packed({"w": (n,)}, np.float32, {"w": g}))
    np.testing.assert_array_equal(params.flat, whole_vector_adam(start.copy(), grads, 3e-3, 0.1))


def table_and_grads(rng, read):
    """Parameters with an input table (V=6 rows) and a matrix, and a gradient with rows ``read`` of the table only."""
    shapes = {"table": (6, 4), "w": (3, 5)}
    params = Packed(shapes, np.float64, {k: rng.normal(size=s) for k, s in shapes.items()})
    grads = Packed(shapes, np.float64, {"w": rng.normal(size=(3, 5))})
    grads["table"][read] = rng.normal(size=(len(read), 4))
    return params, grads


@pytest.mark.parametrize("name", ["sgd", "adagrad"])
def test_row_update_is_the_whole_update_without_weight_decay(name):
    """SGD's and Adagrad's update of a row without gradient changes nothing: updating the read rows alone gives
    the whole update's numbers, bit for bit, slots included."""
    rng = np.random.default_rng(4)
    read = np.array([0, 2, 5])
    params, grads = table_and_grads(rng, read)
    whole = Packed(params.shapes(), np.float64, params)
    by_row, dense = make_optimizer(name, params, 0.1), make_optimizer(name, whole, 0.1)
    for _ in range(3):
        assert by_row.update(params, grads, rows={"table": read})
        assert dense.update(whole, grads)
    np.testing.assert_array_equal(params.flat, whole.flat)
    for slot in by_row.slot:
        np.testing.assert_array_equal(by_row.slot[slot].flat, dense.slot[slot].flat)


def test_row_update_of_adam_leaves_unread_rows_alone():
    """Adam with weight decay by row: the read rows and the other parameters as the whole update makes them, the
    unread rows (weights and moments) as they were."""
    rng = np.random.default_rng(5)
    read = np.array([1, 3])
    params, grads = table_and_grads(rng, read)
    before = Packed(params.shapes(), np.float64, params)
    whole = Packed(params.shapes(), np.float64, params)
    by_row, dense = (make_optimizer("adam", p, 0.1, weight_decay=0.1) for p in (params, whole))
    assert by_row.update(params, grads, rows={"table": read})
    dense.update(whole, grads)
    np.testing.assert_array_equal(params["w"], whole["w"])
    np.testing.assert_array_equal(params["table"][read], whole["table"][read])
    unread = [0, 2, 4, 5]
    np.testing.assert_array_equal(params["table"][unread], before["table"][unread])
    assert not by_row.slot["m"]["table"][unread].any() and not by_row.slot["v"]["table"][unread].any()
    assert (whole["table"][unread] != before["table"][unread]).all()  # the whole update decays them
