"""charrnn's optimizers (nn/optim.py) and running weight average, computed by PyTorch on the engine's device.

    opt = DeviceOptimizer(torch, optimizer, device)     # mirrors a numpy Optimizer: its slots on the device
    opt.step(params, grads)                             # params, grads: (N,) tensors on the device, in place
    opt.clip(grads, limit, mode); opt.update(params, grads)   # the same, in its two halves
    opt.pull(); opt.push()                              # slots device -> numpy optimizer, and back

The update is nn/optim.py's on the same flat vectors (clipping the gradient by value or by global norm,
decoupled weight decay, then the optimizer's rule, its terms in the same order), with torch's fused
in-place ops (``addcmul_``, ``addcdiv_``) where numpy takes two passes, so in float64 on a CPU it gives
numpy's numbers to rounding; nothing in it waits for the device (norm clipping multiplies by
min(1, factor) rather than testing the factor on the host). Only the slots ("m", "v", "sum_sq",
"mean_sq") live here; the hyperparameters and the step count stay the numpy optimizer's (plain Python
numbers, read each step), so the training loop's schedule sets ``optimizer.learning_rate`` as for the
numpy engine and a checkpoint holds the same names ("<slot>.<param>", "steps") whichever engine wrote it.
"""

import math

from ..nn.optim import NORM_EPS


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
        if opt.grad_clip:
            self.clip(g, opt.grad_clip, opt.clip_mode)
        self.update(p, g)

    def update(self, p, g):
        """Decay and update ``p`` in place with the (clipped) gradient ``g``: nn/optim.py's ``Optimizer.update``."""
        opt = self.optimizer
        opt.steps += 1
        if self._tmp is None or self._tmp.shape != p.shape:
            self._tmp = self.torch.empty_like(p)
        if opt.weight_decay:
            p.mul_(1.0 - opt.learning_rate * opt.weight_decay)
        getattr(self, "_" + self.kind)(p, g, self._tmp, opt.learning_rate)

    def clip(self, g, limit, mode):
        """nn/optim.py's ``clip_gradient`` on the device, without waiting for it: "value" clamps each element;
        "norm" multiplies ``g`` by min(1, C / (norm + 1e-6)), its L2 norm summed in float64."""
        if mode == "value":
            g.clamp_(-limit, limit)
            return
        norm = self.torch.linalg.vector_norm(g, dtype=self.torch.float64)
        g.mul_((limit / (norm + NORM_EPS)).clamp_(max=1.0))

    def _sgd(self, p, g, tmp, lr):
        if self._fits(lr, p):
            p.add_(g, alpha=-lr)
        else:
            self.torch.mul(g, lr, out=tmp)
            p.sub_(tmp)

    def _addcdiv(self, p, num, den, value):
        """p += value * num / den (``den`` may be overwritten)."""
        if self._fits(value, p):
            p.addcdiv_(num, den, value=value)
        else:  # a rate beyond the dtype's range (torch refuses it as a fused op's factor): inf, as numpy's
            self.torch.div(num, den, out=den)
            den.mul_(value)
            p.add_(den)

    def _fits(self, value, p):
        return abs(value) <= self.torch.finfo(p.dtype).max

    def _adagrad(self, p, g, tmp, lr):
        sum_sq = self.slot["sum_sq"]
        sum_sq.addcmul_(g, g)
        self.torch.add(sum_sq, self.optimizer.eps, out=tmp)
        tmp.sqrt_()
        self._addcdiv(p, g, tmp, -lr)

    def _rmsprop(self, p, g, tmp, lr):
        mean_sq, decay = self.slot["mean_sq"], self.optimizer.decay
        mean_sq.mul_(decay).addcmul_(g, g, value=1 - decay)
        self.torch.sqrt(mean_sq, out=tmp)
        tmp.add_(self.optimizer.eps)
        self._addcdiv(p, g, tmp, -lr)

    def _adam(self, p, g, tmp, lr):
        opt = self.optimizer
        m, v, t = self.slot["m"], self.slot["v"], opt.steps
        m.mul_(opt.beta1).add_(g, alpha=1 - opt.beta1)
        v.mul_(opt.beta2).addcmul_(g, g, value=1 - opt.beta2)
        step_size = lr * math.sqrt(1 - opt.beta2**t) / (1 - opt.beta1**t)
        self.torch.sqrt(v, out=tmp)
        tmp.add_(opt.eps)
        self._addcdiv(p, m, tmp, -step_size)


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
