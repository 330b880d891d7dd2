"""The torch engine trains on its device: parameters, optimizer state and batches there, numpy's numbers."""

import os

import numpy as np
import pytest

from charrnn import CharRNN, GPTConfig, ModelConfig
from charrnn.engines.base import InProcess
from charrnn.io.corpus import batches_for
from charrnn.models.gpt import CharGPT
from charrnn.nn.optim import OPTIMIZERS, WeightAverage, make_optimizer

torch = pytest.importorskip("torch")
from charrnn.engines.torch_engine import LossScale, TorchEngine, TorchEngineError  # noqa: E402
from charrnn.engines.torch_optim import DeviceAverage, DeviceOptimizer  # noqa: E402

KINDS = ("rnn", "lstm", "gru", "gpt")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
IDS = np.random.default_rng(5).integers(0, 11, 3000).astype(np.uint8)


@pytest.fixture(autouse=True)
def one_thread():
    """Torch's OpenMP threads spin-wait: on a shared 2-core machine one thread is many times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(kind, dtype="float64", vocab=11, hidden=16):
    if kind == "gpt":
        config = GPTConfig(vocab, hidden_size=hidden, num_layers=2, num_heads=2, context_length=12, dtype=dtype,
                           dropout=0.0)
        return CharGPT(config, rng=np.random.default_rng(0))
    return CharRNN(ModelConfig(vocab, kind, hidden, 2, dtype=dtype, dropout=0.0), rng=np.random.default_rng(0))


def train_steps(kind, optimizer, torch_engine, steps=6, device="cpu", upload=False, clip_mode="value"):
    """``steps`` steps with clipping, weight decay, a changing rate and a running average; the model, the
    numpy optimizer and average as the engine leaves them (pulled from the device)."""
    model = build(kind)
    clip = 0.05 if clip_mode == "value" else 0.2  # both bite: below most elements, below most norms
    opt = make_optimizer(optimizer, model.params, 0.01, grad_clip=clip, weight_decay=0.1, clip_mode=clip_mode)
    average = WeightAverage(model.params, 3)
    engine = TorchEngine(model, device=device) if torch_engine else InProcess(model)
    engine.train_with(opt, average)
    batches = batches_for(model, IDS, 4, 12, seed=1)
    batches = engine.batches(batches, upload) if torch_engine else batches
    state = None
    for j in range(steps):
        opt.learning_rate = 0.01 * (1 + j % 3)
        loss, grads, state = engine.loss_and_grads(*batches.chunk(j), state)
        assert engine.finite(loss, grads) and engine.update(grads)
    engine.pull()
    return model, opt, average, engine.host_state(state)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("kind", KINDS)
def test_device_training_equals_numpy(kind, optimizer):
    """float64 on the CPU, 6 steps (clipping that bites: by value for two optimizers, by global norm for the
    other two; decoupled weight decay, a rate that changes, the running average): parameters, every optimizer
    slot, the step count, the average and the carried state equal the numpy engine's to 1e-9. Two optimizers
    cut the chunks on the device from uploaded ids."""
    clip_mode = "norm" if optimizer in ("sgd", "rmsprop") else "value"
    want = train_steps(kind, optimizer, False, clip_mode=clip_mode)
    got = train_steps(kind, optimizer, True, upload=optimizer in ("adagrad", "adam"), clip_mode=clip_mode)
    moved = np.abs(want[0].params.flat - build(kind).params.flat).max()
    assert moved > 1e-3  # the steps moved the weights: agreeing to 1e-9 means something
    np.testing.assert_allclose(got[0].params.flat, want[0].params.flat, rtol=0, atol=1e-9)
    assert set(got[1].state) == set(want[1].state) and got[1].steps == want[1].steps == 6
    for key, value in want[1].state.items():
        np.testing.assert_allclose(got[1].state[key], value, rtol=0, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(got[2].params.flat, want[2].params.flat, rtol=0, atol=1e-9)
    for a, b in zip(got[3], want[3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_mirror_equals_nn_optim(optimizer):
    """engines/torch_optim.py against nn/optim.py itself, 20 updates of random gradients (clipped by value, or
    by norm for adagrad and adam): to 1e-12."""
    rng = np.random.default_rng(0)
    model = build("lstm")
    params = model.params
    clip_mode = "norm" if optimizer in ("adagrad", "adam") else "value"
    want, got = (make_optimizer(optimizer, params, 0.01, 0.5, 0.1, clip_mode) for _ in range(2))
    want_avg, got_avg = WeightAverage(params, 4), WeightAverage(params, 4)
    p = torch.from_numpy(params.flat.copy())
    mirror, mirror_avg = DeviceOptimizer(torch, got, "cpu"), DeviceAverage(torch, got_avg, "cpu")
    for s in range(20):
        g = rng.normal(size=params.flat.size)
        want.learning_rate = got.learning_rate = 0.01 * (1 + s % 3)
        grads = type(params)(params.shapes(), np.float64, flat=g.copy())
        want.step(params, grads)
        want_avg.update(params, want.steps)
        mirror.step(p, torch.from_numpy(g.copy()))
        mirror_avg.update(p, got.steps)
    mirror.pull()
    mirror_avg.pull()
    np.testing.assert_allclose(p.numpy(), params.flat, rtol=0, atol=1e-12)
    for key, value in want.state.items():
        np.testing.assert_allclose(got.state[key], value, rtol=0, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(got_avg.params.flat, want_avg.params.flat, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gpt"])
def test_validation_on_the_device_equals_numpy(kind):
    """engine.streams_nll (the validation loss: streams, or gpt's sliding windows, full and cut short, cut on
    the device and their scores summed there) equals evaluate.streams_nll by the numpy model, the running
    average being what both score."""
    model, opt, average, _ = train_steps(kind, "adam", True, steps=3)
    engine = TorchEngine(model)
    engine.train_with(opt, average)  # scores the device's average
    got = engine.streams_nll(IDS[:777], 5, 12)
    model.params.flat[...] = average.params.flat
    want = InProcess(model).streams_nll(IDS[:777], 5, 12)
    assert got[1] == want[1] == 776 and got[0] == pytest.approx(want[0], abs=1e-9)


def test_push_and_pull_move_everything():
    """pull copies device -> numpy, push numpy -> device: a restore (the non-finite guard) lands on the device."""
    model, opt, average, _ = train_steps("gru", "rmsprop", True, steps=2)
    engine = TorchEngine(model)
    engine.train_with(opt, average)
    saved = model.params.flat.copy(), {k: v.copy() for k, v in opt.state.items()}, average.params.flat.copy()
    engine.params.add_(1.0)
    engine.optimizer.slot["mean_sq"].add_(1.0)
    engine.average.params.add_(1.0)
    engine.pull()
    assert np.allclose(model.params.flat, saved[0] + 1) and np.allclose(average.params.flat, saved[2] + 1)
    model.params.flat[...] = saved[0]
    opt.load_state(saved[1])
    engine.push()  # as the guard restores: parameters and optimizer state, the average going on as it is
    assert np.array_equal(engine.params.numpy(), saved[0])
    assert np.array_equal(engine.optimizer.slot["mean_sq"].numpy(), opt.slot["mean_sq"].flat)
    assert np.allclose(engine.average.params.numpy(), saved[2] + 1)


def test_non_finite_gradient_and_update_are_flagged_on_the_device():
    """A NaN weight makes the loss and gradient non-finite; a huge rate makes the update non-finite: both
    are seen on the device (the guard's inputs), without copying a gradient back."""
    model = build("lstm", "float32")
    opt = make_optimizer("sgd", model.params, 1e300, grad_clip=0, weight_decay=0)
    engine = TorchEngine(model)
    engine.train_with(opt)
    inputs, targets = batches_for(model, IDS, 4, 12, 1).chunk(0)
    loss, grads, _ = engine.loss_and_grads(inputs, targets)
    assert engine.finite(loss, grads)
    assert not engine.update(grads)  # 1e300 times a gradient: an infinite weight
    engine.params[0] = float("nan")
    loss, grads, _ = engine.loss_and_grads(inputs, targets)
    assert not engine.finite(loss, grads) and not grads.finite


def test_loss_scale_backs_off_and_grows():
    scale = LossScale(scale=8.0, growth_interval=3)
    assert not scale.update(False) and scale.scale == 4.0
    assert scale.update(True) and scale.update(True) and scale.update(True) and scale.scale == 8.0
    one = LossScale(scale=1.0)
    assert one.update(False) and one.scale == 1.0  # nothing left to lower: the step goes to the guard


def corpus_ids(n=20_000):
    rng = np.random.default_rng(2)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran.\n"]
    text = "".join(rng.choice(words, n // 4))[:n]
    symbols = sorted(set(text))
    return np.array([symbols.index(c) for c in text], np.uint8), len(symbols)


@pytest.mark.parametrize("kind", ["lstm", "gpt"])
def test_bfloat16_loss_tracks_float32(kind):
    """A float32 model, 40 steps of Adam at a learning rate of 3e-3, computed under bfloat16 autocast and in
    float32 from the same start: every step's loss within 0.05 nats of float32's, the mean of the last 10
    within 0.02, and the loss fell (by over 0.5 nats) in both."""
    ids, vocab = corpus_ids()
    losses = {}
    for precision in ("float32", "bfloat16"):
        model = build(kind, "float32", vocab=vocab, hidden=32)
        opt = make_optimizer("adam", model.params, 3e-3, 5.0, 0.1)
        engine = TorchEngine(model, precision=precision)
        engine.train_with(opt)
        batches, state, losses[precision] = engine.batches(batches_for(model, ids, 8, 12, 1)), None, []
        for j in range(40):
            loss, grads, state = engine.loss_and_grads(*batches.chunk(j), state)
            assert engine.finite(loss, grads) and engine.update(grads)
            losses[precision].append(loss)
    want, got = np.array(losses["float32"]), np.array(losses["bfloat16"])
    assert want[:5].mean() - want[-5:].mean() > 0.5 and got[:5].mean() - got[-5:].mean() > 0.5
    assert np.abs(got - want).max() < 0.05
    assert abs(got[-10:].mean() - want[-10:].mean()) < 0.02
    assert not np.array_equal(got, want)  # bfloat16 did compute something


def test_float16_step_scales_the_loss_and_unscales_the_gradient():
    """float16 (loss scale 2**16): the gradient handed to the optimizer is the float32 one to about float16's
    precision, not 65536 times it, on the device and as numpy's Packed alike."""
    model = build("gpt", "float32", hidden=16)
    inputs, targets = batches_for(model, IDS, 4, 12, 1).chunk(0)
    grads = {}
    for precision in ("float32", "float16"):
        engine = TorchEngine(model, precision=precision)
        engine.train_with(make_optimizer("adam", model.params, 1e-3))
        grads[precision] = engine.loss_and_grads(inputs, targets)[1].numpy()
    scale = np.abs(grads["float32"]).max()
    assert np.abs(grads["float16"] - grads["float32"]).max() < 0.02 * scale
    before_training = TorchEngine(model, precision="float16").loss_and_grads(inputs, targets)[1].flat  # numpy's
    assert np.abs(before_training - grads["float32"]).max() < 0.02 * scale


def test_precision_refusals_are_one_line():
    with pytest.raises(TorchEngineError, match="float32 model") as info:
        TorchEngine(build("lstm", "float64"), precision="bfloat16")
    assert "\n" not in str(info.value)
    with pytest.raises(TorchEngineError, match="precision must be one of"):
        TorchEngine(build("lstm", "float32"), precision="int8")


@pytest.mark.parametrize("device", DEVICES)
def test_device_batches_equal_host_batches(device):
    """Chunks cut on the device from uploaded ids are the host's chunks: contiguous streams and random windows."""
    for kind in ("lstm", "gpt"):
        model = build(kind)
        engine = TorchEngine(model, device=device)
        host = batches_for(model, IDS, 5, 12, seed=4)
        on_device = engine.batches(host, upload=True)
        for epoch, j in [(0, 0), (0, 7), (2, 3)]:
            for a, b in zip(on_device.chunk(j, epoch), host.chunk(j, epoch)):
                assert a.device.type == device and np.array_equal(a.cpu().numpy(), b)


# -- `charrnn train --engine torch`: the run on the device, moving between engines with --resume --------------

EXACT = ["--hidden-size", "16", "--num-layers", "2", "--batch-size", "6", "--seq-length", "12", "--dtype", "float64",
         "--dropout", "0", "--late-dropout", "0", "--eval-every", "3", "--sample-length", "0", "--random-seed", "3",
         "--lr-schedule", "cosine", "--grad-clip", "0.05", "--average", "4", "--max-steps", "6"]


def cli_train(args):
    from click.testing import CliRunner

    from charrnn.cli import main

    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def saved(directory):
    from charrnn.io.checkpoint import load_checkpoint

    return load_checkpoint(os.path.join(directory, "latest.npz"))


@pytest.mark.parametrize("model,optimizer,first", [("lstm", "adam", "torch"), ("gpt", "rmsprop", "numpy"),
                                                   ("gru", "adagrad", "torch")])
def test_a_run_moves_between_engines_with_resume(tmp_path, small_text, model, optimizer, first):
    """3 steps on one engine, 3 more after --resume on the other, equal 6 steps on the numpy engine alone:
    the model (the running average), the iterate, every optimizer slot and the carried state, to 1e-9."""
    other = {"torch": "numpy", "numpy": "torch"}[first]
    opts = [*EXACT[:-2], "--model", model, "--optimizer", optimizer, "--lr-schedule", "constant"]  # cosine: by steps
    if model == "gpt":
        opts += ["--num-heads", "2"]
    alone, moved = str(tmp_path / "alone"), str(tmp_path / "moved")
    assert cli_train([small_text, "--checkpoint-dir", alone, "--engine", "numpy", *opts, "--max-steps", "6"]
                     ).exit_code == 0
    steps3 = [*opts, "--max-steps", "3"]
    result = cli_train([small_text, "--checkpoint-dir", moved, "--engine", first, *steps3])
    assert result.exit_code == 0, result.output
    result = cli_train([small_text, "--checkpoint-dir", moved, "--resume", "--engine", other, "--max-steps", "6"])
    assert result.exit_code == 0, result.output
    want, got = saved(alone), saved(moved)
    assert got.meta["step"] == want.meta["step"] == 6 and got.meta["train"]["engine"] == other
    np.testing.assert_allclose(got.model.params.flat, want.model.params.flat, rtol=0, atol=1e-9)
    assert set(got.optimizer_state) == set(want.optimizer_state)
    for key, value in want.optimizer_state.items():
        np.testing.assert_allclose(got.optimizer_state[key], value, rtol=0, atol=1e-9, err_msg=key)
    for a, b in zip(got.hidden_state, want.hidden_state):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_precision_option(tmp_path, small_text):
    """--precision is the torch engine's, saved with the run's options; numpy or a float64 model refuse it in
    one line; a bfloat16 run trains."""
    ck = str(tmp_path / "ck")
    opts = [*EXACT[:-2], "--max-steps", "3", "--model", "lstm"]
    result = cli_train([small_text, "--checkpoint-dir", ck, "--precision", "bfloat16", *opts])
    assert result.exit_code != 0 and "needs --engine torch" in result.output and result.output.count("\n") == 1
    result = cli_train([small_text, "--checkpoint-dir", ck, "--engine", "torch", "--precision", "bfloat16", *opts])
    assert result.exit_code != 0 and "float32 model" in result.output and result.output.count("\n") == 1
    float32 = [*opts, "--dtype", "float32"]
    result = cli_train([small_text, "--checkpoint-dir", ck, "--engine", "torch", "--precision", "bfloat16", *float32])
    assert result.exit_code == 0, result.output
    assert saved(ck).meta["train"]["precision"] == "bfloat16"
    assert np.isfinite(saved(ck).model.params.flat).all()


def test_non_finite_guard_on_the_device_acts_as_numpys(tmp_path, small_text):
    """A rate far too high: the device flags the non-finite steps, the guard restores the last evaluated
    weights and optimizer state (pushed to the device) and halves the rate, as on the numpy engine, until it
    stops in one line with the same latest.npz."""
    opts = [*EXACT[:-2], "--max-steps", "20", "--model", "gru", "--optimizer", "sgd", "--learning-rate", "1e300",
            "--grad-clip", "0", "--average", "0"]
    outputs, params = {}, {}
    for engine in ("numpy", "torch"):
        ck = str(tmp_path / engine)
        result = cli_train([small_text, "--checkpoint-dir", ck, "--engine", engine, *opts])
        assert result.exit_code == 1
        outputs[engine] = [line for line in result.output.splitlines() if line.startswith(("warning", "Error"))]
        params[engine] = saved(ck).model.params.flat
    assert outputs["torch"] == outputs["numpy"] and outputs["numpy"][-1].startswith("Error: loss, gradient or update")
    assert len(outputs["numpy"]) >= 6  # at least five restores and halvings in a row, then the stop
    np.testing.assert_allclose(params["torch"], params["numpy"], rtol=1e-9, atol=0)  # weights near 1e299
