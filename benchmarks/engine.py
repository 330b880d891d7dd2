"""engine: training speed of `--engine torch` beside the numpy engine, and data-parallel scaling under torchrun.

    python -m benchmarks engine --markdown                 # CPU: LSTM 512x2, torch vs numpy; 1 -> 2 processes
    python -m benchmarks engine --model gpt --markdown     # the gpt mid set-up (nanoGPT's on a GPU)
    python -m benchmarks engine --device cuda --markdown   # GPU: LSTM 1024x3 B=128 T=100 (a machine with CUDA)

chars/s of training steps as `charrnn train` takes them (the engine's forward and backward, then charrnn's Adam
update in numpy) on tinyshakespeare ids, float32, no dropout, --steps timed steps after 2 warm-up steps, each run
in fresh processes. The first row: --engine torch (PyTorch's default threads) against the numpy engine as `charrnn
train` runs it (its default worker processes). The second: `python -m torch.distributed.run --standalone` with
2 processes (gloo on a CPU, NCCL on GPUs), each on its share of the B streams with one thread, against one process
with one thread. The last column is the share of the run's time spent in charrnn's numpy optimizer.
"""

import time

import numpy as np

from benchmarks import harness

CPU_MODELS = {"lstm": ("lstm", 512, 2, 32, 100, 0), "gpt": ("gpt", 192, 6, 32, 128, 6)}  # cell, H, L, B, T, heads
GPU_MODELS = {"lstm": ("lstm", 1024, 3, 128, 100, 0), "gpt": ("gpt", 384, 6, 64, 256, 6)}
SMOKE_MODEL = ("lstm", 16, 1, 4, 8, 0)
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]


def train_steps(engine, device, spec, steps, threads=None):
    """Time ``steps`` steps in this process (or in each of torchrun's); process 0 reports."""
    from charrnn import CharGPT, CharRNN, GPTConfig, ModelConfig
    from charrnn.engines.pool import default_workers, make_engine
    from charrnn.io.corpus import StreamBatches
    from charrnn.nn.optim import make_optimizer

    cell, hidden, layers, batch, seq, heads = spec
    if cell == "gpt":
        config = GPTConfig(65, hidden_size=hidden, num_layers=layers, num_heads=heads, context_length=seq)
        model = CharGPT(config, rng=np.random.default_rng(0))
    else:
        model = CharRNN(ModelConfig(65, cell, hidden, layers, dropout=0.0), rng=np.random.default_rng(0))
    batches = StreamBatches(harness.token_ids(2_000_000)[0], batch, seq)
    optimizer = make_optimizer("adam", model.params, 2e-3, 5.0, 0.1)
    distributed = None
    if engine == "torch":
        from charrnn.engines.distributed import Distributed
        from charrnn.engines.torch_engine import TorchEngine

        distributed = Distributed.from_environment(device)
        runner = TorchEngine(model, device, distributed)
    else:
        runner = make_engine(model, batch, seq, default_workers(batch))
    rng, state, in_optimizer = np.random.default_rng(1), None, 0.0
    with runner:
        for j in range(steps + 2):
            if j == 2:
                if distributed is not None:
                    distributed.barrier()
                start, in_optimizer = time.perf_counter(), 0.0
            inputs, targets = batches.chunk(j)
            _, grads, state = runner.loss_and_grads(inputs, targets, state, dropout_rng=rng)
            tick = time.perf_counter()
            optimizer.step(model.params, grads)
            in_optimizer += time.perf_counter() - tick
        elapsed = time.perf_counter() - start
    if distributed is not None:
        distributed.close()
        if not distributed.writer:
            return None
    return {"chars_per_sec": steps * batch * seq / elapsed, "optimizer_share": in_optimizer / elapsed}


def describe(run):
    engine, device, processes, threads = run
    if engine == "numpy":
        return "numpy engine (default worker processes)"
    text = f"torch --device {device}"
    if processes > 1:
        text += f", {processes} processes (torchrun, {'NCCL' if device == 'cuda' else 'gloo'})"
    each = " each" if processes > 1 else ""
    return text + (f", {threads} thread{'s' if threads > 1 else ''}{each}" if threads else "")


def main(argv):
    ap = harness.parser(__doc__, repeat=3)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model", choices=("lstm", "gpt"), default="lstm")
    ap.add_argument("--steps", type=int, help="timed steps per run [default: 8 on a CPU, 30 on a GPU]")
    args = harness.start(ap, argv)
    if not harness.need_torch("the engine suite (--engine torch needs it)"):
        return 0
    numpy_run = ("numpy", "cpu", 1, None)
    if args.device == "cpu":
        spec, steps = CPU_MODELS[args.model], args.steps or 8
        plan = [(numpy_run, ("torch", "cpu", 1, None)), (("torch", "cpu", 1, 1), ("torch", "cpu", 2, 1))]
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: PyTorch sees no CUDA GPU here")
        spec, steps = GPU_MODELS[args.model], args.steps or 30
        plan = [(numpy_run, ("torch", "cuda", 1, None))]
        if torch.cuda.device_count() > 1:
            n = torch.cuda.device_count()
            plan.append((("torch", "cuda", 1, None), ("torch", "cuda", n, None)))
    if args.smoke:  # torchrun cannot run in this process
        spec, steps, plan = SMOKE_MODEL, 1, plan[:1]
    cell, hidden, layers, batch, seq, heads = spec
    label = (f"gpt C={hidden} L={layers} heads={heads} B={batch} context={seq}" if cell == "gpt" else
             f"{cell} H={hidden} L={layers} B={batch} T={seq}")
    table = harness.Table([("configuration", "config"), ("run", "run"), ("chars/s", "ours"), ("peer", "peer_name"),
                           ("peer chars/s", "peer"), ("ratio", "ratio"), ("per round", "per_round"),
                           ("run's time in the optimizer", "share")])
    for peer, run in plan:
        contenders = {}
        for name, (engine, device, processes, threads) in (("peer", peer), ("ours", run)):
            # the numpy engine's steps at GPU sizes take seconds each: time fewer of them
            n = max(2, steps // 10) if engine == "numpy" and args.device == "cuda" else steps
            kw = {"engine": engine, "device": device, "spec": spec, "steps": n, "threads": threads}
            contenders[name] = (train_steps, {**kw, **({"launcher": [*TORCHRUN, str(processes), "-m"]}
                                                       if processes > 1 else {})})
        results = harness.alternate(contenders, args.repeat)
        best = max(results["ours"], key=lambda r: r["chars_per_sec"])
        table.add(harness.ratio_row(results, "ours", "peer"), config=label, run=describe(run),
                  peer_name=describe(peer), share=f"{best['optimizer_share']:.0%}")
    harness.finish(args, [table])
