"""charrnn's optimizers (nn/optim.py) and running weight average, computed by PyTorch on the engine's device.

    opt = DeviceOptimizer(torch, optimizer, device)     # mirrors a numpy Optimizer: its slots on the device
    opt.step(params, grads)                             # params, grads: (N,) tensors on the device, in place
    opt.pull(); opt.push()                              # slots device -> numpy optimizer, and back

The update is nn/optim.py's, operation for operation on the same flat vectors (clipping each gradient
element to [-grad_clip, grad_clip], decoupled weight decay, then the optimizer's rule), so in float64
on a CPU it gives numpy's numbers. Only the slots ("m", "v", "sum_sq", "mean_sq") live here; the
hyperparameters and the step count stay the numpy optimizer's (plain Python numbers, read each step),
so the training loop's schedule sets ``optimizer.learning_rate`` as for the numpy engine and a
checkpoint holds the same names ("<slot>.<param>", "steps") whichever engine wrote it.
"""

import math


class DeviceOptimizer:
    """The slots of ``optimizer`` (an nn/optim.py ``Optimizer``) as tensors on ``device``, and its update."""

    def __init__(self, torch, optimizer, device, dtype=None):
        self.torch, self.optimizer, self.device = torch, optimizer, device
        self.kind = type(optimizer).__name__.lower()
        self.slot = {name: torch.from_numpy(packed.flat.copy()).to(device, dtype) for name, packed in
                     optimizer.slot.items()}
        self._tmp = None

    def pull(self):
        """Write the slots into the numpy optimizer (for a checkpoint)."""
        for name, tensor in self.slot.items():
            self.optimizer.slot[name].flat[...] = tensor.detach().cpu().numpy()

    def push(self):
        """Take the numpy optimizer's slots (after a resume or a restore)."""
        for name, tensor in self.slot.items():
            tensor.copy_(self.torch.from_numpy(self.optimizer.slot[name].flat))

    def step(self, p, g):
        """Clip ``g`` in place, decay and update ``p`` in place: nn/optim.py's ``Optimizer.step``."""
        opt = self.optimizer
        opt.steps += 1
        if self._tmp is None or self._tmp.shape != p.shape:
            self._tmp = self.torch.empty_like(p)
        if opt.grad_clip:
            g.clamp_(-opt.grad_clip, opt.grad_clip)
        if opt.weight_decay:
            p.mul_(1.0 - opt.learning_rate * opt.weight_decay)
        getattr(self, "_" + self.kind)(p, g, self._tmp, opt.learning_rate)

    def _sgd(self, p, g, tmp, lr):
        self.torch.mul(g, lr, out=tmp)
        p.sub_(tmp)

    def _adagrad(self, p, g, tmp, lr):
        torch, sum_sq = self.torch, self.slot["sum_sq"]
        torch.mul(g, g, out=tmp)
        sum_sq.add_(tmp)
        torch.add(sum_sq, self.optimizer.eps, out=tmp)
        tmp.sqrt_()
        torch.div(g, tmp, out=tmp)
        tmp.mul_(lr)
        p.sub_(tmp)

    def _rmsprop(self, p, g, tmp, lr):
        torch, mean_sq, decay = self.torch, self.slot["mean_sq"], self.optimizer.decay
        torch.mul(g, g, out=tmp)
        tmp.mul_(1 - decay)
        mean_sq.mul_(decay)
        mean_sq.add_(tmp)
        torch.sqrt(mean_sq, out=tmp)
        tmp.add_(self.optimizer.eps)
        torch.div(g, tmp, out=tmp)
        tmp.mul_(lr)
        p.sub_(tmp)

    def _adam(self, p, g, tmp, lr):
        torch, opt = self.torch, self.optimizer
        m, v, t = self.slot["m"], self.slot["v"], opt.steps
        m.mul_(opt.beta1)
        torch.mul(g, 1 - opt.beta1, out=tmp)
        m.add_(tmp)
        v.mul_(opt.beta2)
        torch.mul(g, g, out=tmp)
        tmp.mul_(1 - opt.beta2)
        v.add_(tmp)
        step_size = lr * math.sqrt(1 - opt.beta2**t) / (1 - opt.beta1**t)
        torch.sqrt(v, out=tmp)
        tmp.add_(opt.eps)
        torch.div(m, tmp, out=tmp)
        tmp.mul_(step_size)
        p.sub_(tmp)


class DeviceAverage:
    """nn/optim.py's ``WeightAverage`` with its average on the device."""

    def __init__(self, torch, average, device, dtype=None):
        self.torch, self.average = torch, average
        self.params = torch.from_numpy(average.params.flat.copy()).to(device, dtype)
        self._tmp = torch.empty_like(self.params)

    def update(self, p, steps):
        """Fold in ``p`` (a device tensor) after update number ``steps`` (counting from 1)."""
        self.torch.sub(p, self.params, out=self._tmp)
        self._tmp.mul_(max(1.0 / self.average.horizon, 1.0 / max(steps, 1)))
        self.params.add_(self._tmp)

    def pull(self):
        self.average.params.flat[...] = self.params.cpu().numpy()

    def push(self):
        self.params.copy_(self.torch.from_numpy(self.average.params.flat))
