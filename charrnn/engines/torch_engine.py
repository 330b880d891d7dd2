"""Training steps computed by PyTorch, on a CPU or a GPU, and data-parallel over torch.distributed.

    with TorchEngine(model, device="cuda", precision="bfloat16") as engine:   # the calls of engines/base.py
        engine.train_with(optimizer, average)           # parameters, optimizer slots, average: to the device
        batches = engine.batches(batches)               # chunks cut on the device from the ids sent once
        loss, grads, state = engine.loss_and_grads(*batches.chunk(j), state, dropout_rng=rng)
        if engine.finite(loss, grads):                  # nn/optim.py's step, on the device:
            engine.clip(grads)
            if engine.update(grads):                    # False: a weight overflowed
                engine.update_average()
        engine.pull()                                   # device -> numpy model and optimizer, for a checkpoint

Training (``train_with``): the parameters, the gradient, the optimizer's slots (engines/torch_optim.py:
nn/optim.py's formulas, operation for operation) and the running average live as tensors on the device
for the whole run; only the loss and two flags (gradient finite, weights finite) come back per step, and
``pull``/``push`` move everything between device and numpy at checkpoints, evaluations and a non-finite
step's restore only. The learning rate, clipping, decay and step count stay the numpy optimizer's
numbers, so checkpoints are the numpy engine's npz files and a run moves between engines with --resume.
Without ``train_with`` (scoring, the tests' single steps) the engine reads the numpy parameters each call.

The model: each step builds from the parameters, one flat vector, through io/export.py's translation
table, the weights of one ``nn.LSTM``/``nn.GRU``/``nn.RNN`` layer per charrnn layer. Those values are
copied into each module's own parameters (on a GPU, cuDNN keeps them in one block, which it needs),
forward and backward run, and the modules' gradients go back through the table by autograd into
charrnn's layout, one flat vector again. One module per layer, so charrnn's dropout (on every layer's
output, the top one included) and weight drop (on ``W_hh``) apply where the numpy engine applies them.
Dropout masks come from a seed drawn from the training RNG per step, as in the worker pool (weight-drop
masks from the seed alone, the same in every process). A gpt model needs no modules: its forward
(torch_gpt.py) reads views of the flat vector directly, and its dropout draws from torch's generator,
seeded for each step and process the same way.

Precision (``precision``, --precision): "float32" computes in the model's dtype. "bfloat16" and "float16"
run the forward and backward under ``torch.autocast``: matrix products, attention and (on a GPU) cuDNN's
recurrent layers in the lower precision. What stays float32: the master weights, the gradient, the
optimizer's slots and update, the running average, the carried hidden state, layer norms, softmax and
the cross-entropy loss (autocast's float32 list). float16 multiplies the loss by a dynamic scale before
backward (``LossScale``, as torch.amp.GradScaler: a step whose gradient overflows is computed again
with half the scale) and divides the gradient by it; bfloat16 needs none. A float64 model trains only
in "float32" (its own dtype).

Data-parallel (distributed.py's ``Distributed``, from torchrun's environment): every process runs the same training loop
over the same batches, but computes forward and backward over its contiguous share of the B streams
only; one all-reduce sums the shares' gradients (each times its share of the streams), losses and final
states: the collective DistributedDataParallel would issue, over one bucket, since the gradient is
one flat vector already. Every process then holds the same gradient and takes the same optimizer step
on its device, so the parameters stay identical without being sent. Process 0 writes checkpoints and
reports; a lost process makes the next collective raise WorkerError, one line.
"""

import contextlib
import math
import warnings

import numpy as np

from ..io.export import to_torch_names
from ..models.scoring import window_plan
from ..nn.packed import Packed
from .base import Engine
from .torch_gpt import gpt_logits
from .torch_optim import DeviceAverage, DeviceOptimizer

DEVICES = ("cpu", "cuda")
PRECISIONS = ("float32", "bfloat16", "float16")


class TorchEngineError(Exception):
    """The torch engine cannot run as asked; the message is one line for the user."""


