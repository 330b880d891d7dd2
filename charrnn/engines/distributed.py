"""This process's place among torchrun's processes, and the collectives training needs across them.

    distributed = Distributed.from_environment("cuda")   # None unless torchrun started several processes
    distributed.all_reduce(tensor)                      # summed over the processes, in place
    seed = distributed.agree(seed)                      # process 0's value, everywhere
    if distributed.any(stopping): ...                   # true in any process

The torch engine (torch_engine.py) sums its share of each step's gradient through ``all_reduce``; a lost
process makes the next collective raise WorkerError, one line.
"""

import datetime
import hashlib
import os
import re

import numpy as np

from .base import WorkerError
from .torch_engine import TorchEngineError, check_device, import_torch


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
        """Process 0's value of an integer (a random seed) or a float (the seconds trained), in every process."""
        dtype = self.torch.float64 if isinstance(value, float) else self.torch.int64
        t = self.torch.tensor([value if self.rank == 0 else 0], dtype=dtype, device=self.device)
        self.all_reduce(t)
        return t.item()

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
