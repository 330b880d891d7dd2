"""Training and sampling speed: charrnn against a PyTorch CPU script of the same model, side by side.

    python benchmarks/speed.py                      # the full table, about 10 minutes on 2 cores
    python benchmarks/speed.py --only train --repeat 2 --seconds 4

Every figure is measured in a fresh subprocess (so peak RSS is that run's own), charrnn and its peer
alternating, and each is the best of ``--repeat`` runs: the machine is shared and noisy, and the best
run is the least disturbed one. Ratios are charrnn / peer from the same run of this script. charrnn
trains as ``charrnn train`` does, on its default worker processes; its peak RSS is the sum of its
processes' peaks (the shared parameters count once per process), and ``--json`` also records their
proportional set size at the end of the run (shared pages counted once).

The children run without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which some machines here set to
force an old OpenBLAS kernel (the env notes say to unset both for benchmarks); PyTorch does not use
OpenBLAS, so this only gives numpy the kernel it would pick on a user's machine.

The peer (benchmarks/peers.py) feeds one-hot vectors into nn.LSTM / nn.GRU / nn.RNN(input_size=V),
as char-rnn does, with Adam and value clipping; charrnn runs the same model, batch, length and
optimizer. Without torch installed, the peers are skipped with a message.
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
from peers import TRAIN_CONFIGS  # noqa: E402  (cell, hidden, layers, batch, seq): the same configurations

SAMPLE_CONFIGS = [(128, 2), (512, 2)]
VOCAB = 65


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_field_mb(path, field):
    """A "Field:  N kB" line of a /proc file, in MB (0 where /proc is not there)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_peak_rss_mb(pid):
    """A process's peak resident memory (VmHWM): shared pages count in every process that maps them."""
    return _proc_field_mb(f"/proc/{pid}/status", "VmHWM")


def process_pss_mb(pid):
    """A process's proportional set size now: its own pages plus its share of pages it shares."""
    return _proc_field_mb(f"/proc/{pid}/smaps_rollup", "Pss")


def charrnn_train(cell, hidden, layers, batch, seq, seconds, optimizer="adam", dtype="float32"):
    """chars/s of charrnn's training step (forward, backward, clipped update) on tinyshakespeare ids,
    computed as ``charrnn train`` does: on its default number of worker processes."""
    import numpy as np
    from peers import _token_ids

    from charrnn.engines.pool import default_workers, make_engine
    from charrnn.io.corpus import StreamBatches
    from charrnn.nn.optim import make_optimizer
    from charrnn.rnn import CharRNN, ModelConfig

    baseline = peak_rss_mb()
    ids, _ = _token_ids(VOCAB, 2_000_000 if batch > 1 else 200_000)
    config = ModelConfig(VOCAB, cell, hidden, layers, dtype=dtype, dropout=0.0)
    model = CharRNN(config, rng=np.random.default_rng(0))
    lr = {"adam": 2e-3, "adagrad": 0.1}[optimizer]
    batches = StreamBatches(ids, batch, seq)
    state, chunk = None, 0
    with make_engine(model, batch, seq, default_workers(batch)) as engine:
        opt = make_optimizer(optimizer, model.params, lr, grad_clip=5.0)

        def step():
            nonlocal state, chunk
            inputs, targets = batches.chunk(chunk % batches.chunks_per_epoch)
            _, grads, state = engine.loss_and_grads(inputs, targets, state)
            opt.step(model.params, grads)
            chunk += 1
            return batch * seq

        chars_per_sec = timing.rate(step, seconds)
        worker_pids = [proc.pid for proc in getattr(engine, "procs", [])]
        workers_rss = sum(process_peak_rss_mb(pid) for pid in worker_pids)
        pss = sum(process_pss_mb(pid) for pid in [os.getpid(), *worker_pids])
    peak_rss = peak_rss_mb() + workers_rss
    params = sum(p.nbytes for p in model.params.values())
    opt_state = sum(v.nbytes for v in opt.state.values())
    return {
        "chars_per_sec": chars_per_sec,
        "peak_rss_mb": peak_rss,  # summed over the processes
        "pss_mb": pss,  # all processes' memory at the end of the run, shared pages counted once
        "workers": max(1, len(worker_pids)),
        "python_numpy_rss_mb": baseline,
        "params_mb": params / 2**20,
        "optimizer_mb": opt_state / 2**20,
        "activations_mb": _activation_bytes(config, batch, seq) / 2**20,
    }


def _activation_bytes(config, batch, seq):
    """What the layers keep for one (T, B) chunk, summed over the workers (buffers are allocated, not touched)."""
    import numpy as np

    from charrnn.rnn import CharRNN

    model = CharRNN(config, rng=np.random.default_rng(0))
    model._layer_buffers(seq, batch)
    return model.activation_bytes()