def import_torch():
    """torch, or a one-line TorchEngineError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise TorchEngineError("--engine torch needs PyTorch: pip install 'charrnn[torch]'") from None
    return torch


def check_device(torch, device):
    if device not in DEVICES:
        raise TorchEngineError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TorchEngineError("--device cuda: PyTorch sees no CUDA GPU here (or it was built without CUDA); "
                               "use --device cpu")


def check_precision(precision, dtype):
    """``precision``, if the torch engine can compute a ``dtype`` model in it; else a one-line TorchEngineError."""
    if precision not in PRECISIONS:
        raise TorchEngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "float32" and dtype != "float32":
        raise TorchEngineError(f"--precision {precision} computes a float32 model's steps in {precision}; "
                               f"this model is {dtype}")
    return precision


class LossScale:
    """float16's dynamic loss scale (as torch.amp.GradScaler's): the loss is multiplied by ``scale`` before
    backward so small gradients do not underflow; a step whose gradient overflows halves it (and is
    computed again), and ``growth_interval`` finite steps in a row double it."""

    def __init__(self, scale=2.0**16, growth_interval=2000):
        self.scale, self.growth_interval, self.good = scale, growth_interval, 0

    def update(self, finite):
        """After a step's backward: True if its gradient may be used; False: compute it again (smaller scale)."""
        if finite:
            self.good += 1
            if self.good % self.growth_interval == 0:
                self.scale *= 2.0
            return True
        self.good = 0
        if self.scale <= 1.0:  # nothing left to lower: a truly non-finite step, the guard's to handle
            return True
        self.scale /= 2.0
        return False


class DeviceGrads:
    """A step's gradient on the device: ``flat`` (N,) and whether it is ``finite``; ``.numpy()`` copies it."""

    def __init__(self, flat, finite):
        self.flat, self.finite = flat, finite

    def numpy(self):
        return self.flat.cpu().numpy()


class DeviceBatches:
    """io/corpus.py's ``StreamBatches`` or ``WindowBatches``, cut on the engine's device: ``chunk(j, epoch)``
    returns (inputs, targets), (T, B) int64 tensors there."""

    def __init__(self, engine, batches, upload):
        self.engine, self.batches, self.upload = engine, batches, upload
        self.chunks_per_epoch = batches.chunks_per_epoch
        if upload:
            torch = engine.torch
            self.ids = engine._upload_ids(batches.ids)
            self.offsets = torch.arange(batches.seq_length + 1, device=engine.device)[:, None]  # (T+1, 1)
            self.starts = (torch.from_numpy(np.asarray(batches.starts)).to(engine.device)
                           if hasattr(batches, "starts") else None)

    def chunk(self, j, epoch=0):
        if not self.upload:
            return tuple(self.engine.torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
                         for a in self.batches.chunk(j, epoch))
        b = self.batches
        if self.starts is not None:  # contiguous streams: the next T characters of each
            starts = self.starts + j * b.seq_length
        else:  # random windows: only their B starts come from the host
            starts = self.engine.to_device(b.starts_of(j, epoch))
        window = self.ids[starts[None, :] + self.offsets].long()  # (T+1, B)
        return window[:-1], window[1:]


def all_finite(torch, x):
    """Whether every element of ``x`` is finite, as a 0-d tensor (not waiting for the device): its min and
    max are, since both carry a NaN; one pass, many times faster on a CPU than isfinite(x).all()."""
    return torch.isfinite(torch.stack(torch.aminmax(x))).all()


def _device_id_dtype(dtype):
    """A dtype for ids on the device that every device indexes with: uint8 as it is, wider ids as int32/int64."""
    return np.uint8 if dtype == np.uint8 else np.int32 if np.dtype(dtype).itemsize <= 2 else np.int64


class _TorchOps:
    """io/export.py's table, spelled in torch (autograd follows every reorder and transpose)."""

    def __init__(self, torch):
        self.concat = torch.cat

    @staticmethod
    def zeros(n, like):
        return like.new_zeros(n)

    @staticmethod
    def transpose(a):
        return a.T


