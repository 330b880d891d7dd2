"""`charrnn train --engine torch`: the numpy engine's run, step for step; torchrun's processes agree."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import charrnn
from charrnn.cli import main
from charrnn.io.checkpoint import load_checkpoint

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXACT = ["--hidden-size", "16", "--num-layers", "2", "--batch-size", "6", "--seq-length", "12", "--dtype", "float64",
         "--dropout", "0", "--late-dropout", "0", "--weight-drop", "0", "--eval-every", "5", "--sample-length", "0",
         "--random-seed", "3", "--lr-schedule", "cosine", "--max-steps", "8"]


@pytest.fixture(autouse=True)
def one_thread():
    """Torch's OpenMP threads spin-wait: on a shared 2-core machine one thread is many times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(args):
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def params_of(directory):
    return load_checkpoint(os.path.join(directory, "latest.npz")).model.params


@pytest.mark.parametrize("model,optimizer", [("lstm", "adam"), ("gru", "rmsprop"), ("rnn", "sgd")])
def test_torch_engine_trains_as_the_numpy_engine(tmp_path, small_text, model, optimizer):
    """float64, no dropout: a few steps (schedule, clipping, weight decay, validation and all) end at the
    numpy engine's parameters to 1e-9."""
    opts = [*EXACT, "--model", model, "--optimizer", optimizer]
    numpy_dir, torch_dir = str(tmp_path / "numpy"), str(tmp_path / "torch")
    assert train([small_text, "--checkpoint-dir", numpy_dir, "--workers", "1", *opts]).exit_code == 0
    result = train([small_text, "--checkpoint-dir", torch_dir, "--engine", "torch", *opts])
    assert result.exit_code == 0, result.output
    want, got = params_of(numpy_dir), params_of(torch_dir)
    with open(os.path.join(numpy_dir, "metrics.jsonl")) as f:
        val = [r["val_loss"] for r in map(json.loads, f) if "val_loss" in r]
    assert len(val) == 2 and val[0] - val[1] > 1e-5  # the steps moved the weights: agreeing to 1e-9 means something
    np.testing.assert_allclose(got.flat, want.flat, rtol=0, atol=1e-9)


GPT_EXACT = ["--model", "gpt", "--hidden-size", "16", "--num-layers", "2", "--num-heads", "2", "--batch-size", "6",
             "--seq-length", "12", "--dtype", "float64", "--dropout", "0", "--late-dropout", "0", "--eval-every", "5",
             "--sample-length", "0", "--random-seed", "3", "--lr-schedule", "cosine", "--max-steps", "8"]


