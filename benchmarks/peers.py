"""Reference ("peer") throughput measurements for the charrnn benchmarks.

Everything here is a baseline that charrnn is compared against:

* ``torch_train_chars_per_sec``  -- a plain PyTorch char-model training loop
  (one-hot inputs -> nn.LSTM / nn.GRU / nn.RNN -> Linear, Adam, value clipping).
* ``torch_sample_chars_per_sec`` -- PyTorch character-by-character sampling at
  batch 1, either through ``nn.LSTM`` or a stack of ``nn.LSTMCell``.
* ``numpy_seed_chars_per_sec``   -- a deliberately plain float64 numpy Elman RNN
  trained one character sequence at a time (the "seed" style: batch 1, Python
  loop over timesteps, Adagrad).
* ``matmul_gflops``              -- measured matrix-product GFLOP/s, as context.

Training data is the tinyshakespeare character ids (when the corpus exists and
its vocabulary size equals ``vocab``); otherwise uniformly random token ids
drawn with a fixed seed.  Throughput does not depend on which is used.

PyTorch is imported lazily, so importing this module without torch installed
is fine; use ``torch_available()`` to check before calling the torch peers.

Run as a script to print the standard table::

    python benchmarks/peers.py            # about 3 minutes on 2 cores
    python benchmarks/peers.py --seconds 3 --json peers.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np

DEFAULT_CORPUS = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "tinyshakespeare.txt")
)
CORPUS_ENV = "CHARRNN_CORPUS"

# Target wall time for one measurement when no explicit step count is given.
DEFAULT_SECONDS = 8.0


def torch_available() -> bool:
    """True when PyTorch can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def corpus_path() -> str:
    return os.environ.get(CORPUS_ENV, DEFAULT_CORPUS)


def _read_corpus() -> str | None:
    path = corpus_path()
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _token_ids(vocab: int, min_len: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Token ids for throughput runs and a label saying where they came from."""
    text = _read_corpus()
    if text is not None:
        chars = sorted(set(text))
        if len(chars) == vocab and len(text) >= min_len:
            lookup = {ch: i for i, ch in enumerate(chars)}
            ids = np.fromiter((lookup[ch] for ch in text), dtype=np.int64, count=len(text))
            return ids, "tinyshakespeare"
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=max(min_len, 100_000), dtype=np.int64), "random"


class _TorchThreads:
    """Context manager that sets torch's intra-op thread count and restores it."""

    def __init__(self, threads: int | None):
        self.threads = threads
        self.saved = None

    def __enter__(self):
        import torch

        if self.threads is not None:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))
        return self

    def __exit__(self, *exc):
        import torch

        if self.saved is not None:
            torch.set_num_threads(self.saved)
        return False


def _timed_loop(step, steps: int | None, warmup: int, seconds: float) -> tuple[int, float]:
    """Run ``step()`` ``warmup`` times untimed, then time steady-state steps.

    With ``steps`` given, exactly that many are timed; otherwise steps run until
    ``seconds`` of wall time have passed (at least 2 steps).  Returns
    (timed steps, elapsed seconds).
    """
    for _ in range(warmup):
        step()
    done = 0
    start = time.perf_counter()
    if steps is not None:
        for _ in range(steps):
            step()
        done = steps
    else:
        while True:
            step()
            done += 1
            if done >= 2 and time.perf_counter() - start >= seconds:
                break
    return done, time.perf_counter() - start


# --------------------------------------------------------------------------
# PyTorch training throughput
# --------------------------------------------------------------------------