class TorchEngine(Engine):
    """Loss, gradients and scores by PyTorch on ``device``, over this process's share of the streams."""

    def __init__(self, model, device="cpu", distributed=None, precision="float32"):
        torch = import_torch()
        check_device(torch, device.split(":")[0])
        config = model.config
        if config.model not in ("rnn", "lstm", "gru", "gpt"):
            raise TorchEngineError(f"--engine torch trains rnn, lstm, gru and gpt models, not {config.model}")
        if config.model == "rnn" and config.activation not in ("tanh", "relu"):
            raise TorchEngineError(f"--engine torch runs rnn with tanh or relu, not {config.activation}")
        self.torch, self.model, self.distributed = torch, model, distributed
        self.device = torch.device(distributed.device if distributed else device)
        self.workers = distributed.world_size if distributed else 1
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[config.dtype]
        self.ops = _TorchOps(torch)
        self.layers = [] if config.model == "gpt" else self._rnn_layers()
        self.grads = Packed(model.shapes, model.dtype)
        self.precision = check_precision(precision, config.dtype)
        self.autocast_dtype = None if precision == "float32" else getattr(torch, precision)
        self.scaler = LossScale() if precision == "float16" else None
        self.params = self.optimizer = self.average = None  # on the device, from ``train_with`` on

    def _rnn_layers(self):
        """One nn.LSTM/GRU/RNN layer per charrnn layer; their parameters take charrnn's values at every call."""
        nn, config = self.torch.nn, self.model.config
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[config.model]
        extra = {"nonlinearity": config.activation} if config.model == "rnn" else {}
        H = config.hidden_size
        return [cls(config.vocab_size if k == 0 else H, H, 1, **extra).to(self.device, self.dtype)
                for k in range(config.num_layers)]

    # -- the engine's calls -------------------------------------------------------------------------------------

    def loss_and_grads(self, inputs, targets, state=None, dropout_rng=None, dropout=None):
        """As ``CharRNN.loss_and_grads``: mean loss over all B streams, its gradient and the final state, the
        share of this process computed here and the rest summed in. Before ``train_with``: the gradient as a
        ``Packed`` (overwritten by the next call) and the state as numpy arrays; after it, both stay on the
        device (``DeviceGrads``, tensors), and ``inputs``/``targets`` may be device tensors (``batches``)."""
        cfg = self.model.config
        B = inputs.shape[1]
        lo, hi = self._share(B)
        dropout = cfg.dropout if dropout is None else dropout
        seed = None
        if dropout_rng is not None and (dropout > 0 or getattr(cfg, "weight_drop", 0.0) > 0):  # gpt: no weight drop
            seed = int(dropout_rng.integers(2**63))
        state = self._state_slice(state, lo, hi)
        while True:  # once, but for a float16 step whose gradient overflowed: again with a smaller loss scale
            scale = self.scaler.scale if self.scaler else 1.0
            grad, loss_t, state_t = self._backward(inputs[:, lo:hi], targets[:, lo:hi], state, dropout, seed,
                                                   (hi - lo) / B, scale, lo, hi, B)
            finite = all_finite(self.torch, grad)
            loss, finite = self.torch.stack([loss_t.double().reshape(()), finite.double()]).tolist()  # one copy
            if self.scaler is None or self.scaler.update(bool(finite) and math.isfinite(loss)):
                break
        if scale != 1.0:
            grad.div_(scale)
        if self.params is None:
            self.grads.flat[...] = grad.cpu().numpy()
            return loss, self.grads, tuple(s.cpu().numpy() for s in state_t)
        return loss, DeviceGrads(grad, bool(finite)), state_t

    def chunk_nll(self, inputs, targets, state=None):
        """As ``scoring.chunk_nll``: summed -log p of ``targets`` over all B streams, and the state after them."""
        nlls, state = self.chunk_nlls(inputs, targets, state)
        return float(nlls.sum()), state

    def chunk_nlls(self, inputs, targets, state=None):
        """As ``scoring.chunk_nlls``: -log p of each of ``targets`` (T, B), as a (T, B) array; the state after."""
        nlls, state = self._nlls(inputs, targets, state)
        return nlls.cpu().numpy(), tuple(s.cpu().numpy() for s in state)

    def streams_nll(self, ids, batch_size, seq_length):
        """As ``scoring.streams_nll`` (the validation loss): (total nats, characters scored). The text is
        copied to the device once; a recurrent model's streams (gpt: its sliding windows) are cut there and
        their scores summed there."""
        if len(ids) < 2:
            return 0.0, 0
        if self.model.context_length is not None:
            return self._windows_nll(ids), len(ids) - 1
        torch = self.torch
        ids_t = self._upload_ids(ids)
        n = len(ids) - 1
        B = min(batch_size, n)
        L = n // B
        starts = torch.arange(B, device=self.device) * L  # (B,)
        total, state = torch.zeros((), dtype=torch.float64, device=self.device), None
        for j in range(0, L, seq_length):
            t = min(seq_length, L - j)
            window = ids_t[starts[None, :] + j + torch.arange(t + 1, device=self.device)[:, None]].long()  # (t+1, B)
            nlls, state = self._nlls(window[:-1], window[1:], state)
            total += nlls.sum()
        tail = ids_t[B * L :].long()
        if len(tail) > 1:
            state = tuple(s[:, B - 1 : B] for s in state)
            for j in range(0, len(tail) - 1, seq_length):
                window = tail[j : j + seq_length + 1, None]  # (t+1, 1)
                nlls, state = self._nlls(window[:-1], window[1:], state)
                total += nlls.sum()
        return float(total.item()), n

    def _windows_nll(self, ids, group=64):
        """The sum of ``scoring.window_nlls(model, ids, 1)``: the windows cut from ``ids`` on the device,
        ``group`` at a time, each scored from its first new target on (a mask), summed there."""
        torch, P = self.torch, self.model.context_length
        ids_t = self._upload_ids(ids)
        plan = window_plan(P, 1, len(ids))
        full = [w for w in plan if w[2] - w[0] == P + 1]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        rows, positions = torch.arange(P + 1, device=self.device), torch.arange(P, device=self.device)[:, None]
        for b in range(0, len(full), group):
            starts = self.to_device(np.array([(a, t - a - 1) for a, t, _ in full[b : b + group]], np.int64))
            window = ids_t[starts[:, :1] + rows].T.long()  # (P+1, W)
            nlls, _ = self._nlls(window[:-1], window[1:], None)  # (P, W)
            total += torch.where(positions >= starts[:, 1], nlls, 0).sum()  # each from its first new target
        for a, t, stop in plan:
            if stop - a != P + 1:  # a window the text's end cuts short
                window = ids_t[a:stop, None].long()
                total += self._nlls(window[:-1], window[1:], None)[0][t - a - 1 :].sum()
        return float(total.item())

    # -- training on the device -----------------------------------------------------------------------------------

    def train_with(self, optimizer, average=None):
        """From now on the parameters, ``optimizer``'s slots (nn/optim.py) and ``average``'s running average
        (or None) live on the device, copied there from numpy once; ``update`` changes them there and ``pull``
        copies them back into the model, the optimizer and the average (for a checkpoint)."""
        torch = self.torch
        self.params = torch.from_numpy(self.model.params.flat.copy()).to(self.device)
        self.optimizer = DeviceOptimizer(torch, optimizer, self.device)
        self.average = DeviceAverage(torch, average, self.device) if average is not None else None

    def finite(self, loss, grads):
        """Whether a step's loss and gradient are finite."""
        if self.params is None:
            return super().finite(loss, grads)
        return math.isfinite(loss) and grads.finite

    def clip(self, grads):
        """Clip the gradient on the device, as the numpy optimizer is set to."""
        if self.params is None:
            return super().clip(grads)
        opt = self.optimizer.optimizer
        if opt.grad_clip:
            self.optimizer.clip(grads.flat, opt.grad_clip, opt.clip_mode)

    def update(self, grads):
        """The optimizer's update on the device (the numpy optimizer's learning rate and decay); returns whether
        every weight is still finite."""
        if self.params is None:
            return super().update(grads)
        self.optimizer.update(self.params, grads.flat)
        return bool(all_finite(self.torch, self.params).item())

    def update_average(self):
        """Fold the device's parameters into the running average there."""
        if self.params is None:
            return super().update_average()
        if self.average is not None:
            self.average.update(self.params, self.optimizer.optimizer.steps)

    def pull(self):
        """Copy the device's parameters, optimizer slots and average into the numpy model, optimizer and average."""
        if self.params is None:
            return
        self.model.params.flat[...] = self.params.cpu().numpy()
        self.optimizer.pull()
        if self.average is not None:
            self.average.pull()

    def push(self):
        """Copy the numpy model's parameters and optimizer slots to the device (the non-finite guard's restore,
        which leaves the running average as it is)."""
        if self.params is None:
            return
        self.params.copy_(self.torch.from_numpy(self.model.params.flat))
        self.optimizer.push()

    def host_state(self, state):
        """A state from ``loss_and_grads`` as numpy arrays (for a checkpoint)."""
        return None if state is None else tuple(s.cpu().numpy() if hasattr(s, "cpu") else s for s in state)

    def batches(self, batches, upload=None):
        """``batches`` (io/corpus.py) cut on the device: a GPU gets the ids once, then per chunk only the
        streams' starts (random windows) or nothing (contiguous streams). On the CPU the ids are already
        where the engine reads them: the chunks are cut there as numpy does (``upload``: copy them anyway)."""
        if upload is None:
            upload = self.device.type != "cpu"
        return DeviceBatches(self, batches, upload)

    def agree(self, value):
        """Process 0's value of a small integer in every process; the value itself in one process."""
        return self.distributed.agree(value) if self.distributed else value

    def any(self, flag):
        return self.distributed.any(flag) if self.distributed else bool(flag)

    @property
    def writer(self):
        """Whether this process writes checkpoints and reports (process 0, or the only one)."""
        return self.distributed is None or self.distributed.writer

    # -- the computation ----------------------------------------------------------------------------------------

    def _share(self, B):
        """This process's contiguous slice of the B streams: (lo, hi)."""
        if self.distributed is None:
            return 0, B
        bounds = np.linspace(0, B, self.workers + 1).astype(int)
        return int(bounds[self.distributed.rank]), int(bounds[self.distributed.rank + 1])

    def _flat_params(self):
        """The parameters as one (N,) tensor: the device's own after ``train_with``; before it numpy's memory
        itself on the CPU, a copy on a GPU."""
        if self.params is not None:
            return self.params.detach()
        flat = self.torch.from_numpy(self.model.params.flat)
        return flat.to(self.device) if self.device.type != "cpu" else flat.detach()

    def _eval_params(self):
        """The parameters scores are of: while training on the device, the running average if there is one
        (what validation reads), else the parameters."""
        if self.average is not None:
            return self.average.params
        return self._flat_params()

    @property
    def _cpu_float16(self):
        return self.autocast_dtype is self.torch.float16 and self.device.type == "cpu"

    def _layer_autocast(self):
        """A recurrent layer's region: the step's, but float32 for float16 on a CPU (oneDNN has no float16 LSTM)."""
        if self._cpu_float16:
            return self.torch.autocast("cpu", enabled=False)
        return contextlib.nullcontext()

    def _autocast(self):
        """The lower-precision region of a step (a no-op for float32)."""
        return self.torch.autocast(self.device.type, dtype=self.autocast_dtype or self.torch.float32,
                                   enabled=self.autocast_dtype is not None)

    def _backward(self, inputs, targets, state, dropout, seed, share, scale, lo, hi, B):
        """(gradient (N,), mean loss (1,), final state (tensors)) over the B streams, this process's share
        ``inputs``/``targets`` (T, b) computed here and the rest summed in; the loss times ``scale`` is what
        is differentiated (float16's loss scale), so the gradient is ``scale`` times too large."""
        torch = self.torch
        flat = self._flat_params()
        grad = self._grad_buffer(flat)
        with torch.enable_grad():
            with self._autocast():
                logits, final, bridges = self._forward(flat, inputs, state, dropout, seed, grad)
                loss = self._cross_entropy(logits, targets, "mean")
            (loss * share if scale == 1.0 else loss * (share * scale)).backward()  # into grad and the modules
            if bridges:  # the modules' gradients, back through the translation table into grad
                torch.autograd.backward([w for w, _ in bridges], [p.grad for _, p in bridges])
        for layer in self.layers:
            layer.zero_grad(set_to_none=True)
        parts = [grad, (loss.detach().to(flat.dtype) * share).reshape(1)]
        return self._sum_over_processes(parts, final, lo, hi, B)

    def _grad_buffer(self, flat):
        """A zeroed (N,) gradient like ``flat``, the same memory each step (its views are the parameters' .grad)."""
        grad = getattr(self, "_grad", None)
        if grad is None or grad.shape != flat.shape or grad.dtype != flat.dtype or grad.device != flat.device:
            grad = self._grad = self.torch.zeros_like(flat)
        else:
            grad.zero_()
        return grad

    def _nlls(self, inputs, targets, state):
        """(-log p of ``targets`` (T, B) as a tensor, final state as tensors), this process's share computed here."""
        torch = self.torch
        T, B = inputs.shape
        lo, hi = self._share(B)
        with torch.no_grad():
            flat = self._eval_params()
            nlls = flat.new_zeros((T, B))
            if hi > lo:
                with self._autocast():
                    logits, final, _ = self._forward(flat, inputs[:, lo:hi], self._state_slice(state, lo, hi), 0.0,
                                                     None)
                    nlls[:, lo:hi] = self._cross_entropy(logits, targets[:, lo:hi], "none").reshape(T, hi - lo)
            else:  # fewer streams than processes (a short validation text): nothing here
                final = tuple(torch.from_numpy(s).to(self.device, self.dtype) for s in self.model.initial_state(0))
            _, nlls_t, state_t = self._sum_over_processes([flat.new_zeros(0), nlls.reshape(-1)], final, lo, hi, B)
        return nlls_t.reshape(T, B), state_t

    def to_device(self, array):
        """A small host array on the device without waiting for the device: through pinned memory to a GPU."""
        tensor = self.torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _upload_ids(self, ids):
        """``ids`` (a numpy vector) on the device, copied once per array (the validation text at every evaluation
        is the same array)."""
        cached = getattr(self, "_uploaded", None)
        if cached is not None and cached[0] is ids:
            return cached[1]
        array = np.ascontiguousarray(ids, dtype=_device_id_dtype(ids.dtype))
        if not array.flags.writeable:  # a memory-mapped corpus: torch takes only writable arrays
            array = array.copy() if self.device.type == "cpu" else array
        with warnings.catch_warnings():  # a read-only array read once, to copy it to a GPU
            warnings.simplefilter("ignore", UserWarning)
            tensor = self.torch.from_numpy(array).to(self.device)
        self._uploaded = (ids, tensor)
        return tensor

    def _cross_entropy(self, logits, targets, reduction):
        """-log p of ``targets`` (T, b) under ``logits`` (T, b, V): their mean or sum."""
        V = logits.shape[-1]
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, V), self._ids(targets).reshape(-1),
                                                      reduction=reduction)

    def _ids(self, ids):
        if self.torch.is_tensor(ids):
            return ids.to(self.device, self.torch.int64)
        return self.torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)

    def _state_slice(self, state, lo, hi):
        if state is None:
            return None
        torch = self.torch
        return tuple(s[:, lo:hi].contiguous() if torch.is_tensor(s) else
                     torch.from_numpy(np.ascontiguousarray(s[:, lo:hi])).to(self.device) for s in state)

    def _forward(self, flat, inputs, state, dropout, seed, grad=None):
        """Logits (T, b, V) and the final state per layer for this process's streams ``inputs`` (T, b), and
        the bridges: (weight made from ``flat``, the module parameter that took its value) pairs, for the
        weights that need a gradient (none for gpt, whose forward reads the parameters themselves). With
        ``grad`` (N,), each parameter is a leaf view of ``flat`` whose .grad is its view of ``grad``:
        backward accumulates into ``grad`` in place (one pass over it, not one per parameter, as gradients
        of views of one flat leaf would take)."""
        params, offset = {}, 0
        for name, shape in self.model.shapes.items():
            size = int(np.prod(shape))
            params[name] = flat[offset : offset + size].view(shape)
            if grad is not None:
                params[name] = params[name].detach().requires_grad_()
                params[name].grad = grad[offset : offset + size].view(shape)
            offset += size
        rank = self.distributed.rank if self.distributed else 0
        if self.model.config.model == "gpt":
            return self._gpt_forward(params, inputs, dropout, None if seed is None else _derive(seed, rank))
        return self._rnn_forward(params, inputs, state, dropout, seed, rank)

    def _gpt_forward(self, params, inputs, dropout, seed):
        """The gpt model's logits (T, b, V), no state or bridges; dropout from torch's generator, seeded."""
        torch, config, ids = self.torch, self.model.config, self._ids(inputs).T  # (b, T)
        if seed is None or dropout == 0:
            return gpt_logits(torch, params, ids, config).transpose(0, 1), (), []
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device.index or torch.cuda.current_device()] if cuda else []):
            torch.manual_seed(seed)
            logits = gpt_logits(torch, params, ids, config, dropout)
        return logits.transpose(0, 1), (), []

    def _rnn_forward(self, params, inputs, state, dropout, seed, rank):
        """The recurrent model's part of ``_forward``: one module per layer, weights copied in each call."""
        torch, cfg = self.torch, self.model.config
        T, b = inputs.shape
        generator = mask_generator = None
        if seed is not None:
            generator = torch.Generator(self.device).manual_seed(_derive(seed, rank))
            mask_generator = torch.Generator(self.device).manual_seed(_derive(seed, -1))  # the same in every process
        if mask_generator is not None and cfg.weight_drop > 0:
            keep = 1.0 - cfg.weight_drop
            for k in range(cfg.num_layers):
                W_hh = params[f"l{k}.W_hh"]
                mask = (torch.rand(W_hh.shape, generator=mask_generator, device=self.device) < keep).to(self.dtype)
                params[f"l{k}.W_hh"] = W_hh * (mask / keep)
        weights = to_torch_names(params, cfg, self.ops)
        x = torch.nn.functional.one_hot(self._ids(inputs), cfg.vocab_size).to(self.dtype)  # (T, b, V)
        finals, bridges = [], []
        for k, layer in enumerate(self.layers):
            with torch.no_grad():
                for name, own in layer.named_parameters():
                    weight = weights[f"rnn.{name[:-1]}{k}"]
                    own.copy_(weight)
                    if weight.requires_grad:
                        bridges.append((weight, own))
            h0 = None if state is None else tuple(s[k : k + 1] for s in state)
            if h0 is not None and cfg.model != "lstm":
                h0 = h0[0]
            with self._layer_autocast():
                x, final = layer(x.to(self.dtype) if self._cpu_float16 else x, h0)  # x: (T, b, H)
            finals.append(final if cfg.model == "lstm" else (final,))
            if generator is not None and dropout > 0:
                keep = 1.0 - dropout
                mask = torch.rand((T, b, cfg.hidden_size), generator=generator, device=self.device) < keep
                x = x * (mask.to(self.dtype) / keep)
        logits = torch.nn.functional.linear(x, params["W_hy"].T, params["b_y"])  # (T, b, V): x @ W_hy + b_y
        final_state = tuple(torch.cat([f[i] for f in finals]).detach().to(self.dtype) for i in range(len(finals[0])))
        return logits, final_state, bridges

    def _sum_over_processes(self, parts, final, lo, hi, B):
        """(sum of parts[0], sum of parts[1], full (L, B, H) state tuple) over the processes, as tensors on
        the device: one all-reduce of one buffer (the gradient is one flat vector: DistributedDataParallel's
        buckets, as one); in a single process, the parts themselves. A gpt model's state is ``()``."""
        if self.distributed is None:
            return parts[0], parts[1], tuple(final)
        S = len(final)
        L, _, H = final[0].shape if S else (0, 0, 0)
        state = parts[1].new_zeros((S, L, B, H))
        if S:
            state[:, :, lo:hi] = self.torch.stack(final)
        buffer = self.torch.cat([parts[0].detach().reshape(-1), parts[1].detach(), state.reshape(-1)])
        self.distributed.all_reduce(buffer)
        n, m = parts[0].numel(), parts[1].numel()
        full = buffer[n + m :].reshape(S, L, B, H)
        return buffer[:n], buffer[n : n + m], tuple(full.unbind(0))


def _derive(seed, index):
    """A torch seed (below 2**63) from the step's seed and a process index (-1: shared by all)."""
    return int(np.random.default_rng([seed, index + 1]).integers(2**63))
