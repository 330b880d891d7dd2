"""Checkpoints (io/checkpoint.py): a round trip gives identical logits, a directory resolves to best then latest,
files that are not ours or are broken are refused, new files get the permissions the umask gives."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from charrnn.io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.models.rnn import CharRNN, ModelConfig

VOCAB = Vocab(tuple("\n !,.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def make_model(model="lstm", dtype="float32"):
    config = ModelConfig(vocab_size=len(VOCAB), model=model, hidden_size=16, num_layers=2, dtype=dtype)
    return CharRNN(config, rng=np.random.default_rng(0))


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_round_trip_gives_identical_logits(tmp_path, model):
    net = make_model(model)
    path = str(tmp_path / "m.npz")
    hidden = tuple(np.ones((2, 3, 16), np.float32) for _ in net.cell.state_names)
    save_checkpoint(path, Checkpoint(net, VOCAB, {"step": 7}, {"steps": np.array(3)}, hidden))
    loaded = load_checkpoint(path)
    ids = np.random.default_rng(1).integers(0, len(VOCAB), (20, 3))
    np.testing.assert_array_equal(net.forward(ids)[0], loaded.model.forward(ids)[0])
    assert loaded.vocab == VOCAB and loaded.meta["step"] == 7
    assert loaded.model.config == net.config
    for a, b in zip(hidden, loaded.hidden_state):
        np.testing.assert_array_equal(a, b)


def test_directory_resolves_best_then_latest(tmp_path):
    net = make_model()
    save_checkpoint(str(tmp_path / "latest.npz"), Checkpoint(net, VOCAB, {"step": 1}))
    assert load_checkpoint(str(tmp_path)).meta["step"] == 1
    save_checkpoint(str(tmp_path / "best.npz"), Checkpoint(net, VOCAB, {"step": 2}))
    assert load_checkpoint(str(tmp_path)).meta["step"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no best.npz or latest.npz"):
        load_checkpoint(str(empty))


def test_refuses_pickled_and_foreign_files(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array(json.dumps({"format": "charrnn-checkpoint", "version": 1})),
             evil=np.array([object()], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(str(pickled))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint"):
        load_checkpoint(str(foreign))


def test_refuses_truncated_and_future(tmp_path):
    net = make_model()
    path = str(tmp_path / "m.npz")
    save_checkpoint(path, Checkpoint(net, VOCAB, {}))
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(str(truncated))
    with np.load(path) as npz:
        arrays = dict(npz)
    meta = json.loads(str(arrays["meta"]))
    meta["version"] = 99
    arrays["meta"] = np.array(json.dumps(meta))
    future = tmp_path / "future.npz"
    np.savez(future, **arrays)
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        load_checkpoint(str(future))


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_checkpoints_get_the_permissions_the_umask_gives(tmp_path, small_text, umask, mode):
    """charrnn train writes latest.npz and best.npz as any new file would be (0644 under umask 022)."""
    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", str(ck), "--max-steps", "2",
           "--hidden-size", "8", "--num-layers", "1", "--batch-size", "2", "--sample-length", "0", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(umask))
    assert done.returncode == 0, done.stderr
    for name in ("latest.npz", "best.npz"):
        assert stat.S_IMODE(os.stat(ck / name).st_mode) == mode, name
    assert not [f for f in os.listdir(ck) if f.startswith(".tmp-")]  # no temporary file left behind