def test_torch_engine_trains_gpt_as_the_numpy_engine(tmp_path, small_text):
    """gpt, float64, no dropout: the same parameters after 8 steps (1e-9) and the same validation losses,
    which the torch engine scores too (sliding windows, evaluate.window_nlls)."""
    numpy_dir, torch_dir = str(tmp_path / "numpy"), str(tmp_path / "torch")
    assert train([small_text, "--checkpoint-dir", numpy_dir, "--workers", "1", *GPT_EXACT]).exit_code == 0
    result = train([small_text, "--checkpoint-dir", torch_dir, "--engine", "torch", *GPT_EXACT])
    assert result.exit_code == 0, result.output
    val = {}
    for name in ("numpy", "torch"):
        with open(os.path.join(str(tmp_path / name), "metrics.jsonl")) as f:
            val[name] = [r["val_loss"] for r in map(json.loads, f) if "val_loss" in r]
    assert len(val["numpy"]) == 2 and val["numpy"][0] - val["numpy"][1] > 1e-5
    np.testing.assert_allclose(val["torch"], val["numpy"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(params_of(torch_dir).flat, params_of(numpy_dir).flat, rtol=0, atol=1e-9)


@pytest.mark.parametrize("exact", [EXACT, GPT_EXACT], ids=["gru", "gpt"])
def test_torch_engine_resume_is_bit_identical(tmp_path, small_text, exact):
    """With dropout: 2N steps in one run equal N steps and N more after --resume."""
    opts = [*exact[:-6], "--dropout", "0.2", "--random-seed", "4", "--lr-schedule", "constant", "--engine", "torch"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert train([small_text, "--checkpoint-dir", one, "--max-steps", "10", *opts]).exit_code == 0
    assert train([small_text, "--checkpoint-dir", two, "--max-steps", "5", *opts]).exit_code == 0
    assert train([small_text, "--checkpoint-dir", two, "--max-steps", "10", "--resume"]).exit_code == 0
    assert load_checkpoint(os.path.join(two, "latest.npz")).meta["step"] == 10
    assert params_of(one).flat.tobytes() == params_of(two).flat.tobytes()


def test_one_line_errors(tmp_path, small_text):
    ck = str(tmp_path / "ck")
    if not torch.cuda.is_available():
        result = train([small_text, "--checkpoint-dir", ck, "--engine", "torch", "--device", "cuda", *EXACT])
        assert result.exit_code == 1 and "no CUDA GPU" in result.output and result.output.count("\n") == 1
    result = train([small_text, "--checkpoint-dir", ck, "--device", "cuda", *EXACT])
    assert result.exit_code == 1 and "needs --engine torch" in result.output
    result = train([small_text, "--checkpoint-dir", ck, "--engine", "torch", "--workers", "2", *EXACT])
    assert result.exit_code == 1 and "torchrun" in result.output


def test_engine_torch_without_torch_is_one_line(tmp_path, small_text):
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
    assert train([small_text, "--checkpoint-dir", ck, "--engine", "torch", *EXACT[:-2], "--max-steps", "2"]
                 ).exit_code == 0
    resume = [sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", ck, "--resume",
              "--max-steps", "4"]
    proc = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "was trained with --engine torch, which --resume keeps" in proc.stderr and "--engine numpy" in proc.stderr
    proc = subprocess.run([*resume, "--engine", "numpy"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def torchrun(args, nproc=2, timeout=180):
    """Run ``args`` under torchrun; on a hang, end torchrun and its processes (a session of their own)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    # the rank script lives in a temporary folder: charrnn comes from this checkout, installed or not
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        end_session(proc)
    return proc.returncode, err


def end_session(proc):
    """Kill what is left of the session ``proc`` leads (nothing, when it ended cleanly)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


MODELS = {"lstm": 'ModelConfig(0, "lstm", 16, 2, dropout=0.0, dtype="float64")',
          "gpt": 'GPTConfig(0, hidden_size=16, num_layers=2, num_heads=2, context_length=12, dtype="float64")'}
GLOO_RUN = """
model = {model}
config = TrainConfig(batch_size=5, seq_length=12, max_steps=6, eval_every=4, sample_length=0, random_seed=3,
                     late_dropout=None, checkpoint_dir=out, engine="torch", max_time=None)
result = train(corpus, model, config)
"""
RANK_SCRIPT = """
import os, sys
import numpy as np
from charrnn import GPTConfig, ModelConfig, TrainConfig, train
corpus, out = sys.argv[1:3]
{run}
np.save(os.path.join(out, "rank%s.npy" % os.environ["RANK"]), result.model.params.flat)
"""


@pytest.mark.parametrize("model", MODELS)
def test_two_processes_with_gloo_train_as_one(tmp_path, small_text, model):
    """torchrun, 2 processes, gloo on the CPU, 5 streams split 2 + 3: after 6 steps the parameters equal one
    process with the whole batch (1e-6) and are bit for bit the same in both processes."""
    run = GLOO_RUN.format(model=MODELS[model])
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT.format(run=run))
    one, two = tmp_path / "one", tmp_path / "two"
    namespace = {"corpus": small_text, "out": str(one), **vars(charrnn)}
    exec(run, namespace)  # the same run in this one process, the whole batch here
    want = namespace["result"].model.params.flat
    returncode, err = torchrun([str(script), small_text, str(two)])
    assert returncode == 0, err[-3000:]
    rank0, rank1 = np.load(two / "rank0.npy"), np.load(two / "rank1.npy")
    assert rank0.tobytes() == rank1.tobytes()
    np.testing.assert_allclose(rank0, want, rtol=0, atol=1e-6)
    saved = load_checkpoint(str(two / "latest.npz"))
    assert saved.meta["step"] == 6 and saved.model.params.flat.tobytes() == rank0.tobytes()


def start_rank(rank, args, port, tmp_path):
    """One process of a 2-process run, launched as torchrun would (its environment), stderr to a file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    err = open(tmp_path / f"err{rank}.txt", "w+")
    return subprocess.Popen([sys.executable, "-m", "charrnn", "train", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=err, start_new_session=True), err


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_process_ends_the_run_in_one_line_and_resume_goes_on(tmp_path, small_text):
    """Kill process 1 mid-run: process 0 stops with one line, latest.npz holds its last step intact; a resumed
    2-process run goes on from it."""
    ck = tmp_path / "ck"
    args = [small_text, "--checkpoint-dir", str(ck), *EXACT[:-6], "--random-seed", "5", "--engine", "torch",
            "--eval-every", "3", "--max-steps", "100000", "--max-time", "120"]
    port = free_port()
    procs = [start_rank(r, args, port, tmp_path) for r in (0, 1)]
    try:
        deadline = time.time() + 90
        while not (ck / "latest.npz").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (ck / "latest.npz").exists()
        procs[1][0].send_signal(signal.SIGKILL)
        assert procs[0][0].wait(timeout=60) == 1
    finally:
        for proc, _ in procs:
            end_session(proc)
    err = procs[0][1]
    err.seek(0)
    lines = [line for line in err.read().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: a training process was lost"), lines
    assert "saved in latest.npz" in lines[0]
    step = load_checkpoint(str(ck / "latest.npz")).meta["step"]
    assert step >= 3
    port = free_port()
    resumed = [start_rank(r, [small_text, "--checkpoint-dir", str(ck), "--resume", "--max-steps", str(step + 3)],
                          port, tmp_path) for r in (0, 1)]
    try:
        assert [p.wait(timeout=120) for p, _ in resumed] == [0, 0]
    finally:
        for proc, _ in resumed:
            end_session(proc)
    assert load_checkpoint(str(ck / "latest.npz")).meta["step"] == step + 3
