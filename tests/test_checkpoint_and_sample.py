import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from charrnn.io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.rnn import CharRNN, ModelConfig, init_params, param_shapes
from charrnn.sample import InPlaceStepper, Stepper, filter_logits, generate, generate_batch

VOCAB = Vocab(tuple("\n !,.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def make_model(model="lstm", dtype="float32"):
    config = ModelConfig(vocab_size=len(VOCAB), model=model, hidden_size=16, num_layers=2, dtype=dtype)
    return CharRNN(config, rng=np.random.default_rng(0))


def test_param_shapes_match_init():
    for model in ("rnn", "lstm", "gru"):
        config = ModelConfig(vocab_size=9, model=model, hidden_size=5, num_layers=3)
        params = init_params(config, np.random.default_rng(0))
        assert {k: v.shape for k, v in params.items()} == param_shapes(config)
        assert all(v.dtype == np.float32 for v in params.values())


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


def test_sampling_is_reproducible_and_seeded():
    net = make_model()
    a = "".join(generate(net, VOCAB, "ROMEO.", 200, 1.0, random_seed=5))
    b = "".join(generate(net, VOCAB, "ROMEO.", 200, 1.0, random_seed=5))
    c = "".join(generate(net, VOCAB, "ROMEO.", 200, 1.0, random_seed=6))
    assert a == b and a != c
    assert a.startswith("ROMEO.") and len(a) == 206


def test_unknown_seed_characters_are_named():
    with pytest.raises(KeyError, match="'#'"):
        next(generate(make_model(), VOCAB, "ab#", 10))


def test_top_k_and_top_p_filter():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(filter_logits(logits, 1.0, top_k=2)).sum() == 2
    assert np.isfinite(filter_logits(logits, 1.0, top_p=0.7)).sum() == 2
    assert np.isfinite(filter_logits(logits, 1.0, top_p=0.85)).sum() == 3


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
    for pieces in (list(generate(_Scripted(script, 256), vocab, seed, len(script), temperature=0)),
                   [p[1] for p in generate_batch(_Scripted(script, 256), vocab, 2, seed, len(script), temperature=0)]):
        text = "".join(pieces)
        assert text.endswith(wanted) and "\ufffd" not in text
        assert "" in pieces  # a lead byte alone shows nothing yet
