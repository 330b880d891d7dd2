"""gpu: ``--engine torch`` on a GPU beside a nanoGPT-style PyTorch script of the same model; the update's
share of a step.

    python -m benchmarks gpu --device cuda        # gpt --preset nanogpt, LSTM 1024x3 B=128 T=100
    python -m benchmarks gpu --device cpu --small   # the same rows on small sizes: proves the script runs
    python -m benchmarks gpu --update-share      # CPU: LSTM 512x2 B=32 T=100 and gpt mid, before/after

Rows (``main``), for each model, the same batch and the same random ids, after ``--warmup`` steps:

    charrnn            TorchEngine trained on the device (train_with: parameters, Adam's slots and the
                       update there), --precision bfloat16 by default, chunks cut on the device; Adam
                       with --preset nanogpt's clipping (global norm 1) for gpt, by value (5) for LSTM
    charrnn, bridge    the engine as it was before it trained on the device: the gradient copied to numpy
                       and charrnn's Adam in numpy on one CPU thread (fewer steps: it is slow on a GPU)
    nanoGPT-style      a plain ``nn.Module`` of the same shapes (Linear layers, one multi-layer nn.LSTM),
                       torch.optim.AdamW(fused=True), bfloat16 autocast, loss.backward(),
                       clip_grad_norm_(1.0), optimizer.step()
    ... + compile      the same under torch.compile (skipped on a CPU unless --compile)

Each row gives tokens (characters) per second over ``--steps`` steps with no synchronisation but the
loss's, then the share of a step spent outside forward and backward (cutting the batch, the optimizer,
copies), timed in a second pass with a device synchronisation at each phase's end. Rounds alternate
the rows; each figure is the best of ``--repeat`` rounds, with the per-round range.

``--update-share`` measures on this machine's CPU the share of a torch-engine step spent in the update:
before (the bridge: the gradient to numpy, charrnn's numpy Adam) and after (the device update), for
LSTM 512x2 B=32 T=100 and gpt mid (C=192, 6 layers, 6 heads, B=32, context 128), float32, alternating.
``main()`` is the entry point: ``python -m benchmarks gpu``.
"""

import math
import time

from benchmarks import harness

VOCAB = 65
# (kind, width, layers, batch, T = context for gpt, heads, dropout)
GPU_MODELS = {"gpt": ("gpt", 384, 6, 64, 256, 6, 0.2), "lstm": ("lstm", 1024, 3, 128, 100, 0, 0.0)}
SMALL_MODELS = {"gpt": ("gpt", 64, 2, 8, 64, 4, 0.2), "lstm": ("lstm", 128, 2, 16, 50, 0, 0.0)}
SHARE_MODELS = {"lstm": ("lstm", 512, 2, 32, 100, 0, 0.0), "gpt": ("gpt", 192, 6, 32, 128, 6, 0.0)}  # gpt mid


def describe(spec):
    kind, width, layers, batch, seq, heads, dropout = spec
    if kind == "gpt":
        return f"gpt C={width} L={layers} heads={heads} B={batch} context={seq} dropout={dropout:g}"
    return f"{kind} {width}x{layers} B={batch} T={seq}"


def token_ids(n=2_000_000):
    import numpy as np

    return np.random.default_rng(0).integers(0, VOCAB, n).astype(np.uint8)


class Timer:
    """Phase times of a step: ``mark(name)`` ends a phase (after a device synchronisation when ``sync``)."""

    def __init__(self, torch, device, sync):
        self.torch, self.device, self.sync = torch, device, sync
        self.phases, self.last = {}, None

    def start(self):
        self._sync()
        self.last = time.perf_counter()

    def mark(self, name):
        self._sync()
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now

    def _sync(self):
        if self.sync and self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


# -- charrnn's torch engine -------------------------------------------------------------------------------------


