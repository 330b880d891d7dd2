"""The torch engine (engines/torch_engine.py) computes what the numpy model computes, and `charrnn train --engine
torch` ends a run at the numpy engine's parameters, step for step."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from charrnn import CharRNN, GPTConfig, ModelConfig
from charrnn.io.checkpoint import load_checkpoint
from charrnn.models.gpt import CharGPT
from charrnn.models.scoring import chunk_nll, chunk_nlls

torch = pytest.importorskip("torch")
from charrnn.engines.torch_engine import TorchEngine, TorchEngineError  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

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


EXACT = ["--hidden-size", "16", "--num-layers", "2", "--batch-size", "6", "--seq-length", "12", "--dtype", "float64",
         "--dropout", "0", "--late-dropout", "0", "--weight-drop", "0", "--eval-every", "5", "--sample-length", "0",
         "--random-seed", "3", "--lr-schedule", "cosine", "--max-steps", "8"]


def params_of(directory):
    return load_checkpoint(os.path.join(directory, "latest.npz")).model.params


@pytest.mark.parametrize("model,optimizer", [("lstm", "adam"), ("gru", "rmsprop"), ("rnn", "sgd")])
def test_torch_engine_trains_as_the_numpy_engine(tmp_path, small_text, model, optimizer, cli):
    """float64, no dropout: a few steps (schedule, clipping, weight decay, validation and all) end at the
    numpy engine's parameters to 1e-9."""
    opts = [*EXACT, "--model", model, "--optimizer", optimizer]
    numpy_dir, torch_dir = str(tmp_path / "numpy"), str(tmp_path / "torch")
    assert cli(["train", small_text, "--checkpoint-dir", numpy_dir, "--workers", "1", *opts]).exit_code == 0
    result = cli(["train", small_text, "--checkpoint-dir", torch_dir, "--engine", "torch", *opts])
    assert result.exit_code == 0, result.output
    want, got = params_of(numpy_dir), params_of(torch_dir)
    with open(os.path.join(numpy_dir, "metrics.jsonl")) as f:
        val = [r["val_loss"] for r in map(json.loads, f) if "val_loss" in r]
    assert len(val) == 2 and val[0] - val[1] > 1e-5  # the steps moved the weights: agreeing to 1e-9 means something
    np.testing.assert_allclose(got.flat, want.flat, rtol=0, atol=1e-9)


GPT_EXACT = ["--model", "gpt", "--hidden-size", "16", "--num-layers", "2", "--num-heads", "2", "--batch-size", "6",
             "--seq-length", "12", "--dtype", "float64", "--dropout", "0", "--late-dropout", "0", "--eval-every", "5",
             "--sample-length", "0", "--random-seed", "3", "--lr-schedule", "cosine", "--max-steps", "8"]


def test_torch_engine_trains_gpt_as_the_numpy_engine(tmp_path, small_text, cli):
    """gpt, float64, no dropout: the same parameters after 8 steps (1e-9) and the same validation losses,
    which the torch engine scores too (sliding windows, evaluate.window_nlls)."""
    numpy_dir, torch_dir = str(tmp_path / "numpy"), str(tmp_path / "torch")
    assert cli(["train", small_text, "--checkpoint-dir", numpy_dir, "--workers", "1", *GPT_EXACT]).exit_code == 0
    result = cli(["train", small_text, "--checkpoint-dir", torch_dir, "--engine", "torch", *GPT_EXACT])
    assert result.exit_code == 0, result.output
    val = {}
    for name in ("numpy", "torch"):
        with open(os.path.join(str(tmp_path / name), "metrics.jsonl")) as f:
            val[name] = [r["val_loss"] for r in map(json.loads, f) if "val_loss" in r]
    assert len(val["numpy"]) == 2 and val["numpy"][0] - val["numpy"][1] > 1e-5
    np.testing.assert_allclose(val["torch"], val["numpy"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(params_of(torch_dir).flat, params_of(numpy_dir).flat, rtol=0, atol=1e-9)


@pytest.mark.parametrize("exact", [EXACT, GPT_EXACT], ids=["gru", "gpt"])
def test_torch_engine_resume_is_bit_identical(tmp_path, small_text, exact, cli):
    """With dropout: 2N steps in one run equal N steps and N more after --resume."""
    opts = [*exact[:-6], "--dropout", "0.2", "--random-seed", "4", "--lr-schedule", "constant", "--engine", "torch"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert cli(["train", small_text, "--checkpoint-dir", one, "--max-steps", "10", *opts]).exit_code == 0
    assert cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "5", *opts]).exit_code == 0
    assert cli(["train", small_text, "--checkpoint-dir", two, "--max-steps", "10", "--resume"]).exit_code == 0
    assert load_checkpoint(os.path.join(two, "latest.npz")).meta["step"] == 10
    assert params_of(one).flat.tobytes() == params_of(two).flat.tobytes()


def test_one_line_errors(tmp_path, small_text, cli):
    ck = str(tmp_path / "ck")
    if not torch.cuda.is_available():
        result = cli(["train", small_text, "--checkpoint-dir", ck, "--engine", "torch", "--device", "cuda", *EXACT])
        assert result.exit_code == 1 and "no CUDA GPU" in result.output and result.output.count("\n") == 1
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--device", "cuda", *EXACT])
    assert result.exit_code == 1 and "needs --engine torch" in result.output
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--engine", "torch", "--workers", "2", *EXACT])
    assert result.exit_code == 1 and "torchrun" in result.output


@pytest.mark.slow
def test_engine_torch_without_torch_is_one_line(tmp_path, small_text, cli):
    """A Python where `import torch` fails (a blocking module first on the path)."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('no torch here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir",
                           str(tmp_path / "ck"), "--engine", "torch", *EXACT], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: --engine torch needs PyTorch: pip install 'charrnn[torch]'"
    # a run trained with --engine torch, resumed where there is no PyTorch: the engine came from the checkpoint
    ck = str(tmp_path / "ran")
    assert cli(["train", small_text, "--checkpoint-dir", ck, "--engine", "torch", *EXACT[:-2], "--max-steps", "2"]
                 ).exit_code == 0
    resume = [sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", ck, "--resume",
              "--max-steps", "4"]
    proc = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "was trained with --engine torch, which --resume keeps" in proc.stderr and "--engine numpy" in proc.stderr
    proc = subprocess.run([*resume, "--engine", "numpy"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
