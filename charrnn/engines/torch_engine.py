"""Training steps computed by PyTorch, on a CPU or a GPU, and data-parallel over torch.distributed.

    with TorchEngine(model, device="cuda") as engine:      # the calls of engines/base.py
        loss, grads, state = engine.loss_and_grads(inputs, targets, state, dropout_rng=rng)
        nll, state = engine.chunk_nll(inputs, targets, state)

The model, its parameters and the optimizer stay charrnn's. Each step the engine hands PyTorch the
parameters as one flat vector (shared with numpy on the CPU, copied to a GPU) and builds from it, through
io/export.py's translation table, the weights of one ``nn.LSTM``/``nn.GRU``/``nn.RNN`` layer per charrnn
layer. Those values are copied into each module's own parameters (on a GPU, cuDNN keeps them in one
block, which it needs), forward and backward run, and the modules' gradients go back through the table
by autograd into charrnn's layout, one flat vector again, returned as charrnn's ``Packed`` dict. One module per layer,
so charrnn's dropout (on every layer's output, the top one included) and weight drop (on ``W_hh``)
apply where the numpy engine applies them. Dropout masks come from a seed drawn from the training
RNG per step, as in the worker pool (weight-drop masks from the seed alone, the same in every process).
A gpt model needs no modules: its forward (torch_gpt.py) reads views of the flat vector directly, and
its dropout draws from torch's generator, seeded for each step and process the same way.

Data-parallel (``Distributed``, from torchrun's environment): every process runs the same training loop
over the same batches, but computes forward and backward over its contiguous share of the B streams
only; one all-reduce sums the shares' gradients (each times its share of the streams), losses and final
states. Every process then holds the same gradient and takes the same optimizer step, so the parameters
stay identical without being sent. Process 0 writes checkpoints and reports.
"""

import datetime
import hashlib
import os
import re

import numpy as np

from ..io.export import to_torch_names
from ..nn.packed import Packed
from .base import Engine, WorkerError
from .torch_gpt import gpt_logits

DEVICES = ("cpu", "cuda")


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


class Distributed:
    """This process's place in a torchrun launch: rank, world size, and the collectives training needs.

    ``Distributed.from_environment(device)`` joins the process group torchrun describes (WORLD_SIZE,
    RANK, LOCAL_RANK, MASTER_ADDR/PORT): NCCL on GPUs, gloo on CPUs; None when not launched by torchrun.
    """

    def __init__(self, torch, rank, world_size, device):
        self.torch, self.rank, self.world_size, self.device = torch, rank, world_size, device

    @classmethod
    def from_environment(cls, device, timeout_s=1800):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        torch = import_torch()
        check_device(torch, device)
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise TorchEngineError(
                    f"process {local_rank} on this node has no GPU of its own ({torch.cuda.device_count()} here); "
                    "give torchrun --nproc-per-node no more than the GPUs"
                )
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        try:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as e:
            raise TorchEngineError(f"cannot join the torchrun process group ({_first_line(e)})") from None
        return cls(torch, dist.get_rank(), dist.get_world_size(), device)

    @property
    def writer(self):
        return self.rank == 0

    def all_reduce(self, tensor, op="SUM"):
        """Sum (or MAX) ``tensor`` over the processes, in place; a lost process raises WorkerError (one line)."""
        try:
            self.torch.distributed.all_reduce(tensor, getattr(self.torch.distributed.ReduceOp, op))
        except (RuntimeError, ValueError) as e:
            raise WorkerError(f"a training process was lost ({_first_line(e)})") from None

    def agree(self, value):
        """Process 0's value of a small integer, in every process (a random seed, say)."""
        t = self.torch.tensor([value if self.rank == 0 else 0], dtype=self.torch.int64, device=self.device)
        self.all_reduce(t)
        return int(t.item())

    def any(self, flag):
        """Whether ``flag`` is true in any process (a stop signal that reached only one, say)."""
        t = self.torch.tensor([1 if flag else 0], dtype=self.torch.int64, device=self.device)
        self.all_reduce(t)
        return bool(t.item())

    def check_same(self, array, what):
        """Raise WorkerError unless ``array`` holds the same bits in every process."""
        digest = int.from_bytes(hashlib.sha1(np.ascontiguousarray(array).tobytes()).digest()[:7], "little")
        t = self.torch.tensor([digest, -digest], dtype=self.torch.int64, device=self.device)
        self.all_reduce(t, "MAX")
        if t[0].item() != -t[1].item():
            raise WorkerError(f"the training processes' {what} differ (a process computes differently?)")

    def barrier(self):
        self.all_reduce(self.torch.zeros(1, device=self.device))

    def close(self):
        if self.torch.distributed.is_initialized():
            self.torch.distributed.destroy_process_group()


