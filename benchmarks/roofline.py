"""roofline: each row as a fraction of this CPU's float32 matrix-product peak, measured through the commands.

    python -m benchmarks roofline --markdown                  # the five rows, 3 rounds: about 12 minutes on 2 cores
    python -m benchmarks roofline --only train-default --repeat 5
    python -m benchmarks roofline --corpus-dir DIR            # where the Tang poems are fetched and built

peak: numpy's float32 product of square matrices (n = 2048, 3072, 4096), the fastest of several, in a fresh
process with numpy's default threads; measured in every round, the best of all rounds taken.
FLOPs a character (docs/benchmarks.md, "Against the machine's peak"): a recurrent model's forward pass is 2 x
(L H G + (L - 1) H G + H V) with G the gate width (H, 3H, 4H): the recurrent products, the upper layers' input
products and the output product; the first layer's input is a row lookup. Training is 3 x forward.
Each row runs as a user runs it, in a subprocess:
  train-lstm     charrnn train tinyshakespeare --model lstm --batch-size 64 (LSTM 512x2, B=64, T=100)
  train-default  charrnn train tinyshakespeare (the default recipe: GRU 512x2, B=32, T=100)
  train-poems    charrnn train on the Tang poems (the default recipe; a vocabulary of 9,572 characters)
  train-poems-sparse   the same with --sparse-embedding
  eval-poems     charrnn eval --json of the held-out poems with the train-poems checkpoint
  sample-64      charrnn sample --num-samples 64 with the train-lstm checkpoint
A training row's chars/s is the median of its metrics.jsonl chars_per_sec (--steps steps, no validation until
the last); eval's is what --json reports; sampling's is 64 (L - 1) characters over the wall time of --length L
less that of --length 1 (the process's start and the checkpoint's load taken out). "products alone": the row's
matrix products and nothing else, at its shapes and batch, on the processes and threads charrnn runs them on:
what no implementation on numpy's BLAS can pass.
The Tang poems: the npm package chinese-poetry@2.0.1 (MIT), fetched once with `npm pack` into --corpus-dir
(default ~/.cache/charrnn-bench); its 57,607 Tang poems, each a title line then its lines, a blank line between
poems; the poems after the last 128,000 characters' first poem boundary are held out for eval.
"""

import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

from benchmarks import harness

POETRY = "chinese-poetry@2.0.1"
HELD_OUT = 128_000  # characters of poems held out for eval (from the first poem boundary after len - HELD_OUT)
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
LSTM = ["--model", "lstm", "--batch-size", "64"]
ROWS = ("train-lstm", "train-default", "train-poems", "train-poems-sparse", "eval-poems", "sample-64")
SMOKE_MODEL = ["--hidden-size", "16", "--batch-size", "4", "--seq-length", "8"]


# ---- FLOPs a character


def rnn_flops(cell, hidden, layers, vocab, training=False):
    """FLOPs a character of a recurrent model: 2 x (recurrent + upper layers' input + output products) forward,
    3 x that in training."""
    H, G = hidden, GATES[cell] * hidden
    forward = 2 * (layers * H * G + (layers - 1) * H * G + H * vocab)
    return 3 * forward if training else forward


def gpt_flops(width, layers, context, vocab, training=False):
    """FLOPs a character of gpt: 2 x (12 L C^2 + C V) for the products with weights (qkv, projection, the MLP's
    two, the output), and 4 L T C for attention's scores and weighted sum over a window of T (counted whole, the
    masked half included, as the products compute it). Training is 3 x forward."""
    C = width
    forward = 2 * (12 * layers * C * C + C * vocab) + 4 * layers * context * C
    return 3 * forward if training else forward


# ---- the machine's peak


def gemm_peak(sizes=(2048, 3072, 4096), repeat=4):
    """The fastest float32 square product's FLOP/s, in this process (numpy's default threads)."""
    rng, best = np.random.default_rng(0), 0.0
    for n in sizes:
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        out = np.empty((n, n), np.float32)
        np.matmul(a, b, out=out)
        for _ in range(repeat):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return {"flops": best}