def products_floor(hidden, layers, seconds):
    """chars/s if sampling did nothing but the matrix-vector products one character needs, in float32:
    each layer's h @ W_hh (H x 4H), each upper layer's x @ W_xh, and the output layer. What no
    sampler on numpy's BLAS can beat."""
    import numpy as np

    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((hidden, 4 * hidden)).astype(np.float32) for _ in range(2 * layers - 1)]
    mats.append(rng.standard_normal((hidden, VOCAB)).astype(np.float32))
    x = rng.standard_normal((1, hidden)).astype(np.float32)
    outs = [np.empty((1, m.shape[1]), np.float32) for m in mats]
    total, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            for m, out in zip(mats, outs):
                np.matmul(x, m, out=out)
        total += 100
    return {"chars_per_sec": total / (time.perf_counter() - start), "peak_rss_mb": peak_rss_mb()}


def charrnn_sample(hidden, layers, seconds):
    """chars/s of charrnn's generate() at batch 1, temperature 1."""
    import numpy as np

    from charrnn.io.corpus import Vocab
    from charrnn.rnn import CharRNN, ModelConfig
    from charrnn.sample import generate

    vocab = Vocab(tuple(sorted(["\n", *(chr(32 + i) for i in range(VOCAB - 1))])))
    model = CharRNN(ModelConfig(VOCAB, "lstm", hidden, layers), rng=np.random.default_rng(0))
    length = 2000
    for _ in generate(model, vocab, length=200, random_seed=0):
        pass
    total, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in generate(model, vocab, length=length, random_seed=total):
            pass
        total += length
    return {"chars_per_sec": total / (time.perf_counter() - start), "peak_rss_mb": peak_rss_mb()}


def worker(args):
    kind, rest = args[0], args[1:]
    seconds = float(rest[-1])
    if kind == "charrnn-train":
        cell, h, l, b, t = rest[0], *map(int, rest[1:5])
        return charrnn_train(cell, h, l, b, t, seconds)
    if kind == "charrnn-seed":  # the min-char-rnn preset: float32, as users get it, or float64 like the seed
        return charrnn_train("rnn", 100, 1, 1, 25, seconds, optimizer="adagrad", dtype=rest[0])
    if kind == "charrnn-sample":
        return charrnn_sample(int(rest[0]), int(rest[1]), seconds)
    if kind == "products-floor":
        return products_floor(int(rest[0]), int(rest[1]), seconds)
    import peers

    if kind == "torch-train":
        cell, h, l, b, t = rest[0], *map(int, rest[1:5])
        return {"chars_per_sec": peers.torch_train_chars_per_sec(cell, h, l, b, t, seconds=seconds),
                "peak_rss_mb": peak_rss_mb()}
    if kind == "torch-sample":
        h, l, mode = int(rest[0]), int(rest[1]), rest[2]
        return {"chars_per_sec": peers.torch_sample_chars_per_sec(h, l, mode=mode, seconds=seconds),
                "peak_rss_mb": peak_rss_mb()}
    if kind == "numpy-seed":
        return {"chars_per_sec": peers.numpy_seed_chars_per_sec(100, 25, seconds=seconds),
                "peak_rss_mb": peak_rss_mb()}
    raise SystemExit(f"unknown worker {kind}")