def charrnn_stepper(torch, spec, device, precision, bridge):
    """A function (j, timer) -> loss taking one charrnn training step; ``bridge``: the numpy update."""
    import numpy as np

    from charrnn.engines.torch_engine import TorchEngine
    from charrnn.io.corpus import StreamBatches, WindowBatches
    from charrnn.models.gpt import CharGPT, GPTConfig
    from charrnn.models.rnn import CharRNN, ModelConfig
    from charrnn.nn.optim import make_optimizer

    kind, width, layers, batch, seq, heads, dropout = spec
    ids = token_ids()
    if kind == "gpt":
        config = GPTConfig(VOCAB, hidden_size=width, num_layers=layers, num_heads=heads, context_length=seq,
                           dropout=dropout)
        model, batches = CharGPT(config, rng=np.random.default_rng(0)), WindowBatches(ids, batch, seq, 1)
    else:
        config = ModelConfig(VOCAB, kind, width, layers, dropout=dropout)
        model, batches = CharRNN(config, rng=np.random.default_rng(0)), StreamBatches(ids, batch, seq)
    clip = (1.0, "norm") if kind == "gpt" else (5.0, "value")  # --preset nanogpt's; the recipe's for an LSTM
    optimizer = make_optimizer("adam", model.params, 1e-3, clip[0], 0.1, clip_mode=clip[1])
    engine = TorchEngine(model, device, precision=precision)
    rng, carried = np.random.default_rng(1), [None]
    if not bridge:
        engine.train_with(optimizer)
        batches = engine.batches(batches)

    def step(j, timer):
        inputs, targets = batches.chunk(j % batches.chunks_per_epoch)
        timer.mark("batch")
        loss, grads, carried[0] = engine.loss_and_grads(inputs, targets, carried[0], dropout_rng=rng)
        timer.mark("forward/backward")
        if bridge:  # as the training loop did: the guard's checks around numpy's update
            math.isfinite(loss) and np.isfinite(grads.flat).all()
            optimizer.step(model.params, grads)
            np.isfinite(model.params.flat).all()
        else:
            engine.finite(loss, grads)
            engine.update(grads)
        timer.mark("update")
        return loss

    return step


# -- the nanoGPT-style script ---------------------------------------------------------------------------------


def reference_model(torch, spec):
    """A plain PyTorch model of ``spec``'s shapes: nanoGPT's GPT (untied output layer with a bias, as
    charrnn's), or one-hot characters into one multi-layer nn.LSTM and a Linear output layer."""
    nn, F = torch.nn, torch.nn.functional
    kind, width, layers, batch, seq, heads, dropout = spec

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.fc, self.fc_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if self.training else 0.0, is_causal=True)
            x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
            return x + self.drop(self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VOCAB, width), nn.Embedding(seq, width)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f, self.head, self.drop = nn.LayerNorm(width), nn.Linear(width, VOCAB), nn.Dropout(dropout)

        def forward(self, ids):  # (B, T) -> logits (B, T, V)
            x = self.drop(self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device)))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))

    class LSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(VOCAB, width, layers, batch_first=True), nn.Linear(width, VOCAB)

        def forward(self, ids):
            return self.head(self.rnn(F.one_hot(ids, VOCAB).float())[0])

    return GPT() if kind == "gpt" else LSTM()


def reference_stepper(torch, spec, device, compiled):
    """A function (j, timer) -> loss: one step of the nanoGPT-style script (its get_batch, autocast, AdamW)."""
    import numpy as np

    kind, width, layers, batch, seq, heads, dropout = spec
    model = reference_model(torch, spec).to(device)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
    except (RuntimeError, ValueError):  # a torch without a fused AdamW for this device
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    forward = torch.compile(model) if compiled else model
    data = torch.from_numpy(token_ids()).to(device)
    rng = np.random.default_rng(1)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16)

    def step(j, timer):
        starts = torch.from_numpy(rng.integers(0, len(data) - seq - 1, batch))  # nanoGPT's get_batch: pinned
        starts = starts.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else starts
        window = data[starts[:, None] + torch.arange(seq + 1, device=device)].long()
        timer.mark("batch")
        with autocast:
            logits = forward(window[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB).float(), window[:, 1:].reshape(-1))
        loss.backward()
        timer.mark("forward/backward")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # nanoGPT's grad_clip
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.mark("update")
        return loss.detach()

    return step


# -- measuring ----------------------------------------------------------------------------------------------------


def measure(torch, step, spec, device, steps, warmup):
    """(tokens/s without phase synchronisation, {phase: share of the step} with it)."""
    tokens = spec[3] * spec[4]
    free = Timer(torch, device, sync=False)
    free.start()
    for j in range(warmup):
        float(step(j, free))
    free.start()
    start = time.perf_counter()
    for j in range(warmup, warmup + steps):
        loss = step(j, free)
    float(loss)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    rate = steps * tokens / (time.perf_counter() - start)
    timed = Timer(torch, device, sync=True)
    timed.start()
    for j in range(warmup + steps, warmup + 2 * steps):
        step(j, timed)
    total = sum(timed.phases.values())
    return rate, {name: t / total for name, t in timed.phases.items()}


