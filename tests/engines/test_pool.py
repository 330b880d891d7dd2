"""Steps split across worker processes give what one process gives, and fail cleanly."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn import CharRNN, ModelConfig, TrainConfig, load_checkpoint, train
from charrnn.engines.base import WorkerError
from charrnn.engines.pool import WorkerPool, default_workers, make_engine
from charrnn.models.scoring import chunk_nll
from charrnn.nn.optim import make_optimizer
from charrnn.nn.packed import Packed
from charrnn.training.lifecycle import TrainingError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="worker processes need POSIX shared memory")


def twin_models(model_type, dropout=0.0):
    config = ModelConfig(11, model_type, 16, 2, dropout=dropout, dtype="float64")
    model = CharRNN(config, rng=np.random.default_rng(0))
    return model, CharRNN(config, params=dict(model.params))


@pytest.mark.parametrize("model_type", ["lstm", "gru", "rnn"])
def test_worker_pool_matches_one_process(model_type):
    """Loss, gradients, final state and scores equal the in-process ones, with an uneven split of 5
    streams, a carried state, and after the main process has updated the shared parameters."""
    model, reference = twin_models(model_type)
    rng = np.random.default_rng(1)
    inputs, targets = rng.integers(0, 11, (9, 5)), rng.integers(0, 11, (9, 5))
    state = tuple(rng.normal(size=(2, 5, 16)) for _ in model.cell.state_names)
    with WorkerPool(model, batch_size=5, seq_length=9, workers=2) as pool:
        for _ in range(2):
            loss, grads, final = pool.loss_and_grads(inputs, targets, state)
            want_loss, want_grads, want_final = reference.loss_and_grads(inputs, targets, state)
            assert loss == pytest.approx(want_loss, abs=1e-12)
            np.testing.assert_allclose(grads.flat, want_grads.flat, atol=1e-12)
            for a, b in zip(final, want_final):
                np.testing.assert_allclose(a, b, atol=1e-12)
            model.params.flat -= 0.1 * grads.flat  # the workers must see this update
            reference.params.flat -= 0.1 * want_grads.flat
        nll, after = pool.chunk_nll(inputs[:4, :3], targets[:4, :3])
        want_nll, want_after = chunk_nll(reference, inputs[:4, :3], targets[:4, :3], None)
        assert nll == pytest.approx(want_nll, abs=1e-10)
        np.testing.assert_allclose(after[0], want_after[0], atol=1e-12)


def test_dropout_in_workers_is_reproducible():
    def run(seed):
        model, _ = twin_models("lstm", dropout=0.3)
        rng = np.random.default_rng(4)
        inputs, targets = rng.integers(0, 11, (6, 8)), rng.integers(0, 11, (6, 8))
        with WorkerPool(model, 8, 6, 2) as pool:
            dropout_rng = None if seed is None else np.random.default_rng(seed)
            loss, grads, _ = pool.loss_and_grads(inputs, targets, dropout_rng=dropout_rng)
            return loss, grads.flat.copy()

    (a, ga), (b, gb), (c, _) = run(7), run(7), run(None)
    assert a == b and np.array_equal(ga, gb)
    assert a != c
    model, reference = twin_models("lstm", dropout=0.3)  # a schedule's rate overrides the config's, in the workers
    ids = np.random.default_rng(4).integers(0, 11, (6, 8))
    with WorkerPool(model, 8, 6, 2) as pool:
        loss, _, _ = pool.loss_and_grads(ids, ids, dropout_rng=np.random.default_rng(7), dropout=0.0)
    assert loss == pytest.approx(reference.loss_and_grads(ids, ids)[0], abs=1e-12)


def test_workers_drop_the_same_recurrent_weights():
    """Weight drop is one mask per step for the whole batch: the workers' summed gradient equals one
    process's under the mask drawn from the step's seed."""
    config = ModelConfig(11, "gru", 16, 2, dropout=0.0, weight_drop=0.3, dtype="float64")
    model = CharRNN(config, rng=np.random.default_rng(0))
    reference = CharRNN(config, params=dict(model.params))
    rng = np.random.default_rng(5)
    inputs, targets = rng.integers(0, 11, (6, 8)), rng.integers(0, 11, (6, 8))
    seed = int(np.random.default_rng(9).integers(2**63))
    want_loss, want_grads, _ = reference.loss_and_grads(
        inputs, targets, dropout_rng=np.random.default_rng(0), weight_drop_rng=np.random.default_rng([seed]))
    with WorkerPool(model, 8, 6, 2) as pool:
        loss, grads, _ = pool.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(9))
    assert loss == pytest.approx(want_loss, abs=1e-12)
    np.testing.assert_allclose(grads.flat, want_grads.flat, atol=1e-12)
    assert loss != pytest.approx(reference.loss_and_grads(inputs, targets)[0], abs=1e-6)


def test_a_dead_worker_is_a_one_line_error():
    model, _ = twin_models("gru")
    ids = np.zeros((4, 4), int)
    with WorkerPool(model, 4, 4, 2) as pool:
        pool.procs[1].kill()
        pool.procs[1].wait()
        with pytest.raises(WorkerError, match="worker process 1 was killed by signal 9"):
            pool.loss_and_grads(ids, ids)


def test_training_keeps_its_model_when_a_worker_dies(tmp_path, small_text, monkeypatch):
    calls = [0]
    real = WorkerPool.loss_and_grads

    def dying(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 8:
            self.procs[0].kill()
            self.procs[0].wait()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WorkerPool, "loss_and_grads", dying)
    config = TrainConfig(batch_size=8, seq_length=8, eval_every=5, sample_length=0, max_steps=20, max_time=None,
                         random_seed=0, workers=2, checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(TrainingError, match=r"worker process 0 was killed .*model of step 7 is saved in latest.npz"):
        train(small_text, ModelConfig(0, "gru", 16, 1), config)
    assert load_checkpoint(str(tmp_path / "ck" / "latest.npz")).meta["step"] == 7


def test_workers_do_not_outlive_the_main_process():
    """Killed without a chance to clean up, the main process leaves no worker behind."""
    code = (
        "import os, sys, numpy as np\n"
        "from charrnn import CharRNN, ModelConfig\n"
        "from charrnn.engines.pool import WorkerPool\n"
        "pool = WorkerPool(CharRNN(ModelConfig(5, 'rnn', 4, 1)), 4, 4, 2)\n"
        "print(*[p.pid for p in pool.procs], flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid):
    """Running (a zombie, waiting to be reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_default_workers_follow_cpus_and_batch():
    assert default_workers(32, cpus=2) == 2
    assert default_workers(50, cpus=8) == 6  # at least 8 streams each
    assert default_workers(8, cpus=2) == 1
    assert default_workers(1, cpus=4) == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux's")
def test_workers_get_a_cpu_each_when_there_are_enough():
    """With a CPU for every worker, each worker is kept on its own; with fewer, they are left to roam."""
    cpus = sorted(os.sched_getaffinity(0))
    for workers in (2, len(cpus) + 1):
        with WorkerPool(CharRNN(ModelConfig(5, "rnn", 4, 1)), 2 * workers, 4, workers) as pool:
            placed = [os.sched_getaffinity(proc.pid) for proc in pool.procs]
        if workers <= len(cpus):
            assert placed == [{cpu} for cpu in cpus[:workers]]
        else:
            assert all(p == set(cpus) for p in placed)


@pytest.mark.parametrize("workers", [1, 2])
def test_sparse_rows_leave_unread_rows_of_the_input_table(workers):
    """With sparse_rows, Adam with weight decay updates the input table's rows the steps read and nothing of the
    others (weights and moments), in one process and across workers; every other parameter moves."""
    model, _ = twin_models("gru")
    start = Packed(model.shapes, model.dtype, values=model.params)
    rng = np.random.default_rng(2)
    optimizer = make_optimizer("adam", model.params, 0.01, weight_decay=0.1)
    with make_engine(model, 4, 5, workers, sparse_rows=True) as engine:
        engine.train_with(optimizer)
        for _ in range(3):
            inputs, targets = rng.integers(0, 6, (5, 4)), rng.integers(0, 11, (5, 4))  # rows 6-10 never read
            _, grads, _ = engine.loss_and_grads(inputs, targets)
            assert engine.update(grads)
    table = model.params["l0.W_xh"]  # (the pool moved the parameters into shared memory)
    np.testing.assert_array_equal(table[6:], start["l0.W_xh"][6:])
    assert not optimizer.slot["m"]["l0.W_xh"][6:].any()
    assert (table[:6] != start["l0.W_xh"][:6]).all(axis=1).all()
    assert (model.params["l1.W_hh"] != start["l1.W_hh"]).all()