# ---- the Tang poems


def poems(corpus_dir):
    """(training text, held-out text): paths of the Tang poems built in ``corpus_dir``, fetched and built the
    first time (npm pack)."""
    train, held = (os.path.join(corpus_dir, name) for name in ("tang-poems.txt", "tang-poems-heldout.txt"))
    if os.path.exists(train) and os.path.exists(held):
        return train, held
    os.makedirs(corpus_dir, exist_ok=True)
    tarballs = glob.glob(os.path.join(corpus_dir, "chinese-poetry-2.0.1.tgz"))
    if not tarballs:
        try:
            subprocess.run(["npm", "pack", POETRY, "--pack-destination", corpus_dir], check=True,
                           stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"cannot fetch the Tang poems with `npm pack {POETRY}` ({e}); pass --corpus-dir "
                             "holding chinese-poetry-2.0.1.tgz") from None
        tarballs = glob.glob(os.path.join(corpus_dir, "chinese-poetry-2.0.1.tgz"))
    text = poems_text(tarballs[0])
    cut = text.index("\n\n", len(text) - HELD_OUT) + 2
    for path, part in ((train, text[:cut]), (held, text[cut:])):
        with open(path, "w", encoding="utf-8") as f:
            f.write(part)
    return train, held


def poems_text(tarball):
    """The Tang poems of the package, in its files' order: a title line, the poem's lines, a blank line between
    poems."""
    pattern = re.compile(r"package/dist/quantangshi/poet\.tang\.(\d+)\.json")
    with tarfile.open(tarball) as tar:
        members = sorted((m for m in tar if pattern.fullmatch(m.name)), key=lambda m: int(pattern.fullmatch(m.name)[1]))
        poems_ = [poem for m in members for poem in json.load(tar.extractfile(m))]
    return "\n\n".join("\n".join([poem["title"], *poem["paragraphs"]]) for poem in poems_) + "\n"


# ---- the rows, through the commands


def charrnn(*args, stdout=None):
    """Run ``python -m charrnn ARGS`` in the measurement environment; its standard output."""
    out = subprocess.run([sys.executable, "-m", "charrnn", *args], env=harness.child_env(), cwd=harness.ROOT,
                         stdout=subprocess.PIPE if stdout is None else stdout, text=True)
    if out.returncode:
        raise SystemExit(f"charrnn {' '.join(args)} failed")
    return out.stdout


def train_row(corpus, checkpoint_dir, steps, options):
    """The median chars/s of `charrnn train` over ``steps`` steps (validation only after the last)."""
    charrnn("train", corpus, "--checkpoint-dir", checkpoint_dir, "--max-steps", str(steps), "--eval-every",
            str(steps), "--val-frac", "0.01", "--sample-length", "0", "--random-seed", "0", "--overwrite", "-q",
            *options)
    with open(os.path.join(checkpoint_dir, "metrics.jsonl")) as f:
        rates = [json.loads(line)["chars_per_sec"] for line in f]
    return statistics.median(rates)


def eval_row(checkpoint_dir, path):
    return json.loads(charrnn("eval", checkpoint_dir, path, "--json"))["chars_per_sec"]