def _first_line(error):
    """The gist of a torch.distributed error: its first sentence, without gloo's source-file prefix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|py):\d+\]\s*", "", lines[0]) if lines else type(error).__name__
    return text.split(". ")[0].rstrip(".")


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

    def __init__(self, model, device="cpu", distributed=None):
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
        """As ``CharRNN.loss_and_grads``: mean loss over all B streams, its gradient (``Packed``, overwritten by
        the next call) and the final state, the share of this process computed here and the rest summed in."""
        torch, cfg = self.torch, self.model.config
        B = inputs.shape[1]
        lo, hi = self._share(B)
        dropout = cfg.dropout if dropout is None else dropout
        seed = None
        if dropout_rng is not None and (dropout > 0 or getattr(cfg, "weight_drop", 0.0) > 0):  # gpt: no weight drop
            seed = int(dropout_rng.integers(2**63))
        flat = self._flat_params().requires_grad_()
        with torch.enable_grad():
            logits, final, bridges = self._forward(flat, inputs[:, lo:hi], self._state_slice(state, lo, hi),
                                                   dropout, seed)
            loss = self._cross_entropy(logits, targets[:, lo:hi], "mean")
            share = (hi - lo) / B
            (loss * share).backward()  # into flat (the output layer) and the modules' own parameters
            if bridges:  # the modules' gradients, back through the translation table into flat
                torch.autograd.backward([w for w, _ in bridges], [p.grad for _, p in bridges])
        for layer in self.layers:
            layer.zero_grad(set_to_none=True)
        parts = [flat.grad, (loss.detach() * share).reshape(1)]
        total = self._sum_over_processes(parts, final, lo, hi, B)
        grads_t, loss_t, state_t = total
        self.grads.flat[...] = grads_t.cpu().numpy()
        return float(loss_t.item()), self.grads, state_t

    def chunk_nll(self, inputs, targets, state=None):
        """As ``evaluate.chunk_nll``: summed -log p of ``targets`` over all B streams, and the state after them."""
        nlls, state = self.chunk_nlls(inputs, targets, state)
        return float(nlls.sum()), state

    def chunk_nlls(self, inputs, targets, state=None):
        """As ``evaluate.chunk_nlls``: -log p of each of ``targets`` (T, B), as a (T, B) array; the state after."""
        torch = self.torch
        T, B = inputs.shape
        lo, hi = self._share(B)
        with torch.no_grad():
            flat = self._flat_params()
            nlls = flat.new_zeros((T, B))
            if hi > lo:
                logits, final, _ = self._forward(flat, inputs[:, lo:hi], self._state_slice(state, lo, hi), 0.0,
                                                 None)
                nlls[:, lo:hi] = self._cross_entropy(logits, targets[:, lo:hi], "none").reshape(T, hi - lo)
            else:  # fewer streams than processes (a short validation text): nothing here
                final = tuple(torch.from_numpy(s).to(self.device) for s in self.model.initial_state(0))
            _, nlls_t, state_t = self._sum_over_processes([flat.new_zeros(0), nlls.reshape(-1)], final, lo, hi, B)
        return nlls_t.reshape(T, B).cpu().numpy(), state_t

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
        """The parameters as one (N,) tensor: numpy's memory itself on the CPU, a copy on a GPU."""
        flat = self.torch.from_numpy(self.model.params.flat)
        return flat.to(self.device) if self.device.type != "cpu" else flat.detach()

    def _cross_entropy(self, logits, targets, reduction):
        """-log p of ``targets`` (T, b) under ``logits`` (T, b, V): their mean or sum."""
        V = logits.shape[-1]
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, V), self._ids(targets).reshape(-1),
                                                      reduction=reduction)

    def _ids(self, ids):
        return self.torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)

    def _state_slice(self, state, lo, hi):
        if state is None:
            return None
        return tuple(self.torch.from_numpy(np.ascontiguousarray(s[:, lo:hi])).to(self.device) for s in state)

    def _forward(self, flat, inputs, state, dropout, seed):
        """Logits (T, b, V) and the final state per layer for this process's streams ``inputs`` (T, b), and
        the bridges: (weight made from ``flat``, the module parameter that took its value) pairs, for the
        weights that need a gradient (none for gpt, whose forward reads ``flat`` itself)."""
        params, offset = {}, 0
        for name, shape in self.model.shapes.items():
            size = int(np.prod(shape))
            params[name] = flat[offset : offset + size].view(shape)
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
            x, final = layer(x, h0)  # x: (T, b, H)
            finals.append(final if cfg.model == "lstm" else (final,))
            if generator is not None and dropout > 0:
                keep = 1.0 - dropout
                mask = torch.rand((T, b, cfg.hidden_size), generator=generator, device=self.device) < keep
                x = x * (mask.to(self.dtype) / keep)
        logits = x @ params["W_hy"] + params["b_y"]  # (T, b, V)
        final_state = tuple(torch.cat([f[i] for f in finals]).detach() for i in range(len(finals[0])))
        return logits, final_state, bridges

    def _sum_over_processes(self, parts, final, lo, hi, B):
        """(sum of parts[0], sum of parts[1], full (L, B, H) state tuple as numpy) over the processes: one
        all-reduce of one buffer; in a single process, the parts themselves. A gpt model's state is ``()``."""
        if self.distributed is None:
            return parts[0], parts[1], tuple(s.cpu().numpy() for s in final)
        S = len(final)
        L, _, H = final[0].shape if S else (0, 0, 0)
        state = parts[1].new_zeros((S, L, B, H))
        if S:
            state[:, :, lo:hi] = self.torch.stack(final)
        buffer = self.torch.cat([parts[0].detach().reshape(-1), parts[1].detach(), state.reshape(-1)])
        self.distributed.all_reduce(buffer)
        n, m = parts[0].numel(), parts[1].numel()
        full = buffer[n + m :].reshape(S, L, B, H).cpu().numpy()
        return buffer[:n], buffer[n : n + m], tuple(full)


def _derive(seed, index):
    """A torch seed (below 2**63) from the step's seed and a process index (-1: shared by all)."""
    return int(np.random.default_rng([seed, index + 1]).integers(2**63))