def torch_train_chars_per_sec(
    cell: str,
    hidden: int,
    layers: int,
    batch: int,
    seq: int,
    vocab: int = 65,
    steps: int | None = None,
    warmup: int = 3,
    dtype: str = "float32",
    threads: int | None = None,
    seconds: float = DEFAULT_SECONDS,
    seed: int = 0,
) -> float:
    """Training chars/s of a plain PyTorch char-rnn style loop.

    One-hot (B, T, V) inputs -> nn.LSTM/nn.GRU/nn.RNN(tanh) with ``layers``
    layers -> Linear(H, V) -> mean cross-entropy; Adam(lr=2e-3);
    ``clip_grad_value_(5)``; hidden state carried across steps (detached).
    B contiguous streams over tinyshakespeare ids (random ids if unavailable).
    Only the steps after ``warmup`` are timed: chars/s = B*T*steps/seconds.
    ``steps=None`` times as many steps as fit in ``seconds``.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    cell = cell.lower()
    rnn_types = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    if cell not in rnn_types:
        raise ValueError(f"cell must be one of {sorted(rnn_types)}, got {cell!r}")
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]

    with _TorchThreads(threads):
        torch.manual_seed(seed)
        kwargs = dict(input_size=vocab, hidden_size=hidden, num_layers=layers, batch_first=True)
        if cell == "rnn":
            kwargs["nonlinearity"] = "tanh"
        rnn = rnn_types[cell](**kwargs).to(tdtype)
        head = nn.Linear(hidden, vocab).to(tdtype)
        params = list(rnn.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=2e-3)

        ids, _ = _token_ids(vocab, min_len=batch * (seq + 1) * 4, seed=seed)
        stream_len = len(ids) // batch
        streams = torch.from_numpy(ids[: batch * stream_len].reshape(batch, stream_len))

        state = {"pos": 0, "h": None}

        def step():
            pos = state["pos"]
            if pos + seq + 1 > stream_len:  # wrap: start again with a fresh state
                pos, state["h"] = 0, None
            x = streams[:, pos : pos + seq]
            y = streams[:, pos + 1 : pos + seq + 1]
            state["pos"] = pos + seq
            onehot = F.one_hot(x, vocab).to(tdtype)
            out, h = rnn(onehot, state["h"])
            logits = head(out)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_value_(params, 5.0)
            opt.step()
            if isinstance(h, tuple):
                state["h"] = tuple(t.detach() for t in h)
            else:
                state["h"] = h.detach()

        n, elapsed = _timed_loop(step, steps, warmup, seconds)
    return batch * seq * n / elapsed


# --------------------------------------------------------------------------
# PyTorch sampling throughput
# --------------------------------------------------------------------------

def torch_sample_chars_per_sec(
    hidden: int,
    layers: int,
    vocab: int = 65,
    length: int | None = None,
    mode: str = "lstm",
    warmup: int = 50,
    threads: int | None = None,
    seconds: float = DEFAULT_SECONDS,
    seed: int = 0,
) -> float:
    """Sampling chars/s at batch 1, temperature 1, under torch.no_grad().

    mode='lstm':     an nn.LSTM(V, H, num_layers=layers) called on a (1, 1, V)
                     one-hot per character with (h, c) carried.
    mode='lstmcell': a stack of nn.LSTMCell holding the same weights.
    Each character: Linear -> softmax -> torch.multinomial -> feed back.
    ``length=None`` samples for ``seconds`` of wall time.
    """
    import torch
    import torch.nn as nn

    if mode not in ("lstm", "lstmcell"):
        raise ValueError(f"mode must be 'lstm' or 'lstmcell', got {mode!r}")

    with _TorchThreads(threads), torch.no_grad():
        torch.manual_seed(seed)
        lstm = nn.LSTM(vocab, hidden, num_layers=layers)
        head = nn.Linear(hidden, vocab)
        lstm.eval()
        head.eval()

        if mode == "lstm":
            x = torch.zeros(1, 1, vocab)
            state = {"hc": None, "prev": 0}

            def step():
                x.zero_()
                x[0, 0, state["prev"]] = 1.0
                out, state["hc"] = lstm(x, state["hc"])
                probs = torch.softmax(head(out[0, 0]), dim=-1)
                state["prev"] = int(torch.multinomial(probs, 1).item())

        else:
            cells = []
            for i in range(layers):
                c = nn.LSTMCell(vocab if i == 0 else hidden, hidden)
                c.weight_ih.copy_(getattr(lstm, f"weight_ih_l{i}"))
                c.weight_hh.copy_(getattr(lstm, f"weight_hh_l{i}"))
                c.bias_ih.copy_(getattr(lstm, f"bias_ih_l{i}"))
                c.bias_hh.copy_(getattr(lstm, f"bias_hh_l{i}"))
                c.eval()
                cells.append(c)
            x = torch.zeros(1, vocab)
            hs = [torch.zeros(1, hidden) for _ in range(layers)]
            cs = [torch.zeros(1, hidden) for _ in range(layers)]
            state = {"prev": 0}

            def step():
                x.zero_()
                x[0, state["prev"]] = 1.0
                inp = x
                for i, c in enumerate(cells):
                    hs[i], cs[i] = c(inp, (hs[i], cs[i]))
                    inp = hs[i]
                probs = torch.softmax(head(inp[0]), dim=-1)
                state["prev"] = int(torch.multinomial(probs, 1).item())

        n, elapsed = _timed_loop(step, length, warmup, seconds)
    return n / elapsed


# --------------------------------------------------------------------------
# Plain numpy "seed" implementation (min-char-rnn style)
# --------------------------------------------------------------------------

def _seed_text(vocab: int, seed: int) -> str:
    text = _read_corpus()
    if text is not None and len(set(text)) == vocab:
        return text
    rng = np.random.default_rng(seed)
    alphabet = [chr(0x100 + i) for i in range(vocab)]
    return "".join(alphabet[i] for i in rng.integers(0, vocab, size=200_000))


def numpy_seed_chars_per_sec(
    hidden: int = 100,
    seq: int = 25,
    vocab: int = 65,
    steps: int | None = None,
    warmup: int = 20,
    seconds: float = DEFAULT_SECONDS,
    seed: int = 0,
) -> float:
    """Training chars/s of a plain float64 numpy Elman RNN, batch 1.

    Written the straightforward way on purpose: one-hot column vectors times
    Wxh, a Python loop over timesteps forward and backward, np.clip(+-5) on
    the gradients, Adagrad with lr 0.1.  Trains on tinyshakespeare text.
    """
    data = _seed_text(vocab, seed)
    chars = sorted(set(data))
    vocab_size = len(chars)
    char_to_ix = {ch: i for i, ch in enumerate(chars)}
    learning_rate = 0.1
    hidden_size = hidden
    seq_length = seq

    rs = np.random.RandomState(seed)
    Wxh = rs.randn(hidden_size, vocab_size) * 0.01
    Whh = rs.randn(hidden_size, hidden_size) * 0.01
    Why = rs.randn(vocab_size, hidden_size) * 0.01
    bh = np.zeros((hidden_size, 1))
    by = np.zeros((vocab_size, 1))

    def loss_fun(inputs, targets, hprev):
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0.0
        # forward pass, one timestep at a time
        for t in range(len(inputs)):
            xs[t] = np.zeros((vocab_size, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
            ys[t] = np.dot(Why, hs[t]) + by
            ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
            loss += -np.log(ps[t][targets[t], 0])
        # backward pass, walking back through time
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(Why.T, dy) + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
            np.clip(dparam, -5, 5, out=dparam)
        return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]

    mWxh, mWhh, mWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    mbh, mby = np.zeros_like(bh), np.zeros_like(by)
    state = {"p": 0, "n": 0, "hprev": np.zeros((hidden_size, 1)),
             "smooth_loss": -np.log(1.0 / vocab_size) * seq_length}

    def step():
        p = state["p"]
        if p + seq_length + 1 >= len(data) or state["n"] == 0:
            state["hprev"] = np.zeros((hidden_size, 1))
            p = 0
        inputs = [char_to_ix[ch] for ch in data[p : p + seq_length]]
        targets = [char_to_ix[ch] for ch in data[p + 1 : p + seq_length + 1]]
        loss, dWxh, dWhh, dWhy, dbh, dby, state["hprev"] = loss_fun(inputs, targets, state["hprev"])
        state["smooth_loss"] = state["smooth_loss"] * 0.999 + loss * 0.001
        for param, dparam, mem in zip([Wxh, Whh, Why, bh, by],
                                      [dWxh, dWhh, dWhy, dbh, dby],
                                      [mWxh, mWhh, mWhy, mbh, mby]):
            mem += dparam * dparam
            param += -learning_rate * dparam / np.sqrt(mem + 1e-8)
        state["p"] = p + seq_length
        state["n"] += 1

    n, elapsed = _timed_loop(step, steps, warmup, seconds)
    return seq_length * n / elapsed


# --------------------------------------------------------------------------
# Matrix product speed
# --------------------------------------------------------------------------

def matmul_gflops(
    n: int = 1024,
    dtype: str = "float32",
    backend: str = "numpy",
    seconds: float = 3.0,
    threads: int | None = None,
) -> float:
    """Measured GFLOP/s of an n x n by n x n matrix product (2*n^3 flops each).

    backend='numpy' uses numpy's BLAS (what charrnn runs on); backend='torch'
    uses torch.mm (MKL in the CPU wheels).  Reports the mean over ``seconds``
    of repeated products after two warm-up products.
    """
    if backend == "numpy":
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        out = np.empty((n, n), dtype=dtype)

        def step():
            np.matmul(a, b, out=out)

        reps, elapsed = _timed_loop(step, None, 2, seconds)
    elif backend == "torch":
        import torch

        with _TorchThreads(threads):
            tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
            g = torch.Generator().manual_seed(0)
            a = torch.randn(n, n, generator=g, dtype=tdtype)
            b = torch.randn(n, n, generator=g, dtype=tdtype)
            out = torch.empty(n, n, dtype=tdtype)

            def step():
                torch.mm(a, b, out=out)

            reps, elapsed = _timed_loop(step, None, 2, seconds)
    else:
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
    return 2.0 * n ** 3 * reps / elapsed / 1e9


# --------------------------------------------------------------------------
# Script entry point
# --------------------------------------------------------------------------

TRAIN_CONFIGS = [
    # (cell, hidden, layers, batch, seq)
    ("lstm", 128, 2, 50, 50),
    ("gru", 128, 2, 50, 50),
    ("rnn", 128, 2, 50, 50),
    ("lstm", 512, 2, 64, 100),
    ("gru", 512, 2, 64, 100),
    ("rnn", 512, 2, 64, 100),
    ("gru", 512, 2, 32, 100),  # charrnn's default recipe
]
SAMPLE_CONFIGS = [
    # (hidden, layers, mode)
    (128, 2, "lstm"),
    (128, 2, "lstmcell"),
    (512, 2, "lstm"),
    (512, 2, "lstmcell"),
]


def run_all(seconds: float = DEFAULT_SECONDS, threads: int | None = None,
            include_torch: bool | None = None, repeat: int = 1, log=print) -> list[dict]:
    """Measure every standard configuration; returns a list of result rows.

    With ``repeat`` > 1 each figure is the best of that many measurements
    (the shared machine is noisy; the best run is the least disturbed one).
    """
    def best(fn, *a, **kw):
        return max(fn(*a, **kw) for _ in range(max(1, repeat)))

    if include_torch is None:
        include_torch = torch_available()
    rows: list[dict] = []

    def emit(row):
        rows.append(row)
        log(f"{row['what']:<10} {row['config']:<36} {row['value']:>12,.1f} {row['unit']}")

    log(f"{'what':<10} {'config':<36} {'value':>12} unit")
    emit({"what": "matmul", "config": "numpy float32 n=1024",
          "value": best(matmul_gflops, 1024, "float32", "numpy"), "unit": "GFLOP/s"})
    emit({"what": "matmul", "config": "numpy float64 n=1024",
          "value": best(matmul_gflops, 1024, "float64", "numpy"), "unit": "GFLOP/s"})
    if include_torch:
        emit({"what": "matmul", "config": "torch float32 n=1024",
              "value": best(matmul_gflops, 1024, "float32", "torch", threads=threads), "unit": "GFLOP/s"})
        for cell, h, l, b, t in TRAIN_CONFIGS:
            v = best(torch_train_chars_per_sec, cell, h, l, b, t, threads=threads, seconds=seconds)
            emit({"what": "train", "config": f"torch {cell} H={h} L={l} B={b} T={t}",
                  "cell": cell, "hidden": h, "layers": l, "batch": b, "seq": t,
                  "value": v, "unit": "chars/s"})
        for h, l, mode in SAMPLE_CONFIGS:
            v = best(torch_sample_chars_per_sec, h, l, mode=mode, threads=threads, seconds=seconds)
            emit({"what": "sample", "config": f"torch {mode} H={h} L={l}",
                  "hidden": h, "layers": l, "mode": mode, "value": v, "unit": "chars/s"})
    else:
        log("(torch not installed or disabled: skipping the PyTorch peers)")
    v = best(numpy_seed_chars_per_sec, 100, 25, seconds=seconds)
    emit({"what": "seed", "config": "numpy f64 rnn H=100 T=25 B=1",
          "hidden": 100, "seq": 25, "value": v, "unit": "chars/s"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measure peer (PyTorch / plain numpy) throughput.")
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                    help="timed wall seconds per measurement (default %(default)s)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own default)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="report the best of this many measurements of each figure")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    ap.add_argument("--json", metavar="PATH", help="also write results as JSON ('-' for stdout)")
    args = ap.parse_args(argv)

    info = {"python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "corpus": corpus_path() if _read_corpus() is not None else None,
            "seconds": args.seconds, "repeat": args.repeat}
    if torch_available() and not args.no_torch:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = args.threads or torch.get_num_threads()
    print("# " + ", ".join(f"{k}={v}" for k, v in info.items()))
    rows = run_all(seconds=args.seconds, threads=args.threads,
                   include_torch=False if args.no_torch else None, repeat=args.repeat)
    if args.json:
        write_json({"info": info, "results": rows}, args.json)
    return 0


def write_json(obj, dest):
    """Write ``obj`` as indented JSON to the file ``dest``, or to stdout for '-'."""
    payload = json.dumps(obj, indent=2)
    if dest == "-":
        print(payload)
    else:
        with open(dest, "w", encoding="utf-8") as fh:
            fh.write(payload + "\n")


if __name__ == "__main__":
    sys.exit(main())
