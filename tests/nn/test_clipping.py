"""Gradient clipping (--clip-mode value|norm) and the cosine schedule's floor (--min-lr): the optimizer
against torch.nn.utils.clip_grad_norm_ and a hand computation, the schedule against today's, and both
options through the command line, checkpoints and resume."""

import json
import math
import os

import numpy as np
import pytest

from charrnn.classify.train import ClassifyTrainConfig
from charrnn.io.checkpoint import load_checkpoint, read_archive, write_archive
from charrnn.nn import optim
from charrnn.nn.optim import clip_gradient, make_optimizer
from charrnn.nn.packed import Packed
from charrnn.nn.schedule import budget_progress, learning_rate
from charrnn.training.presets import preset_configs
from charrnn.training.run import TrainConfig

SHAPES = {"a": (3, 4), "b": (5,), "c": (2, 2, 3)}
TINY = ["--model", "rnn", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "8",
        "--sample-length", "0", "--random-seed", "0", "--workers", "1"]
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")


def packed_grads(scale, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return Packed(SHAPES, dtype, {name: rng.normal(scale=scale, size=shape) for name, shape in SHAPES.items()})


# norm clipping


def test_norm_clipping_by_hand():
    g = np.array([3.0, 0.0, -4.0])  # norm 5
    assert clip_gradient(g, 1.0, "norm") == 5.0
    np.testing.assert_allclose(g, [0.6, 0.0, -0.8], rtol=1e-6)
    np.testing.assert_array_equal(g, np.array([3.0, 0.0, -4.0]) * (1.0 / (5.0 + 1e-6)))  # torch's factor exactly
    assert math.isclose(np.linalg.norm(g), 1.0, rel_tol=1e-6)
    small = np.array([0.3, -0.4])  # norm 0.5, under the limit: untouched
    clip_gradient(small, 1.0, "norm")
    np.testing.assert_array_equal(small, [0.3, -0.4])


def test_norm_clipping_is_global_over_all_parameters():
    """One factor for the whole gradient (not one per parameter): every element scaled alike, direction kept."""
    grads = packed_grads(scale=2.0)
    before = grads.flat.copy()
    norm = clip_gradient(grads.flat, 0.5, "norm")
    assert norm == pytest.approx(np.linalg.norm(before))
    np.testing.assert_allclose(grads.flat / before, 0.5 / (norm + 1e-6))
    assert np.linalg.norm(grads.flat) == pytest.approx(0.5, rel=1e-6)
    per_param = [np.linalg.norm(grads[name]) for name in SHAPES]
    assert max(per_param) < 0.5 and sum(n * n for n in per_param) == pytest.approx(0.25)


def test_norm_clipping_of_float32_does_not_overflow_to_zero():
    g = np.full(10, 1e20, np.float32)  # squares overflow float32; the norm (3.2e20) does not
    clip_gradient(g, 1.0, "norm")
    np.testing.assert_allclose(g, np.full(10, 1 / np.sqrt(10)), rtol=1e-5)


@pytest.mark.parametrize("limit, scale", [(1.0, 1.0), (1.0, 0.01), (0.3, 5.0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_norm_clipping_matches_torch(limit, scale, dtype):
    torch = pytest.importorskip("torch")
    grads = packed_grads(scale, seed=1, dtype=dtype)
    tensors = []
    for name in SHAPES:
        t = torch.zeros(SHAPES[name], dtype=torch.float64 if dtype == np.float64 else torch.float32,
                        requires_grad=True)
        t.grad = torch.from_numpy(grads[name].copy())
        tensors.append(t)
    total = torch.nn.utils.clip_grad_norm_(tensors, limit)
    norm = clip_gradient(grads.flat, limit, "norm")
    assert norm == pytest.approx(float(total), rel=1e-6)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for name, t in zip(SHAPES, tensors):
        np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=rtol, atol=0)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_an_optimizer_step_with_norm_clipping_matches_torch(name):
    """charrnn's update on the clipped gradient is torch's SGD / AdamW (beta2 0.99) after clip_grad_norm_."""
    torch = pytest.importorskip("torch")
    params = packed_grads(1.0, seed=2)
    tensors = [torch.tensor(params[k].copy(), requires_grad=True) for k in SHAPES]
    opt = make_optimizer(name, params, 0.01, grad_clip=1.0, weight_decay=0.1, clip_mode="norm")
    if name == "sgd":
        reference = torch.optim.SGD(tensors, lr=0.01, weight_decay=0.0)
    else:
        reference = torch.optim.AdamW(tensors, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for step in range(3):
        grads = packed_grads(3.0, seed=10 + step)
        for k, t in zip(SHAPES, tensors):
            t.grad = torch.tensor(grads[k].copy())
        torch.nn.utils.clip_grad_norm_(tensors, 1.0)
        if name == "sgd":  # torch's SGD decays by coupling; charrnn's decay is decoupled: apply it by hand
            with torch.no_grad():
                for t in tensors:
                    t.mul_(1 - 0.01 * 0.1)
        reference.step()
        opt.step(params, grads)
    for k, t in zip(SHAPES, tensors):
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-5, atol=1e-9)  # eps placed apart


# value clipping, as before


def test_value_clipping_is_unchanged():
    grads = packed_grads(4.0, seed=3)
    expected = np.clip(grads.flat, -2.0, 2.0)
    assert clip_gradient(grads.flat, 2.0, "value") is None
    np.testing.assert_array_equal(grads.flat, expected)
    # the optimizer's default is value clipping: bit for bit the update of an explicit "value"
    one, two = packed_grads(1.0, seed=4), packed_grads(1.0, seed=4)
    default = make_optimizer("adam", one, 0.01, grad_clip=2.0)
    explicit = make_optimizer("adam", two, 0.01, grad_clip=2.0, clip_mode="value")
    assert default.clip_mode == "value"
    for step in range(3):
        default.step(one, packed_grads(4.0, seed=20 + step))
        explicit.step(two, packed_grads(4.0, seed=20 + step))
    np.testing.assert_array_equal(one.flat, two.flat)


def test_no_clipping_at_zero_and_unknown_modes_refused():
    params, grads = packed_grads(1.0, seed=5), packed_grads(100.0, seed=6)
    before, g = params.flat.copy(), grads.flat.copy()
    make_optimizer("sgd", params, 1.0, grad_clip=0.0, weight_decay=0.0, clip_mode="norm").step(params, grads)
    np.testing.assert_array_equal(params.flat, before - g)
    with pytest.raises(ValueError, match="clip-mode must be one of value, norm, not 'l2'"):
        make_optimizer("sgd", params, 1.0, clip_mode="l2")
    with pytest.raises(ValueError, match="clip-mode must be one of"):
        clip_gradient(g, 1.0, "l2")


# the cosine schedule's floor


def test_cosine_with_min_lr_zero_is_todays_schedule():
    config = TrainConfig()
    assert config.min_lr == 0.0 and config.clip_mode == "value"
    for progress in np.linspace(0, 1, 41):
        for scale in (1.0, 0.5, 0.37):
            today = 3e-3 * scale * 0.5 * (1 + math.cos(math.pi * progress))
            assert learning_rate(config, 3e-3, scale, progress, 0.0) == today  # exactly


def test_cosine_reaches_min_lr_at_the_end_of_the_budget():
    config = TrainConfig(min_lr=1e-4, learning_rate=1e-3, max_steps=500, max_time=None)
    assert budget_progress(config, 500, 3.0, 0.0) == 1.0
    assert learning_rate(config, 1e-3, 1.0, budget_progress(config, 500, 3.0, 0.0), 3.0) == pytest.approx(1e-4)
    assert learning_rate(config, 1e-3, 1.0, 0.0, 0.0) == pytest.approx(1e-3)
    assert learning_rate(config, 1e-3, 1.0, 0.5, 0.0) == pytest.approx(5.5e-4)
    rates = [learning_rate(config, 1e-3, 1.0, budget_progress(config, s, 0, 0), 0) for s in range(501)]
    assert all(a >= b for a, b in zip(rates, rates[1:])) and min(rates) == pytest.approx(1e-4)
    assert learning_rate(config, 1e-3, 0.5, 1.0, 0.0) == pytest.approx(5e-5)  # a halved run: its floor halved too
    constant = TrainConfig(lr_schedule="constant", min_lr=1e-4)
    assert learning_rate(constant, 1e-3, 1.0, 1.0, 0.0) == 1e-3  # the floor is the cosine schedule's
    classify = ClassifyTrainConfig(min_lr=1e-4, learning_rate=1e-3)
    assert learning_rate(classify, 1e-3, 1.0, 1.0, 0.0) == pytest.approx(1e-4)


@pytest.mark.parametrize("config_class", [TrainConfig, ClassifyTrainConfig])
def test_configs_check_min_lr_and_clip_mode(config_class):
    config_class(min_lr=1e-3, learning_rate=1e-3).validate()
    with pytest.raises(ValueError, match="min-lr must be at least 0"):
        config_class(min_lr=-1e-4).validate()
    with pytest.raises(ValueError, match="min-lr 0.01 is above the learning rate 0.001"):
        config_class(min_lr=1e-2, learning_rate=1e-3).validate()
    with pytest.raises(ValueError, match="clip-mode must be one of value, norm"):
        config_class(clip_mode="global").validate()


def test_nanogpt_presets_clip_the_norm_and_decay_to_min_lr():
    for name in ("nanogpt", "nanogpt-cpu"):
        _, config = preset_configs(name)
        assert (config.clip_mode, config.grad_clip, config.min_lr, config.learning_rate, config.warmup) == (
            "norm", 1.0, 1e-4, 1e-3, 100)
    _, config = preset_configs("nanogpt", clip_mode="value", min_lr=0.0)  # options given win
    assert (config.clip_mode, config.min_lr) == ("value", 0.0)
    _, config = preset_configs()
    assert (config.clip_mode, config.min_lr) == ("value", 0.0)


# the command line


def metrics(ck):
    with open(os.path.join(ck, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_with_norm_clipping_and_min_lr(tmp_path, small_text, cli, monkeypatch):
    modes = []
    real = optim.clip_gradient

    def recording(g, limit, mode="value"):
        modes.append((limit, mode))
        return real(g, limit, mode)

    monkeypatch.setattr(optim, "clip_gradient", recording)
    ck = tmp_path / "ck"
    result = cli(["train", small_text, *TINY, "--checkpoint-dir", ck, "--max-steps", "20", "--eval-every", "20",
                  "--learning-rate", "1e-3", "--clip-mode", "norm", "--grad-clip", "0.5",
                  "--min-lr", "1e-4"])
    assert result.exit_code == 0, result.output
    assert modes == [(0.5, "norm")] * 20  # every step, clipped by the global norm
    saved = load_checkpoint(str(ck / "latest.npz")).meta["train"]
    assert (saved["clip_mode"], saved["min_lr"], saved["grad_clip"]) == ("norm", 1e-4, 0.5)
    records = [r for r in metrics(ck) if "learning_rate" in r]
    assert [r["step"] for r in records] == [10, 20]
    for record in records:  # the rate of step s (from 0) of 20: cosine from 1e-3 down to 1e-4
        progress = (record["step"] - 1) / 20
        assert record["learning_rate"] == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * progress)))
    info = cli(["info", ck / "latest.npz"])
    assert info.exit_code == 0, info.output
    assert "gradient clip: global L2 norm to 0.5 (clip-mode norm); min lr 0.0001" in info.stdout


def test_info_of_a_value_clipped_run(tmp_path, small_text, cli):
    ck = tmp_path / "ck"
    assert cli(["train", small_text, *TINY, "--checkpoint-dir", ck, "--max-steps", "2"]).exit_code == 0
    info = cli(["info", ck]).stdout
    assert "gradient clip: each element to [-5, 5] (clip-mode value); min lr 0" in info
    assert "adam at the rate tuned for it and the model, cosine" in info  # --model rnn: the tuned rate


def strip_new_fields(path, kind_fields=("clip_mode", "min_lr")):
    """Rewrite a checkpoint as one written before --clip-mode and --min-lr were options."""
    meta, arrays = read_archive(path)
    for name in kind_fields:
        del meta["train"][name]
    write_archive(path, arrays, meta)


def test_resuming_a_checkpoint_from_before_the_options(tmp_path, small_text, cli):
    ck = tmp_path / "ck"
    assert cli(["train", small_text, *TINY, "--checkpoint-dir", ck, "--max-steps", "4", "--eval-every", "2",
                "--grad-clip", "0.01"]).exit_code == 0
    strip_new_fields(str(ck / "latest.npz"))
    info = cli(["info", ck / "latest.npz"])
    assert "gradient clip: each element to [-0.01, 0.01] (clip-mode value); min lr 0" in info.stdout
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--resume", "--max-steps", "6"])
    assert result.exit_code == 0, result.output
    saved = load_checkpoint(str(ck / "latest.npz")).meta
    assert saved["step"] == 6 and (saved["train"]["clip_mode"], saved["train"]["min_lr"]) == ("value", 0.0)
    # and a resumed run can take the new options
    result = cli(["train", small_text, "--checkpoint-dir", ck, "--resume", "--max-steps", "8", "--clip-mode", "norm",
                  "--min-lr", "1e-5"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(str(ck / "latest.npz")).meta["train"]["clip_mode"] == "norm"


@pytest.mark.parametrize("args, code, message", [
    (["--clip-mode", "l2"], 2, "Invalid value for '--clip-mode'"),
    (["--min-lr", "-1e-4"], 2, "Invalid value for '--min-lr'"),
    (["--min-lr", "nan"], 2, "Invalid value for '--min-lr'"),
    (["--learning-rate", "1e-3", "--min-lr", "1e-2"], 1, "min-lr 0.01 is above the learning rate 0.001"),
    (["--optimizer", "sgd", "--min-lr", "5"], 1, "min-lr 5 is above the learning rate 0.5"),  # the tuned rate
    (["--preset", "nanogpt-cpu", "--learning-rate", "5e-5"], 1, "min-lr 0.0001 is above the learning rate 5e-05"),
])
def test_bad_values_are_one_line_errors(tmp_path, small_text, cli, args, code, message):
    ck = tmp_path / "ck"
    preset = args[:2] if args[0] == "--preset" else []
    model = [] if preset else TINY
    result = cli(["train", small_text, *model, *args, "--checkpoint-dir", ck, "--max-steps", "2"])
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (ck / "latest.npz").exists()


def test_a_bad_min_lr_leaves_an_overwritten_model_in_place(tmp_path, small_text, cli):
    ck = tmp_path / "ck"
    assert cli(["train", small_text, *TINY, "--checkpoint-dir", ck, "--max-steps", "2"]).exit_code == 0
    before = (ck / "latest.npz").read_bytes()
    result = cli(["train", small_text, *TINY, "--checkpoint-dir", ck, "--max-steps", "2", "--overwrite",
                  "--optimizer", "sgd", "--min-lr", "5"])
    assert result.exit_code == 1 and "min-lr 5 is above the learning rate 0.5" in result.stderr
    assert (ck / "latest.npz").read_bytes() == before


def test_the_torch_engine_takes_the_same_clipping(tmp_path, small_text, cli, monkeypatch):
    pytest.importorskip("torch")
    from charrnn.engines.torch_optim import DeviceOptimizer  # the torch engine clips on its device

    modes = []
    real = DeviceOptimizer.clip
    monkeypatch.setattr(DeviceOptimizer, "clip", lambda self, g, limit, mode: modes.append(mode) or real(self, g, limit,
                                                                                                         mode))
    ck = tmp_path / "ck"
    assert TINY[-2:] == ["--workers", "1"]  # the numpy engine's option
    result = cli(["train", small_text, *TINY[:-2], "--engine", "torch", "--checkpoint-dir", ck, "--max-steps", "3",
                  "--clip-mode", "norm", "--min-lr", "1e-4"])
    assert result.exit_code == 0, result.output
    assert modes == ["norm"] * 3


def head(path, n, out):
    with open(path, encoding="utf-8") as f:
        out.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    return str(out)


def test_classifier_trains_with_norm_clipping_and_min_lr(tmp_path, cli, monkeypatch):
    modes = []
    real = optim.clip_gradient
    monkeypatch.setattr(optim, "clip_gradient", lambda g, limit, mode="value": modes.append(mode) or real(g, limit,
                                                                                                           mode))
    data = head(os.path.join(DATA, "names.train.txt"), 300, tmp_path / "train.txt")
    ck = tmp_path / "clf"
    result = cli(["classify", "train", data, "--hidden-size", "8", "--max-steps", "4", "--random-seed", "0",
                  "--learning-rate", "1e-2", "--clip-mode", "norm", "--grad-clip", "1", "--min-lr", "1e-3",
                  "--checkpoint-dir", ck, "-q"])
    assert result.exit_code == 0, result.output
    assert modes == ["norm"] * 4
    meta, _ = read_archive(str(ck / "latest.npz"))
    assert (meta["train"]["clip_mode"], meta["train"]["min_lr"]) == ("norm", 1e-3)
    # a checkpoint from before the options resumes as value clipping to 0
    for name in ("latest.npz", "best.npz"):
        strip_new_fields(str(ck / name))
    modes.clear()
    result = cli(["classify", "train", data, "--checkpoint-dir", ck, "--resume", "--max-steps", "6", "-q"])
    assert result.exit_code == 0, result.output
    assert modes == ["value"] * 2
    bad = cli(["classify", "train", data, "--learning-rate", "1e-3", "--min-lr", "1e-2", "--checkpoint-dir",
               tmp_path / "bad"])
    assert bad.exit_code == 1 and "min-lr 0.01 is above the learning rate 0.001" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.output
    bad = cli(["classify", "train", data, "--clip-mode", "l2", "--checkpoint-dir", tmp_path / "bad"])
    assert bad.exit_code == 2 and "Invalid value for '--clip-mode'" in bad.stderr