def measure(kind, *args, seconds):
    env = machine.benchmark_env()
    out = subprocess.run([sys.executable, __file__, "--worker", kind, *map(str, args), str(seconds)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(repeat, kinds, seconds):
    """Alternate the measurements in ``kinds`` (name -> (kind, args)) ``repeat`` times (a round each).
    Returns each name's best result and its chars/s in every round."""
    best, rounds = {}, {name: [] for name in kinds}
    for _ in range(repeat):
        for name, (kind, args) in kinds.items():
            result = measure(kind, *args, seconds=seconds)
            rounds[name].append(result["chars_per_sec"])
            if name not in best or result["chars_per_sec"] > best[name]["chars_per_sec"]:
                best[name] = result
    return best, rounds


def round_ratios(rounds, ours, peer):
    """charrnn/peer within each round: the two ran minutes apart at most, so this shows the machine's noise."""
    return [a / b for a, b in zip(rounds[ours], rounds[peer])] if peer in rounds else None


def markdown_table(rows, described):
    lines = [f"Machine: {described}.", "",
             "| what | configuration | charrnn chars/s | peer chars/s | ratio | ratio per round | "
             "peak RSS charrnn / peer | peer |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        peer = f"{r['peer']:,.0f}" if r["peer"] else "–"
        ratio = f"**{r['ratio']:.2f}×**" if r["ratio"] else "–"
        spread = _spread(r["round_ratios"]) or "–"
        rss = f"{r['charrnn_peak_rss_mb']:.0f} / {r['peer_peak_rss_mb']:.0f} MB" if r["peer_peak_rss_mb"] else "–"
        lines.append(f"| {r['what']} | {r['config']} | {r['charrnn']:,.0f} | {peer} | {ratio} | {spread} | {rss} "
                     f"| {r['peer_name']} |")
    return "\n".join(lines)


def _spread(ratios):
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs of each figure")
    ap.add_argument("--only", choices=["train", "sample", "seed"], action="append")
    ap.add_argument("--match", metavar="TEXT", help="only the rows whose configuration contains TEXT, as "
                    "'lstm H=128'")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--markdown", action="store_true", help="also print the table in Markdown (docs/benchmarks.md)")
    args = ap.parse_args(argv)
    import peers

    described = machine.describe()
    print(described, flush=True)
    have_torch = peers.torch_available()
    if not have_torch:
        print("torch is not installed: PyTorch peers skipped (pip install torch==2.13.0)")
    only = set(args.only or ["train", "sample", "seed"])
    rows = []

    def wanted(config):
        return args.match is None or args.match in config

    def row(what, config, ours, peer, peer_name, ratios=None):
        ratio = ours["chars_per_sec"] / peer["chars_per_sec"] if peer else None
        r = {"what": what, "config": config, "charrnn": ours["chars_per_sec"],
             "peer": peer["chars_per_sec"] if peer else None, "peer_name": peer_name, "ratio": ratio,
             "round_ratios": ratios,
             "charrnn_peak_rss_mb": ours["peak_rss_mb"], "peer_peak_rss_mb": peer["peak_rss_mb"] if peer else None}
        for key in ("params_mb", "optimizer_mb", "activations_mb", "python_numpy_rss_mb", "pss_mb", "workers"):
            if key in ours:
                r[key] = ours[key]
        rows.append(r)
        peer_text = f"{r['peer']:>10,.0f}" if peer else f"{'-':>10}"
        ratio_text = f"{ratio:5.2f}x" if ratio else "    -"
        print(f"{what:<7}{config:<28}{r['charrnn']:>10,.0f}{peer_text}  {ratio_text}  {_spread(ratios):>9}  "
              f"{r['charrnn_peak_rss_mb']:>7.0f} MB  {peer_name}", flush=True)

    print(f"{'':<7}{'config':<28}{'charrnn':>10}{'peer':>10}  ratio  per round  charrnn RSS  peer")
    if "train" in only:
        for cell, h, l, b, t in TRAIN_CONFIGS:
            config = f"{cell} H={h} L={l} B={b} T={t}"
            if not wanted(config):
                continue
            kinds = {"ours": ("charrnn-train", (cell, h, l, b, t))}
            if have_torch:
                kinds["peer"] = ("torch-train", (cell, h, l, b, t))
            best, rounds = best_of(args.repeat, kinds, args.seconds)
            row("train", config, best["ours"], best.get("peer"), f"torch nn.{cell.upper()}, one-hot, Adam",
                round_ratios(rounds, "ours", "peer"))
    if "seed" in only and wanted("seed"):
        kinds = {
            "f32": ("charrnn-seed", ("float32",)),
            "f64": ("charrnn-seed", ("float64",)),
            "peer": ("numpy-seed", ()),
        }
        best, rounds = best_of(args.repeat, kinds, args.seconds)
        peer_name = "plain numpy min-char-rnn style, f64"
        row("train", "seed: rnn H=100 T=25 B=1", best["f32"], best["peer"], peer_name + " (ours: preset, f32)",
            round_ratios(rounds, "f32", "peer"))
        row("train", "seed, float64 both", best["f64"], best["peer"], peer_name, round_ratios(rounds, "f64", "peer"))
    if "sample" in only:
        for h, l in SAMPLE_CONFIGS:
            if not wanted(f"lstm H={h} L={l} B=1"):
                continue
            kinds = {"ours": ("charrnn-sample", (h, l)), "floor": ("products-floor", (h, l))}
            if have_torch:
                kinds["lstm"] = ("torch-sample", (h, l, "lstm"))
                kinds["lstmcell"] = ("torch-sample", (h, l, "lstmcell"))
            best, rounds = best_of(args.repeat, kinds, args.seconds)
            peer_name = max(("lstm", "lstmcell"), key=lambda k: best[k]["chars_per_sec"]) if have_torch else None
            if have_torch:  # per round, against that round's faster peer
                rounds["peer"] = [max(a, b) for a, b in zip(rounds["lstm"], rounds["lstmcell"])]
            row("sample", f"lstm H={h} L={l} B=1", best["ours"], best.get(peer_name),
                f"torch nn.{'LSTMCell' if peer_name == 'lstmcell' else 'LSTM'} loop (the faster)" if peer_name else "-",
                round_ratios(rounds, "ours", "peer"))
            row("bound", f"lstm H={h} L={l}: products alone", best["floor"], best.get(peer_name),
                "numpy's matrix-vector products of one character, nothing else", round_ratios(rounds, "floor", "peer"))
    if args.markdown:
        print(markdown_table(rows, described))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": described, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2:])))
    else:
        main()
