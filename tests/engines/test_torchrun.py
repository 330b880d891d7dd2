"""Training under torchrun (gloo on the CPU): the processes train as one, and a dead process ends the run in one
line with a checkpoint a resumed run goes on from."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import charrnn
from charrnn.io.checkpoint import load_checkpoint

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.usefixtures("torch_one_thread"), pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# a float64 model without dropout of any kind (as the torch engine's exact tests)
SHAPE = ["--hidden-size", "16", "--num-layers", "2", "--batch-size", "6", "--seq-length", "12", "--dtype", "float64",
         "--dropout", "0", "--late-dropout", "0", "--weight-drop", "0", "--eval-every", "5", "--sample-length", "0"]


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


def test_on_a_time_budget_the_processes_follow_one_clock(tmp_path, small_text):
    """The cosine schedule over --max-time follows the seconds trained: every process takes process 0's, so their
    rates and weights stay the same (with a clock each, the first evaluation found their parameters apart)."""
    ck = tmp_path / "ck"
    returncode, err = torchrun(["-m", "charrnn", "train", small_text, "--checkpoint-dir", str(ck), *SHAPE, "--engine",
                                "torch", "--max-time", "3", "--random-seed", "1", "-q"])
    assert returncode == 0, err[-3000:]
    assert load_checkpoint(str(ck / "latest.npz")).meta["elapsed"] >= 3


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
    args = [small_text, "--checkpoint-dir", str(ck), *SHAPE, "--random-seed", "5", "--engine", "torch",
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
