"""Training speed of ``--engine torch`` beside the numpy engine, and data-parallel scaling under torchrun.

    python benchmarks/torch_engine.py                    # CPU rows: LSTM 512x2, torch vs numpy; 1 -> 2 processes
    python benchmarks/torch_engine.py --device cuda      # GPU rows: LSTM 1024x3 B=128 T=100 (a machine with CUDA)
    python benchmarks/torch_engine.py --model gpt        # gpt rows: the mid set-up on a CPU, nanoGPT's on a GPU
    python benchmarks/torch_engine.py --markdown --repeat 5

Every figure is chars/s of training steps as ``charrnn train`` takes them (the engine's forward and
backward, then charrnn's Adam update in numpy) on tinyshakespeare ids (random ids where the corpus is
not at ../shared/data), measured in a fresh process after two warm-up steps. Rows alternate within a
round; each figure is the best of ``--repeat`` rounds, and the ratio per round shows the machine's
noise. Data-parallel rows run under ``python -m torch.distributed.run --standalone`` (gloo on CPU,
NCCL on GPU), each process with its contiguous share of the B streams; process 0 reports.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import machine  # noqa: E402

TINYSHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
VOCAB = 65

CPU_RUNS = [  # (peer run, run); a run: engine, device, processes, threads
    (("numpy", "cpu", 1, None), ("torch", "cpu", 1, None)),
    (("torch", "cpu", 1, 1), ("torch", "cpu", 2, 1)),
]
# a model: (cell, width, layers, batch, T = context for gpt, heads for gpt)
CPU_MODELS = {"lstm": ("lstm", 512, 2, 32, 100, 0), "gpt": ("gpt", 192, 6, 32, 128, 6)}  # gpt: the mid set-up
GPU_MODELS = {"lstm": ("lstm", 1024, 3, 128, 100, 0), "gpt": ("gpt", 384, 6, 64, 256, 6)}  # gpt: --preset nanogpt


def machine_header():
    """The machine (benchmarks/machine.py), then the GPU PyTorch sees."""
    lines = [machine.describe()]
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        lines.append(f"CUDA GPU: {gpu} ({torch.cuda.device_count()} visible)")
    except ImportError:
        pass
    return "\n".join(lines)


def token_ids(n):
    import numpy as np

    if os.path.exists(TINYSHAKESPEARE):
        with open(TINYSHAKESPEARE, encoding="utf-8") as f:
            text = f.read()
        chars = sorted(set(text))
        if len(chars) == VOCAB:
            lookup = {c: i for i, c in enumerate(chars)}
            return np.fromiter((lookup[c] for c in text), np.int64, len(text))
    return np.random.default_rng(0).integers(0, VOCAB, n)


def child(engine_name, device, model_spec, steps):
    """Time ``steps`` training steps in this process (or in each of torchrun's); print chars/s from process 0."""
    import numpy as np

    sys.path.insert(0, ROOT)
    from charrnn.engines.pool import default_workers, make_engine
    from charrnn.engines.torch_engine import Distributed, TorchEngine
    from charrnn.gpt import CharGPT, GPTConfig
    from charrnn.io.corpus import StreamBatches
    from charrnn.nn.optim import make_optimizer
    from charrnn.rnn import CharRNN, ModelConfig

    cell, hidden, layers, batch, seq, heads = model_spec
    if cell == "gpt":
        config = GPTConfig(VOCAB, hidden_size=hidden, num_layers=layers, num_heads=heads, context_length=seq)
        model = CharGPT(config, rng=np.random.default_rng(0))
    else:
        model = CharRNN(ModelConfig(VOCAB, cell, hidden, layers, dropout=0.0), rng=np.random.default_rng(0))
    batches = StreamBatches(token_ids(2_000_000), batch, seq)
    optimizer = make_optimizer("adam", model.params, 2e-3, 5.0, 0.1)
    distributed = Distributed.from_environment(device) if engine_name == "torch" else None
    if engine_name == "torch":
        engine = TorchEngine(model, device, distributed)
    else:
        engine = make_engine(model, batch, seq, default_workers(batch))
    rng, state, in_optimizer = np.random.default_rng(1), None, 0.0
    with engine:
        for j in range(steps + 2):
            if j == 2:
                if distributed is not None:
                    distributed.barrier()
                start, in_optimizer = time.perf_counter(), 0.0
            inputs, targets = batches.chunk(j)
            loss, grads, state = engine.loss_and_grads(inputs, targets, state, dropout_rng=rng)
            tick = time.perf_counter()
            optimizer.step(model.params, grads)
            in_optimizer += time.perf_counter() - tick
        elapsed = time.perf_counter() - start
    if distributed is not None:
        distributed.close()
    if distributed is None or distributed.writer:
        print(json.dumps({"chars_per_sec": steps * batch * seq / elapsed, "optimizer_share": in_optimizer / elapsed}))


def measure(run, model_spec, steps):
    """(chars/s, share of the time in charrnn's numpy optimizer) of one run in fresh processes: (engine, device,
    processes, torch threads or None)."""
    engine, device, processes, threads = run
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    args = [__file__, "--child", engine, device, json.dumps(model_spec), str(steps)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *args]
    else:
        cmd = [sys.executable, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["chars_per_sec"], report["optimizer_share"]


def describe_model(spec):
    cell, hidden, layers, batch, seq, heads = spec
    if cell == "gpt":
        return f"gpt C={hidden} L={layers} heads={heads} B={batch} context={seq}"
    return f"{cell} H={hidden} L={layers} B={batch} T={seq}"


def describe(run):
    engine, device, processes, threads = run
    if engine == "numpy":
        return "numpy engine (default worker processes)"
    where = f"torch --device {device}"
    if processes > 1:
        where += f", {processes} processes (torchrun, {'NCCL' if device == 'cuda' else 'gloo'})"
    each = " each" if processes > 1 else ""
    return where + (f", {threads} thread{'s' if threads > 1 else ''}{each}" if threads else "")


def compare(label, peer_run, run, model_spec, steps, repeat, peer_steps=None):
    """Alternate the two runs ``repeat`` times; return the table row (best of each, ratio, per-round range, and
    the run's share of time in the numpy optimizer in its best round)."""
    peers, ours = [], []
    for _ in range(repeat):
        peers.append(measure(peer_run, model_spec, peer_steps or steps))
        ours.append(measure(run, model_spec, steps))
    ratios = [o[0] / p[0] for o, p in zip(ours, peers)]
    best, best_peer = max(ours), max(peers)
    return (label, describe(run), describe(peer_run), best[0], best_peer[0], best[0] / best_peer[0],
            f"{min(ratios):.2f}-{max(ratios):.2f}", best[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", choices=("lstm", "gpt"), default="lstm")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run [default: 8 cpu, 30 cuda]")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "DEVICE", "MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, device, spec, steps = args.child
        child(engine, device, tuple(json.loads(spec)), int(steps))
        return
    print(machine_header(), flush=True)
    if args.device == "cpu":
        spec, steps = CPU_MODELS[args.model], args.steps or 8
        label = describe_model(spec)
        plan = [(label, peer, run) for peer, run in CPU_RUNS]
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: PyTorch sees no CUDA GPU here")
        spec, steps = GPU_MODELS[args.model], args.steps or 30
        label = describe_model(spec)
        plan = [(label, ("numpy", "cpu", 1, None), ("torch", "cuda", 1, None))]
        if torch.cuda.device_count() > 1:
            n = torch.cuda.device_count()
            plan.append((label, ("torch", "cuda", 1, None), ("torch", "cuda", n, None)))
    rows = []
    for label, peer, run in plan:
        # on a GPU machine the numpy engine's steps at 1024x3 take seconds each: time fewer of them
        peer_steps = max(2, steps // 10) if peer[0] == "numpy" and args.device == "cuda" else steps
        rows.append(compare(label, peer, run, spec, steps, args.repeat, peer_steps))
        label, ours, peer, o, p, ratio, rounds, share = rows[-1]
        print(f"{label}: {ours} {o:,.0f} chars/s vs {peer} {p:,.0f}: {ratio:.2f}x (rounds {rounds}); "
              f"numpy optimizer {share:.0%} of the run's step", flush=True)
    if args.markdown:
        print("\n| configuration | run | chars/s | peer | peer chars/s | ratio | ratio per round "
              "| run's time in the optimizer |")
        print("|---|---|---:|---|---:|---:|---:|---:|")
        for label, ours, peer, o, p, ratio, rounds, share in rows:
            print(f"| {label} | {ours} | {o:,.0f} | {peer} | {p:,.0f} | **{ratio:.2f}×** | {rounds} | {share:.0%} |")


if __name__ == "__main__":
    main()