def sample_row(checkpoint_dir, samples, length, out):
    """Characters a second of `charrnn sample --num-samples N`, its start and the checkpoint's load taken out."""
    walls = []
    for n in (length, 1):
        start = time.perf_counter()
        charrnn("sample", checkpoint_dir, "--num-samples", str(samples), "--length", str(n), "--random-seed", "0",
                "-o", out, "--overwrite", stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
    if walls[0] <= walls[1]:  # a sample too short to tell from the start (toy sizes)
        return samples * length / walls[0]
    return samples * (length - 1) / (walls[0] - walls[1])


# ---- products alone


def _best_rate(run, units, seconds):
    return {"chars_per_sec": harness.best_rate(lambda: (run(), units)[1], seconds)}


def training_products(cell, hidden, layers, batch, seq, vocab):
    """Two functions running a training step's products alone at batch ``batch``, as CharRNN runs them: the
    recurrent ones, a step at a time (forward h_prev W_hh in a block per gate, backward d W_hh^T in four
    blocks), and the others (the upper layers' input products and their gradients, the weight gradients as
    one product over the chunk, the output layer's three)."""
    rng = np.random.default_rng(0)
    H, n, N = hidden, GATES[cell], seq * batch
    G = n * H
    f32 = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    W_blocks, W_T_blocks, W_xh, W_hy = f32(n, H, H), f32(4, G, H // 4), f32(H, G), f32(H, vocab)
    h, d, xs, ds, dy = f32(batch, H), f32(batch, G), f32(N, H), f32(N, G), f32(N, vocab)
    out_g, out_h, gates, dW, dx, logits = (np.empty(shape, np.float32) for shape in (
        (n, batch, H), (4, batch, H // 4), (N, G), (H, G), (N, H), (N, vocab)))

    def recurrent():
        for _ in range(layers * seq):
            np.matmul(h, W_blocks, out=out_g)
            np.matmul(d, W_T_blocks, out=out_h)

    def other():
        for _ in range(layers - 1):
            np.matmul(xs, W_xh, out=gates)  # the input product
            np.matmul(xs.T, ds, out=dW)  # its weights' gradient
            np.matmul(ds, W_xh.T, out=dx)  # the gradient of the layer below's output
        for _ in range(layers):
            np.matmul(xs.T, ds, out=dW)  # the recurrent weights' gradient
        np.matmul(xs, W_hy, out=logits)
        np.matmul(dy, W_hy.T, out=dx)
        np.matmul(xs.T, dy, out=W_hy)

    return recurrent, other


def train_products(cell, hidden, layers, batch, seq, vocab, seconds):
    """chars/s of one training step's products alone at batch ``batch`` (``training_products``), in this process
    with its threads."""
    recurrent, other = training_products(cell, hidden, layers, batch, seq, vocab)
    return _best_rate(lambda: (recurrent(), other()), seq * batch, seconds)


def eval_products(cell, hidden, layers, vocab, seconds, window=512):
    """chars/s of one stream's products alone: each character's recurrent (1, H) x (H, G) per layer, and each
    window's upper-layer input and output products."""
    rng = np.random.default_rng(0)
    H, G = hidden, GATES[cell] * hidden
    W_hh = rng.standard_normal((H, G), dtype=np.float32)
    W_xh, W_hy = rng.standard_normal((H, G), dtype=np.float32), rng.standard_normal((H, vocab), dtype=np.float32)
    h, xs = rng.standard_normal((1, H), dtype=np.float32), rng.standard_normal((window, H), dtype=np.float32)
    out, gates, logits = np.empty((1, G), np.float32), np.empty((window, G), np.float32), \
        np.empty((window, vocab), np.float32)

    def run():
        for _ in range(layers - 1):
            np.matmul(xs, W_xh, out=gates)
        np.matmul(xs, W_hy, out=logits)
        for _ in range(window * layers):
            np.matmul(h, W_hh, out=out)

    return _best_rate(run, window, seconds)


def sample_products(hidden, layers, batch, vocab, seconds, length=100):
    """chars/s of ``batch`` samples' products alone, a character at a time: layer 0's h W_hh, each upper
    layer's [x, h] [W_xh; W_hh], the output."""
    rng = np.random.default_rng(0)
    H, G = hidden, 4 * hidden
    mats = [rng.standard_normal((H if k == 0 else 2 * H, G), dtype=np.float32) for k in range(layers)]
    W_hy = rng.standard_normal((H, vocab), dtype=np.float32)
    xs = [rng.standard_normal((batch, m.shape[0]), dtype=np.float32) for m in mats]
    out, logits = np.empty((batch, G), np.float32), np.empty((batch, vocab), np.float32)

    def run():
        for _ in range(length):
            for x, m in zip(xs, mats):
                np.matmul(x, m, out=out)
            np.matmul(xs[0], W_hy, out=logits)

    return _best_rate(run, batch * length, seconds)


# ---- where a training step's time goes


def step_phases(cell, hidden, layers, batch, seq, vocab, workers, threads=1, repeat=5):
    """Where a training step's time goes, in ms: one worker's share (``batch // workers`` streams, in this
    process with ``threads`` BLAS threads (run_child sets them): one, as a worker has) in the recurrent steps,
    forward and backward,
    and the rest of its forward and backward, each beside its products alone (``training_products``); then
    what the main process does with the whole gradient: add the workers' shares, check it is finite and clip
    it, and Adam's update with weight decay. The fastest of ``repeat`` of each."""
    from charrnn import CharRNN, ModelConfig
    from charrnn.nn.optim import finite_step, make_optimizer
    from charrnn.nn.packed import Packed

    model = CharRNN(ModelConfig(vocab, cell, hidden, layers), rng=np.random.default_rng(0))
    share, rng = batch // workers, np.random.default_rng(1)
    inputs, targets = rng.integers(0, vocab, (seq, share)), rng.integers(0, vocab, (seq, share))
    spent = {"forward steps": 0.0, "backward steps": 0.0}
    timed(model.cell, "step_forward", spent, "forward steps")
    timed(model.cell, "step_backward", spent, "backward steps")
    phases = {}
    for _ in range(repeat):
        spent.update({"forward steps": 0.0, "backward steps": 0.0})
        start = time.perf_counter()
        model.loss_and_grads(inputs, targets, dropout_rng=rng)
        total = time.perf_counter() - start
        if not phases or total < phases["worker step"]:
            phases = {"worker step": total, **spent, "rest": total - sum(spent.values())}
    recurrent, other = training_products(cell, hidden, layers, share, seq, vocab)
    phases["recurrent products"], phases["other products"] = fastest(recurrent, repeat), fastest(other, repeat)
    grads = [Packed(model.shapes, model.dtype) for _ in range(workers)]
    optimizer = make_optimizer("adam", model.params, 1e-3, weight_decay=0.1)
    phases["sum of shares"] = fastest(lambda: [np.add(grads[0].flat, g.flat, grads[0].flat) for g in grads[1:]], repeat)
    phases["check and clip"] = fastest(lambda: (finite_step(0.0, grads[0]), optimizer.clip(grads[0])), repeat)
    phases["update"] = fastest(lambda: optimizer.update(model.params, grads[0]), repeat)
    return {name: 1e3 * value for name, value in phases.items()}


def timed(obj, method, spent, key):
    """Wrap ``obj.method`` so that each call's time adds to ``spent[key]``."""
    inner = getattr(obj, method)

    def call(*args):
        start = time.perf_counter()
        result = inner(*args)
        spent[key] += time.perf_counter() - start
        return result

    setattr(obj, method, call)


def fastest(call, repeat):
    """The fastest of ``repeat`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def breakdown_table(args, poem_vocab):
    """The phases (``step_phases``) of the three training rows, in a worker's environment (one BLAS thread)."""
    from charrnn.engines.pool import default_workers

    table = harness.Table([("row", "what"), ("worker step", "worker step"), ("forward steps", "forward steps"),
                           ("backward steps", "backward steps"), ("their products alone", "recurrent products"),
                           ("rest", "rest"), ("its products alone", "other products"),
                           ("main: sum of shares", "sum of shares"), ("check and clip", "check and clip"),
                           ("Adam update", "update")], title="where a training step's time goes (ms)")
    H = 16 if args.smoke else 512
    for what, cell, batch, vocab in (("LSTM 512x2, B=64", "lstm", 64, 65), ("GRU 512x2, B=32", "gru", 32, 65),
                                     (f"GRU 512x2, B=32, vocabulary {poem_vocab:,}", "gru", 32, poem_vocab)):
        workers = default_workers(batch)
        phases = harness.run_child(step_phases, cell=cell, hidden=H, layers=2, batch=batch, seq=100, vocab=vocab,
                                   workers=workers, threads=1)
        table.add({name: round(value, 1) for name, value in phases.items()},
                  what=f"{what}: {workers} workers of {batch // workers} streams")
    return table


# ---- the table


class Row:
    """A row: its FLOPs a character, its products-alone bound (a function of this module, its arguments, and
    how many processes run it side by side), and its chars/s per round."""

    def __init__(self, what, flops, bound, copies=1):
        self.what, self.flops, self.bound, self.copies = what, flops, bound, copies
        self.rates = []


def make_rows(hidden, poem_vocab):
    """The rows by name; a training row's bound runs on the worker processes `charrnn train` starts (one per
    CPU, each with a share of the streams and one BLAS thread), the others in one process with numpy's threads."""
    from charrnn.engines.pool import default_workers

    def train(cell, batch, vocab):
        workers = default_workers(batch)
        kwargs = dict(cell=cell, hidden=hidden, layers=2, batch=batch // workers, seq=100, vocab=vocab)
        return (train_products, kwargs), workers

    V = 65  # tinyshakespeare's vocabulary
    return {
        "train-lstm": Row("train LSTM 512x2, B=64, T=100, tinyshakespeare", rnn_flops("lstm", hidden, 2, V, True),
                          *train("lstm", 64, V)),
        "train-default": Row("train the default recipe (GRU 512x2, B=32), tinyshakespeare",
                             rnn_flops("gru", hidden, 2, V, True), *train("gru", 32, V)),
        "train-poems": Row(f"train the default recipe on the Tang poems (vocabulary {poem_vocab:,})",
                           rnn_flops("gru", hidden, 2, poem_vocab, True), *train("gru", 32, poem_vocab)),
        "train-poems-sparse": Row("the same, --sparse-embedding", rnn_flops("gru", hidden, 2, poem_vocab, True),
                                  *train("gru", 32, poem_vocab)),
        "eval-poems": Row("eval of the held-out poems (one stream)", rnn_flops("gru", hidden, 2, poem_vocab),
                          (eval_products, dict(cell="gru", hidden=hidden, layers=2, vocab=poem_vocab))),
        "sample-64": Row("64 samples side by side, LSTM 512x2", rnn_flops("lstm", hidden, 2, V),
                         (sample_products, dict(hidden=hidden, layers=2, batch=64, vocab=V))),
    }


def side_by_side(fn, copies, **kwargs):
    """chars/s of ``copies`` fresh processes running ``fn(**kwargs)`` at once (one BLAS thread each when more
    than one), summed."""
    if harness.SMOKE or copies == 1:
        return harness.run_child(fn, **kwargs)["chars_per_sec"]
    spec = json.dumps({"module": fn.__module__, "function": fn.__name__, "kwargs": kwargs})
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks", "_child", spec], stdout=subprocess.PIPE, text=True,
                              env=harness.child_env(1), cwd=harness.ROOT) for _ in range(copies)]
    outs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"{fn.__name__}({kwargs}) failed")
    return sum(json.loads(out.strip().splitlines()[-1])["chars_per_sec"] for out in outs)


def measure_round(args, corpus, poem_paths, tmp):
    """One round of every row asked for: {row name: chars/s}."""
    small = SMOKE_MODEL if args.smoke else []
    steps, length = (2, 20) if args.smoke else (args.steps, args.sample_length)
    lstm, poems_dir = os.path.join(tmp, "lstm"), os.path.join(tmp, "poems")
    only = set(args.only or ROWS)
    rates = {}
    if only & {"train-lstm", "sample-64"}:
        rates["train-lstm"] = train_row(corpus, lstm, steps, [*LSTM, *small])
    if "train-default" in only:
        rates["train-default"] = train_row(corpus, os.path.join(tmp, "default"), steps, small)
    if only & {"train-poems", "eval-poems"}:
        rates["train-poems"] = train_row(poem_paths[0], poems_dir, steps, small)
    if "train-poems-sparse" in only:
        rates["train-poems-sparse"] = train_row(poem_paths[0], os.path.join(tmp, "sparse"), steps,
                                                [*small, "--sparse-embedding"])
    if "eval-poems" in only:
        rates["eval-poems"] = eval_row(poems_dir, poem_paths[1])
    if "sample-64" in only:
        rates["sample-64"] = sample_row(lstm, 64, length, os.path.join(tmp, "samples.txt"))
    return {name: rate for name, rate in rates.items() if name in only}


def vocabulary_size(path):
    with open(path, encoding="utf-8") as f:
        return len(set(f.read()))


def add_row(table, row, peak, args):
    fractions = [rate * row.flops / peak for rate in row.rates]
    fields = {"what": row.what, "rate": max(row.rates), "rate_range": f"{min(row.rates):,.0f}-{max(row.rates):,.0f}",
              "flops": f"{row.flops / 1e6:.1f} M", "fraction": f"{max(fractions):.0%}",
              "fraction_range": f"{min(fractions):.0%}-{max(fractions):.0%}", "rates": row.rates, "peak": peak,
              "flops_per_char": row.flops}
    if not args.no_bound:
        fn, kwargs = row.bound
        bound = side_by_side(fn, row.copies, **kwargs, seconds=args.seconds)
        fields.update(bound=f"{bound * row.flops / peak:.0%}", of_bound=f"{max(row.rates) / bound:.0%}",
                      bound_rate=bound)
    table.add(**fields)


def main(argv):
    ap = harness.parser(__doc__, repeat=3, seconds=3.0)
    ap.add_argument("--only", choices=ROWS, action="append", help="these rows alone (repeatable)")
    ap.add_argument("--corpus-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "charrnn-bench"),
                    help="where the Tang poems are fetched and built [default: ~/.cache/charrnn-bench]")
    ap.add_argument("--steps", type=int, default=60, help="training steps a training row runs [default: 60]")
    ap.add_argument("--sample-length", type=int, default=2000, help="characters a sample [default: 2000]")
    ap.add_argument("--no-bound", action="store_true", help="leave out the products-alone columns")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead, where a training step's time goes, phase by phase, beside its products alone")
    args = harness.start(ap, argv)
    if args.breakdown:
        poem_vocab = 58 if args.smoke else vocabulary_size(poems(args.corpus_dir)[0])
        return harness.finish(args, [breakdown_table(args, poem_vocab)])
    corpus = harness.corpus_path()
    with tempfile.TemporaryDirectory() as tmp:
        poem_paths = smoke_poems(tmp, corpus) if args.smoke else poems(args.corpus_dir)
        rows = make_rows(16 if args.smoke else 512, vocabulary_size(poem_paths[0]))
        peaks = []
        for _ in range(args.repeat):
            peaks.append(harness.run_child(gemm_peak, **({"sizes": (64,), "repeat": 1} if args.smoke else {}))["flops"])
            for name, rate in measure_round(args, corpus, poem_paths, tmp).items():
                rows[name].rates.append(rate)
    peak = max(peaks)
    print(f"peak: {peak / 1e9:,.0f} GFLOP/s (numpy float32 square products; rounds {min(peaks) / 1e9:,.0f}-"
          f"{max(peaks) / 1e9:,.0f})", flush=True)
    table = harness.Table([("row", "what"), ("chars/s", "rate"), ("per round", "rate_range"),
                           ("FLOPs a char", "flops"), ("of peak", "fraction"), ("per round", "fraction_range"),
                           ("products alone, of peak", "bound"), ("row / products alone", "of_bound")],
                          title=f"against the machine's peak, {peak / 1e9:,.0f} GFLOP/s")
    for row in rows.values():
        if row.rates:
            add_row(table, row, peak, args)
    harness.finish(args, [table])


def smoke_poems(tmp, corpus):
    """Stand-ins for the poems in smoke mode: two pieces of the corpus."""
    with open(corpus, encoding="utf-8") as f:
        text = f.read(40_000)
    paths = [os.path.join(tmp, "poems.txt"), os.path.join(tmp, "held.txt")]
    for path, part in zip(paths, (text[:30_000], text[30_000:])):
        with open(path, "w", encoding="utf-8") as f:
            f.write(part)
    return paths
