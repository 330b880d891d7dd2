"""--model gpt against a PyTorch nanoGPT-style model of the same shape (benchmarks/gpt_peer.py), side by side.

    flock /work/signals/bench.lock python benchmarks/gpt.py                 # training and sampling tables
    python benchmarks/gpt.py --only train --rounds 2 --seconds 10
    python benchmarks/gpt.py --where-sampling nanogpt-cpu                  # a sampled character's time, by part

Training: characters/s of a full step (forward, backward, clipped AdamW update) on tinyshakespeare ids
(random ids where the corpus is absent) at nanoGPT's shakespeare_char CPU set-up and a mid set-up;
charrnn computes its steps as ``charrnn train`` does, on its default worker processes; PyTorch on its
default threads. Sampling: 1,000 characters at batch 1 after a one-character seed, charrnn's
``generate`` (key/value cache) against nanoGPT's cache-less ``generate`` and a PyTorch loop with a
preallocated key/value cache. Every figure comes from a fresh subprocess (peak RSS is that run's own,
summed over charrnn's worker processes), charrnn and its peers alternating, ``--rounds`` rounds; the
table shows the best round of each and the ratio of the bests, with the per-round ratios' range. The
children run without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (see benchmarks/speed.py).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import machine  # noqa: E402
import timing  # noqa: E402

# the corpus beside the repository (../shared/data), or beside a worktree's parent (../../shared/data)
CORPUS = next((p for p in (os.path.join(HERE, *up, "shared", "data", "tinyshakespeare.txt")
                           for up in ((os.pardir, os.pardir), (os.pardir, os.pardir, os.pardir)))
               if os.path.exists(p)), "tinyshakespeare.txt")

SETUPS = {  # name: (layers, heads, width, context, batch)
    "nanogpt-cpu": (4, 4, 128, 64, 12),
    "mid": (6, 6, 192, 128, 32),
}
SAMPLE_LENGTH = 1000


def _peak_rss_mb(pids=()):
    """Peak resident memory of this process and ``pids`` (VmHWM, summed), in MB. Not ru_maxrss: a child keeps
    the peak of the process it was forked from (the parent here has torch loaded) across its exec."""
    total = 0.0
    for pid in ("self", *pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        except (OSError, StopIteration):
            if pid == "self":
                total += resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return total


def _ids(vocab, n):
    import numpy as np

    if os.path.exists(CORPUS):
        with open(CORPUS, encoding="utf-8") as f:
            text = f.read()
        chars = sorted(set(text))
        lookup = {c: i for i, c in enumerate(chars)}
        return np.array([lookup[c] for c in text[:n]], dtype=np.int64), len(chars)
    return np.random.default_rng(0).integers(0, vocab, n), vocab


def charrnn_train(setup, seconds):
    import numpy as np

    from charrnn.engines.pool import default_workers, make_engine
    from charrnn.gpt import CharGPT, GPTConfig
    from charrnn.io.corpus import StreamBatches
    from charrnn.nn.optim import make_optimizer

    layers, heads, width, context, batch = SETUPS[setup]
    ids, vocab = _ids(65, 400_000)
    model = CharGPT(GPTConfig(vocab, hidden_size=width, num_layers=layers, num_heads=heads, context_length=context),
                    rng=np.random.default_rng(0))
    batches = StreamBatches(ids, batch, context)
    workers = default_workers(batch, min_streams=model.min_streams_per_worker)
    with make_engine(model, batch, context, workers) as engine:
        opt = make_optimizer("adam", model.params, 1e-3, grad_clip=1.0, weight_decay=0.1)
        chunk = 0

        def step():
            nonlocal chunk
            inputs, targets = batches.chunk(chunk % batches.chunks_per_epoch)
            _, grads, _ = engine.loss_and_grads(inputs, targets)
            opt.step(model.params, grads)
            chunk += 1
            return batch * context

        chars_per_sec = timing.rate(step, seconds)
        pids = [proc.pid for proc in getattr(engine, "procs", [])]
        rss = _peak_rss_mb(pids)
    return {"chars_per_sec": chars_per_sec, "peak_rss_mb": rss, "workers": engine.workers}


def torch_train(setup, seconds, threads=None):
    import gpt_peer
    import torch

    if threads:
        torch.set_num_threads(threads)

    layers, heads, width, context, batch = SETUPS[setup]
    ids, vocab = _ids(65, 400_000)
    torch.manual_seed(0)
    model = gpt_peer.build(vocab, width, layers, heads, context)
    opt = gpt_peer.optimizer(model, 1e-3)
    data = torch.tensor(ids)
    gen = torch.Generator().manual_seed(0)

    def step():
        starts = torch.randint(len(data) - context - 1, (batch,), generator=gen)
        x = torch.stack([data[i : i + context] for i in starts])
        y = torch.stack([data[i + 1 : i + 1 + context] for i in starts])
        gpt_peer.train_step(model, opt, x, y)
        return batch * context

    return {"chars_per_sec": timing.rate(step, seconds), "peak_rss_mb": _peak_rss_mb(),
            "threads": torch.get_num_threads()}


def charrnn_sample(setup, seconds):
    import numpy as np

    from charrnn.gpt import CharGPT, GPTConfig

    layers, heads, width, context, _ = SETUPS[setup]
    model = CharGPT(GPTConfig(65, hidden_size=width, num_layers=layers, num_heads=heads, context_length=context),
                    rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)

    def sample():
        sampler, logits = model.start_sampling(np.array([0]))
        gumbel = rng.gumbel(size=(SAMPLE_LENGTH, 65))
        for i in range(SAMPLE_LENGTH):  # generate()'s loop: Gumbel-max picking at temperature 1
            idx = int((logits + gumbel[i]).argmax())
            logits = sampler.step(idx)
        return SAMPLE_LENGTH

    return {"chars_per_sec": timing.best_rate(sample, seconds, warmup=0), "peak_rss_mb": _peak_rss_mb()}


def torch_sample(setup, seconds, cached, threads=None):
    import gpt_peer
    import torch

    if threads:
        torch.set_num_threads(threads)

    layers, heads, width, context, _ = SETUPS[setup]
    torch.manual_seed(0)
    model = gpt_peer.build(65, width, layers, heads, context).eval()
    generate = gpt_peer.generate_kv_cache if cached else gpt_peer.generate_no_cache

    def sample():
        generate(model, torch.zeros((1, 1), dtype=torch.long), SAMPLE_LENGTH, context)
        return SAMPLE_LENGTH

    return {"chars_per_sec": timing.best_rate(sample, seconds, warmup=0), "peak_rss_mb": _peak_rss_mb(),
            "threads": torch.get_num_threads()}


def where_time_goes(setup, steps=5):
    """Per-layer-function time of one worker's share of a training step (half the batch, one process, one
    BLAS thread as a worker runs), by wrapping the functions of charrnn/attention.py with timers."""
    import collections

    import numpy as np

    from charrnn.gpt import CharGPT, GPTConfig
    from charrnn.nn import attention

    spent = collections.Counter()

    def timer(name, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            spent[name] += time.perf_counter() - start
            return result

        return timed

    for name in ("layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward", "linear_forward",
                 "linear_backward", "attention_forward", "attention_backward", "embedding_forward",
                 "embedding_backward"):
        setattr(attention, name, timer(name, getattr(attention, name)))
    layers, heads, width, context, batch = SETUPS[setup]
    model = CharGPT(GPTConfig(65, hidden_size=width, num_layers=layers, num_heads=heads, context_length=context),
                    rng=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 65, (context + 1, batch // 2))
    model.loss_and_grads(ids[:-1], ids[1:])
    spent.clear()
    start = time.perf_counter()
    for _ in range(steps):
        model.loss_and_grads(ids[:-1], ids[1:])
    total = (time.perf_counter() - start) / steps
    print(f"{setup}, a worker's share (B={batch // 2}, T={context}): {total * 1e3:.0f} ms a step, "
          f"{batch // 2 * context / total:,.0f} chars/s")
    for name, seconds in spent.most_common():
        print(f"  {name:<20} {seconds / steps * 1e3:7.1f} ms  {seconds / steps / total:5.1%}")
    print("  (attention_* include their two linear layers; linear_* are the MLP's)")


def where_sampling_goes(setup, chars=2000):
    """A sampled character's time at batch 1: the median plain step, the median slide (the window's
    recompute) and its share, and the four products of each block and the output layer alone."""
    import timeit

    import numpy as np

    from charrnn.blas import blas_threads
    from charrnn.gpt import CharGPT, GPTConfig, KVSampler

    layers, heads, width, context, _ = SETUPS[setup]
    model = CharGPT(GPTConfig(65, hidden_size=width, num_layers=layers, num_heads=heads, context_length=context),
                    rng=np.random.default_rng(0))
    sampler = KVSampler(model)
    ids = np.random.default_rng(0).integers(0, 65, chars + 1)
    sampler.prime(ids[None, :1])
    plain, slides = [], []
    for i in range(1, chars + 1):
        slide = sampler.n == sampler.P
        start = time.perf_counter()
        sampler.step(ids[i : i + 1])
        (slides if slide else plain).append(time.perf_counter() - start)
    total = sum(plain) + sum(slides)
    normed, heads, hidden = sampler.normed, sampler.heads, sampler.hidden

    def products():
        for w in sampler.blocks:
            np.dot(normed, w.W_qkv)
            np.dot(heads, w.W_proj)
            np.dot(normed, w.W_fc, out=sampler.fc_out)
            np.dot(hidden, w.W_mlp)
        np.dot(normed, sampler.W_out)

    with blas_threads(1):
        alone = min(timeit.repeat(products, number=2000, repeat=5)) / 2000
    print(f"{setup}: {chars / total:,.0f} chars/s; plain step median {np.median(plain) * 1e6:.0f} us, of which the "
          f"products alone {alone * 1e6:.0f} us; the window's recompute median {np.median(slides) * 1e6:.0f} us every "
          f"{context - context // 2} characters, {sum(slides) / total:.0%} of the time")


RUNNERS = {
    "charrnn-train": charrnn_train,
    "torch-train": torch_train,
    "torch-train-1thread": lambda setup, seconds: torch_train(setup, seconds, threads=1),
    "charrnn-sample": charrnn_sample,
    "torch-sample-nocache": lambda setup, seconds: torch_sample(setup, seconds, cached=False),
    "torch-sample-kvcache": lambda setup, seconds: torch_sample(setup, seconds, cached=True),
    "torch-sample-kvcache-1thread": lambda setup, seconds: torch_sample(setup, seconds, cached=True, threads=1),
}


def child(kind, setup, seconds):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, __file__, "--child", kind, setup, str(seconds)], check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows, kinds, rounds, setups, seconds):
    results = {}
    for setup in setups:
        per_round = {kind: [] for kind in kinds}
        for r in range(rounds):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                per_round[kind].append(child(kind, setup, seconds))
        results[setup] = per_round
        ours = per_round[kinds[0]]
        best_ours = max(x["chars_per_sec"] for x in ours)
        for peer in kinds[1:]:
            theirs = per_round[peer]
            best_theirs = max(x["chars_per_sec"] for x in theirs)
            ratios = [a["chars_per_sec"] / b["chars_per_sec"] for a, b in zip(ours, theirs)]
            rows.append(
                f"| {setup} | {peer} | {best_ours:,.0f} | {best_theirs:,.0f} | {best_ours / best_theirs:.2f}x | "
                f"{min(ratios):.2f}-{max(ratios):.2f} | {min(x['peak_rss_mb'] for x in ours):.0f} | "
                f"{min(x['peak_rss_mb'] for x in theirs):.0f} |"
            )
            print(rows[-1], flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("train", "sample"))
    ap.add_argument("--setups", default=",".join(SETUPS), help="comma-separated: " + ", ".join(SETUPS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="per training measurement [default: 10]")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--memory", action="store_true", help="peak memory only: one short run of each, in turn")
    ap.add_argument("--where", metavar="SETUP", help="per-layer time of a worker's share instead (run with "
                    "OPENBLAS_NUM_THREADS=1)")
    ap.add_argument("--where-sampling", metavar="SETUP", help="where a sampled character's time goes instead")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SETUP", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, setup, seconds = args.child
        print(json.dumps(RUNNERS[kind](setup, float(seconds))))
        return
    if args.memory:
        print(machine.describe())
        print("| set-up | run | peak RSS MB |\n|---|---|---:|")
        for setup in args.setups.split(","):
            for kind in RUNNERS:
                print(f"| {setup} | {kind} | {child(kind, setup, 1.0)['peak_rss_mb']:.0f} |", flush=True)
        return
    if args.where:
        print(machine.describe())
        where_time_goes(args.where)
        return
    if args.where_sampling:
        print(machine.describe())
        where_sampling_goes(args.where_sampling)
        return
    sys.path.insert(0, HERE)
    import peers

    print(machine.describe())
    if not peers.torch_available():
        sys.exit("torch is not installed: the peers need it (pip install torch)")
    import torch

    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {now}")
    setups = args.setups.split(",")
    header = ("| set-up | peer | charrnn chars/s | peer chars/s | ratio | per-round ratios | charrnn peak RSS MB | "
              "peer peak RSS MB |")
    results = {}
    if args.only in (None, "train"):
        print("\ntraining (best of rounds):\n" + header + "\n|---|---|---|---|---|---|---|---|")
        rows = []
        results["train"] = table(rows, ["charrnn-train", "torch-train", "torch-train-1thread"], args.rounds, setups,
                                 args.seconds)
    if args.only in (None, "sample"):
        print(f"\nsampling {SAMPLE_LENGTH} characters at batch 1 (best of rounds):\n" + header
              + "\n|---|---|---|---|---|---|---|---|")
        rows = []
        kinds = ["charrnn-sample", "torch-sample-nocache", "torch-sample-kvcache", "torch-sample-kvcache-1thread"]
        results["sample"] = table(rows, kinds, args.rounds, setups, 2.0)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
