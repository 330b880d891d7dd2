"""Training steps on several cores: the batch's streams split across worker processes.

    with make_engine(model, batch_size=32, seq_length=100, workers=2) as engine:
        loss, grads, state = engine.loss_and_grads(inputs, targets, state, dropout_rng=rng)
        nll, state = engine.chunk_nll(inputs, targets, state)

Why processes: BLAS runs a large product on every core, but numpy's elementwise ufuncs run on one,
and threads would hand the GIL over at each of a timestep's few-microsecond calls, which costs more
than the second core gives (docs/benchmarks.md, "Where the time goes"). The B streams are independent through
the whole recurrence, so each worker runs forward and backward over its own streams with
single-threaded BLAS, and nothing passes between workers until the step ends: data parallelism.

Shared memory: one file, unlinked as soon as it is made and mapped by every process, holds the
parameters (the model's ``params`` are moved into it, so the main process's optimizer update is what
the workers read next), the chunk's ids, the state carried in and out, and one gradient buffer per
worker. Per step the main process sends each worker a task (``StepTask`` or ``NllTask``: a few
numbers) over a pipe; each worker writes its share of the gradient (its mean gradient times its share
of the streams) and replies with its loss; the main process adds the shares.

Workers run in a session of their own, so a Ctrl-C reaches only the main process (which finishes its
step and saves), and they exit when their pipe closes, so they never outlive it. Dropout masks come
from a seed the main process draws per step and the worker's index (weight-drop masks from the seed
alone: every worker drops the same weights): the same random seed and the same number of workers
give the same run.
"""

import math
import mmap
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import NamedTuple

import numpy as np

from ..blas import available_cpus
from ..models.registry import build_model, model_config, param_shapes
from ..models.scoring import chunk_nll
from ..nn.packed import Packed
from .base import Engine, InProcess, WorkerError

MIN_STREAMS_PER_WORKER = 8  # a recurrent model's (the model's own ``min_streams_per_worker`` says)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
# glibc's allocator in the workers: serve every array from the heap and keep freed memory there, so a step's
# large temporaries (gpt's activations: megabytes each, made afresh every step) reuse pages already mapped
# instead of faulting in new zeroed ones (a gpt worker's step: 20-25 % faster in three alternating pairs,
# gpt mid, timed per layer function). Where the user has set them, theirs win; other C libraries ignore them.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(512 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(1024 * 2**20)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory():
    """The workers' allocator setting (``WORKER_MALLOC``) for this process, through glibc's ``mallopt``:
    the ``charrnn`` command calls it, so validation and ``eval`` (gpt's sliding windows: 111,540
    characters in 2.7 s instead of 5.1 s) reuse pages too. Best effort: nothing happens where glibc or
    ``mallopt`` is not there, or where the user has set the variables."""
    if any(name in os.environ for name in WORKER_MALLOC):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, int(WORKER_MALLOC["MALLOC_MMAP_THRESHOLD_"]))
    mallopt(_M_TRIM_THRESHOLD, int(WORKER_MALLOC["MALLOC_TRIM_THRESHOLD_"]))
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerInit(NamedTuple):
    """The first message to a worker: what it builds its model and shared views from."""

    config: dict  # asdict(model.config): a ModelConfig or GPTConfig
    layout: dict  # name -> (byte offset, shape, dtype string), as _layout
    size: int  # bytes of the shared file
    index: int  # the worker's number: its gradient buffer and dropout stream


class StepTask(NamedTuple):
    """Run a training step over streams lo:hi of the chunk's first T timesteps."""

    T: int
    lo: int
    hi: int
    has_state: bool  # read the state carried in from state_in (else zeros)
    seed: int | None  # the step's dropout seed, None without dropout
    share: float  # (hi - lo) / B: the worker's gradient is scaled by it, so the shares add up to the mean
    dropout: float


class NllTask(NamedTuple):
    """Score streams lo:hi of the chunk's first T timesteps: summed -log p of the targets."""

    T: int
    lo: int
    hi: int
    has_state: bool


class Reply(NamedTuple):
    """A worker's answer: the task's result, or the one-line error it raised."""

    value: object = None
    error: str | None = None