def rows_for(torch, spec, device, precision, compile_too, bridge_steps):
    rows = [("charrnn --engine torch", lambda: charrnn_stepper(torch, spec, device, precision, False), None),
            ("charrnn, bridge (numpy Adam)", lambda: charrnn_stepper(torch, spec, device, precision, True),
             bridge_steps),
            ("nanoGPT-style, AdamW fused, bfloat16", lambda: reference_stepper(torch, spec, device, False), None)]
    if compile_too:
        rows.append(("nanoGPT-style + torch.compile", lambda: reference_stepper(torch, spec, device, True), None))
    return rows


def best_of(results):
    """Best rate of ``results`` [(rate, shares)], its round's shares, and the rates' range."""
    rates = [r for r, _ in results]
    best = max(range(len(results)), key=lambda i: rates[i])
    return rates[best], results[best][1], f"{min(rates):,.0f}-{max(rates):,.0f}"


def side_by_side(args, torch):
    models = SMALL_MODELS if args.small else GPU_MODELS
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu --small)")
    compile_too = device == "cuda" or args.compile
    tables = []
    for name in args.models:
        spec = models[name]
        table = harness.Table([("run", "run"), ("tokens/s", "rate"), ("per round", "rounds"),
                               ("outside forward/backward", "outside"), ("phases", "phases"), ("ratio", "ratio")],
                              title=f"{describe(spec)}, --device {device}, charrnn --precision {args.precision}")
        rows = rows_for(torch, spec, device, args.precision, compile_too, max(2, args.steps // 5))
        results = {label: [] for label, _, _ in rows}
        for _ in range(args.repeat):
            for label, make, steps in rows:
                step = make()
                results[label].append(measure(torch, step, spec, device, steps or args.steps, args.warmup))
                del step
        peer = best_of(results[rows[2][0]])[0]  # the nanoGPT-style script without compile
        for label, _, _ in rows:
            rate, shares, rounds = best_of(results[label])
            table.add(run=label, rate=rate, rounds=rounds, outside=f"{1.0 - shares.get('forward/backward', 0.0):.1%}",
                      phases=", ".join(f"{part} {share:.1%}" for part, share in shares.items()), ratio=rate / peer)
        tables.append(table)
    return tables


def update_share(args, torch):
    """The share of a torch-engine step in the update, before (numpy) and after (device), on the CPU."""
    tables = []
    for name in args.models:
        spec = SHARE_MODELS[name]
        table = harness.Table([("update", "run"), ("share of the step", "share"), ("per round", "shares"),
                               ("chars/s", "rate"), ("chars/s per round", "rounds")],
                              title=f"{describe(spec)}, --device cpu, float32, {args.steps} steps x "
                                    f"{args.repeat} rounds")
        results = {"before": [], "after": []}
        for _ in range(args.repeat):
            for label, bridge in (("before", True), ("after", False)):
                step = charrnn_stepper(torch, spec, "cpu", "float32", bridge)
                results[label].append(measure(torch, step, spec, "cpu", args.steps, args.warmup))
        for label, what in (("before", "numpy Adam (gradient copied to numpy)"), ("after", "device Adam (torch)")):
            rate, shares, rounds = best_of(results[label])
            updates = [s["update"] for _, s in results[label]]
            table.add(run=what, share=f"{shares['update']:.1%}", shares=f"{min(updates):.1%}-{max(updates):.1%}",
                      rate=rate, rounds=rounds)
        tables.append(table)
    return tables


def main(argv=None):
    ap = harness.parser(__doc__, repeat=3)
    ap.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    ap.add_argument("--small", action="store_true", help="small models (a CPU run that proves the script works)")
    ap.add_argument("--models", nargs="+", default=["gpt", "lstm"], choices=("gpt", "lstm"))
    ap.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16", "float16"),
                    help="charrnn's --precision (the nanoGPT-style script is bfloat16)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per row and round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="the torch.compile row on a CPU too")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    ap.add_argument("--update-share", action="store_true", help="the CPU before/after update share instead")
    args = harness.start(ap, argv)
    if not harness.need_torch("the torch engine and its peer"):
        return
    if args.smoke:  # the small models on the CPU, one step
        args.device, args.small, args.steps, args.warmup, args.threads = "cpu", True, 1, 1, 1
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.update_share:
        args.device = "cpu"
        tables = update_share(args, torch)
    else:
        tables = side_by_side(args, torch)
    harness.finish(args, tables)


if __name__ == "__main__":
    main()
