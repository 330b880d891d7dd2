"""The check every resume test ends with: two runs' latest checkpoints are bit-identical."""

import os

import numpy as np

from charrnn.io.checkpoint import load_checkpoint


def assert_same_latest(one, two, step):
    """The latest.npz of checkpoint directories ``one`` and ``two`` are both at ``step`` and hold the same
    parameters and optimizer state, bit for bit; returns the first."""
    a, b = load_checkpoint(os.path.join(one, "latest.npz")), load_checkpoint(os.path.join(two, "latest.npz"))
    assert a.meta["step"] == b.meta["step"] == step
    for name in a.model.params:
        np.testing.assert_array_equal(a.model.params[name], b.model.params[name])
    for key in a.optimizer_state:
        np.testing.assert_array_equal(a.optimizer_state[key], b.optimizer_state[key])
    return a