def _pin(pid, index, workers):
    """Keep worker ``index`` on a CPU of its own when there is one for each worker. A worker woken for a
    step then starts at once on its CPU instead of queueing behind the other worker until the scheduler
    moves it (about 0.6 ms a step on 2 CPUs; LSTM 128x2 B=50: 3-5 % more chars/s). Best effort: where
    affinity cannot be set, the worker runs wherever the scheduler puts it."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if workers <= len(cpus):
            os.sched_setaffinity(pid, {cpus[index]})
    except (AttributeError, OSError):  # not Linux, or not allowed here
        pass


def default_workers(batch_size, cpus=None, min_streams=MIN_STREAMS_PER_WORKER):
    """One worker per CPU, each with at least ``min_streams`` streams; 1 where the shared memory this
    needs is not available (Windows)."""
    if os.name != "posix":
        return 1
    cpus = available_cpus() if cpus is None else cpus
    return max(1, min(cpus, batch_size // min_streams))


def make_engine(model, batch_size, seq_length, workers, sparse_rows=False):
    """What a training run computes steps with: ``WorkerPool`` for 2 or more workers, else ``InProcess``.
    ``sparse_rows``: see ``Engine.update``."""
    workers = min(workers, batch_size)
    if workers <= 1:
        return InProcess(model, sparse_rows)
    return WorkerPool(model, batch_size, seq_length, workers, sparse_rows)


def _layout(n_params, dtype, workers, batch_size, seq_length, state):
    """Where each shared array lives: name -> (byte offset, shape, dtype string); and the total size.
    ``state``: the model's initial state at ``batch_size``, whose arrays' shapes the state regions take."""
    regions = {"params": ((n_params,), dtype)}
    regions.update({f"grads{i}": ((n_params,), dtype) for i in range(workers)})
    regions["inputs"] = regions["targets"] = ((seq_length, batch_size), np.int32)
    for i, s in enumerate(state):  # (L, B, H) each for the recurrent models; none for gpt
        regions[f"state_in{i}"] = regions[f"state_out{i}"] = (s.shape, s.dtype)
    layout, offset = {}, 0
    for name, (shape, dt) in regions.items():
        dt = np.dtype(dt)
        layout[name] = (offset, shape, dt.str)
        offset += -(-math.prod(shape) * dt.itemsize // 64) * 64  # 64-byte aligned
    return layout, offset


def _views(buffer, layout):
    return {name: np.ndarray(shape, dt, buffer=buffer, offset=off) for name, (off, shape, dt) in layout.items()}


def _shared_file(size):
    """An unlinked file of ``size`` bytes with its space reserved (RAM-backed where /dev/shm exists)."""
    for directory in ("/dev/shm", None):
        if directory and not os.path.isdir(directory):
            continue
        fd, path = tempfile.mkstemp(prefix="charrnn-", dir=directory)
        os.unlink(path)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)  # fail here, not with SIGBUS when a page is first touched
            else:
                os.ftruncate(fd, size)
            return fd
        except OSError:
            os.close(fd)
    raise WorkerError(f"no room for {size / 2**20:.0f} MB of shared memory for the worker processes")


class WorkerPool(Engine):
    """Runs training steps and scoring on ``workers`` processes, each over a slice of the streams.

    Moves ``model.params`` into shared memory. ``loss_and_grads`` returns a ``Packed`` gradient that
    the next call overwrites.
    """

    def __init__(self, model, batch_size, seq_length, workers, sparse_rows=False):
        self.model, self.workers, self.sparse_rows = model, workers, sparse_rows
        self.max_batch, self.max_length = batch_size, seq_length
        self.n_states = len(model.initial_state(batch_size))
        self.layout, size = _layout(model.num_params(), model.dtype, workers, batch_size, seq_length,
                                    model.initial_state(batch_size))
        fd = _shared_file(size)
        self.procs, self.send, self.recv, self.errors = [], [], [], []
        try:
            self.shared = _views(mmap.mmap(fd, size), self.layout)
            model.params = Packed(model.shapes, model.dtype, values=model.params, flat=self.shared["params"])
            self.grads = [Packed(model.shapes, model.dtype, flat=self.shared[f"grads{i}"]) for i in range(workers)]
            blas_threads = max(1, available_cpus() // workers)
            for i in range(workers):
                self._start(i, fd, size, blas_threads)
            self._collect(workers)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)

    def _start(self, index, fd, size, blas_threads):
        cmd_read, cmd_write = os.pipe()
        reply_read, reply_write = os.pipe()
        env = {**WORKER_MALLOC, **os.environ, **{name: str(blas_threads) for name in BLAS_THREAD_VARIABLES}}
        code = (f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); "
                "from charrnn.engines.pool import worker_main; worker_main()")
        errors = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(fd), str(cmd_read), str(reply_write)],
                pass_fds=(fd, cmd_read, reply_write),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
            )
        except OSError as e:
            errors.close()
            raise WorkerError(f"cannot start a worker process ({e.strerror or e})") from None
        finally:
            os.close(cmd_read)
            os.close(reply_write)
        _pin(proc.pid, index, self.workers)
        self.procs.append(proc)
        self.errors.append(errors)
        self.send.append(Connection(cmd_write, readable=False))
        self.recv.append(Connection(reply_read, writable=False))
        self.send[-1].send(WorkerInit(asdict(self.model.config), self.layout, size, index))

    def _gather(self, messages):
        """Send task i to worker i; return their results in order. Raises WorkerError."""
        for conn, message in zip(self.send, messages):
            try:
                conn.send(message)
            except OSError:
                pass  # the reply side tells what happened
        return self._collect(len(messages))

    def _collect(self, n):
        """The results of workers 0..n-1, in order. Raises WorkerError."""
        results = []
        for i, conn in enumerate(self.recv[:n]):
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                raise WorkerError(self._death_note(i)) from None
            if reply.error is not None:
                raise WorkerError(f"worker process {i} failed: {reply.error}")
            results.append(reply.value)
        return results

    def _death_note(self, i):
        proc = self.procs[i]
        try:
            status = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        self.errors[i].seek(0)
        lines = [line.strip() for line in self.errors[i].read().decode(errors="replace").splitlines() if line.strip()]
        how = "stopped answering" if status is None else f"exited with status {status}"
        if status is not None and status < 0:
            how = f"was killed by signal {-status}" + (" (out of memory?)" if status == -9 else "")
        return f"worker process {i} {how}" + (f": {lines[-1]}" if lines else "")

    def _put(self, inputs, targets, state):
        T, B = inputs.shape
        if T > self.max_length or B > self.max_batch:
            raise ValueError(f"chunk {T}x{B} is larger than the workers' {self.max_length}x{self.max_batch}")
        self.shared["inputs"][:T, :B] = inputs
        self.shared["targets"][:T, :B] = targets
        if state is not None:
            for i, s in enumerate(state):
                self.shared[f"state_in{i}"][:, :B] = s
        bounds = np.linspace(0, B, min(self.workers, B) + 1).astype(int)
        return T, B, [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def _state_out(self, B):
        return tuple(self.shared[f"state_out{i}"][:, :B].copy() for i in range(self.n_states))

    def loss_and_grads(self, inputs, targets, state=None, dropout_rng=None, dropout=None):
        """As ``CharRNN.loss_and_grads``, the streams split across the workers."""
        self.read_rows(inputs)
        T, B, parts = self._put(inputs, targets, state)
        cfg = self.model.config
        dropout = cfg.dropout if dropout is None else dropout
        seed = None
        if dropout_rng is not None and (dropout > 0 or getattr(cfg, "weight_drop", 0) > 0):
            seed = int(dropout_rng.integers(2**63))
        shares = [(hi - lo) / B for lo, hi in parts]
        losses = self._gather(
            [StepTask(T, lo, hi, state is not None, seed, share, dropout) for (lo, hi), share in zip(parts, shares)]
        )
        total = self.grads[0]
        for g in self.grads[1 : len(parts)]:
            total.flat += g.flat
        return sum(loss * share for loss, share in zip(losses, shares)), total, self._state_out(B)

    def chunk_nll(self, inputs, targets, state=None):
        """As ``scoring.chunk_nll``: summed -log p of ``targets``, and the state after them."""
        T, B, parts = self._put(inputs, targets, state)
        nlls = self._gather([NllTask(T, lo, hi, state is not None) for lo, hi in parts])
        return sum(nlls), self._state_out(B)

    def close(self):
        """Stop the workers (the model keeps its parameters, in this process's mapping)."""
        for conn in self.send:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self.recv:
            conn.close()
        for errors in self.errors:
            errors.close()
        self.send, self.recv, self.procs, self.errors = [], [], [], []


def worker_main():
    """A worker process's main loop (``sys.argv``: shared file, command pipe and reply pipe fds)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    shm_fd, cmd_fd, reply_fd = map(int, sys.argv[1:4])
    commands, replies = Connection(cmd_fd, writable=False), Connection(reply_fd, readable=False)
    try:
        init = commands.recv()
    except EOFError:
        return
    shared = _views(mmap.mmap(shm_fd, init.size), init.layout)
    os.close(shm_fd)
    config, index = model_config(init.config), init.index
    model = build_model(config, params=Packed(param_shapes(config), config.dtype, flat=shared["params"]))
    model.params = Packed(model.shapes, model.dtype, flat=shared["params"])  # read the shared values each step
    grads = Packed(model.shapes, model.dtype, flat=shared[f"grads{index}"])
    replies.send(Reply("ready"))
    while True:
        try:
            task = commands.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            replies.send(Reply(_run(model, shared, grads, index, task)))
        except Exception as e:  # reported to the main process, which raises WorkerError
            replies.send(Reply(error=f"{type(e).__name__}: {e}"))


def _run(model, shared, grads, index, task):
    """Run a StepTask or NllTask over the shared chunk; write the final state; return loss or nll."""
    T, lo, hi = task.T, task.lo, task.hi
    inputs, targets = shared["inputs"][:T, lo:hi], shared["targets"][:T, lo:hi]
    n_states = len(model.initial_state(1))
    state = tuple(shared[f"state_in{i}"][:, lo:hi] for i in range(n_states)) if task.has_state else None
    if isinstance(task, StepTask):
        seed = task.seed
        rng = np.random.default_rng([seed, index]) if seed is not None else None
        shared_rng = np.random.default_rng([seed]) if seed is not None else None  # the same weight-drop masks in all
        result, _, final = model.loss_and_grads(inputs, targets, state, rng, out=grads, weight_drop_rng=shared_rng,
                                                dropout=task.dropout)
        if task.share != 1:
            grads.flat *= task.share
    else:
        result, final = chunk_nll(model, inputs, targets, state)
    for i, s in enumerate(final):
        shared[f"state_out{i}"][:, lo:hi] = s
    return result
