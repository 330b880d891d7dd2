"""batched: many texts at once: batched sampling, per-line scoring, and whole-file eval against its bound.

    python -m benchmarks batched --markdown                  # all three parts, about 10 minutes on 2 cores
    python -m benchmarks batched --only sample --repeat 3

sample: LSTM 512x2, 64 samples of 500 characters as one batch (generate_batch) against one sample alone
(generate), PyTorch stepping the same 64 samples at batch 64 (stacked nn.LSTMCell, or nn.LSTM with
--torch-sampler lstm), and numpy's products of one character at batch 64 alone (the bound).
lines: score_lines(..., reset_per_line=True) (what `eval --per-line --reset-per-line` runs) on the first 10,000
lines of tinyshakespeare against the same call in the code of --base (the one-line-at-a-time scorer), extracted
with git archive; LSTM 128x2 and the default GRU 512x2.
eval: evaluate_file (one state carried through the file, batch 1) on the first --eval-chars characters against its
products alone: each character's recurrent (1, H) x (H, G*H) products and each 512-character window's input and
output products, nothing else.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks import harness, peers

SAMPLES, LENGTH, VOCAB = 64, 500, 65


def _model(cell, hidden, layers):
    from charrnn import CharRNN, ModelConfig, Vocab

    with open(harness.corpus_path(), encoding="utf-8") as f:
        symbols = tuple(sorted(set(f.read())))
    model = CharRNN(ModelConfig(len(symbols), cell, hidden, layers, dropout=0.0), rng=np.random.default_rng(0))
    return Vocab(symbols), model


def _excerpt(lines=None, chars=None):
    """The first ``lines`` lines or ``chars`` characters of the corpus, as a temporary file (kept for reuse)."""
    corpus = harness.corpus_path()
    path = os.path.join(tempfile.gettempdir(), f"charrnn-bench-{os.path.getsize(corpus)}-{lines}-{chars}.txt")
    if not os.path.exists(path):
        with open(corpus, encoding="utf-8") as f:
            text = "\n".join(f.read().split("\n")[:lines]) + "\n" if lines else f.read(chars)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def charrnn_sample(samples, hidden, layers, length, seconds):
    from charrnn import generate, generate_batch

    vocab, model = _model("lstm", hidden, layers)
    if samples == 1:
        run = lambda: sum(1 for _ in generate(model, vocab, "", length=length, random_seed=0))  # noqa: E731
    else:
        run = lambda: samples * sum(1 for _ in generate_batch(model, vocab, samples, "", length=length, random_seed=0))  # noqa: E731
    return {"chars_per_sec": harness.best_rate(run, seconds)}


def torch_sample(samples, hidden, layers, length, seconds, mode):
    return {"chars_per_sec": harness.best_rate(peers.lstm_sampler(hidden, layers, samples, mode, length), seconds)}


def products_sample(samples, hidden, layers, length, seconds):
    """The products one character of ``samples`` samples needs, alone: the bound."""
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((hidden, 4 * hidden)).astype(np.float32) for _ in range(2 * layers - 1)]
    mats.append(rng.standard_normal((hidden, VOCAB)).astype(np.float32))
    x = rng.standard_normal((samples, hidden)).astype(np.float32)
    outs = [np.empty((samples, m.shape[1]), np.float32) for m in mats]

    def run():
        for _ in range(length):
            for m, out in zip(mats, outs):
                np.matmul(x, m, out=out)
        return samples * length

    return {"chars_per_sec": harness.best_rate(run, seconds)}


def score_lines(src, cell, hidden, layers, lines, seconds):
    """chars/s of score_lines(..., reset_per_line=True) with the charrnn package at ``src``."""
    sys.path.insert(0, src)
    import charrnn
    from charrnn.inference.evaluate import score_lines

    assert os.path.dirname(charrnn.__file__) == os.path.join(src, "charrnn"), charrnn.__file__
    vocab, model = _model(cell, hidden, layers)
    path = _excerpt(lines=lines)
    run = lambda: sum(line.result.chars for line in score_lines(model, vocab, path, reset_per_line=True))  # noqa: E731
    return {"chars_per_sec": harness.best_rate(run, seconds, warmup=0)}


def eval_file(cell, hidden, layers, chars, seconds):
    from charrnn import evaluate_file

    vocab, model = _model(cell, hidden, layers)
    path = _excerpt(chars=chars)
    return {"chars_per_sec": harness.best_rate(lambda: evaluate_file(model, vocab, path).chars, seconds, warmup=0)}


def eval_products(cell, hidden, layers, chars, seconds, window=512):
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * hidden
    rng = np.random.default_rng(0)
    W_hh = [rng.standard_normal((hidden, G)).astype(np.float32) for _ in range(layers)]
    W_xh = [rng.standard_normal((hidden, G)).astype(np.float32) for _ in range(layers - 1)]
    W_hy = rng.standard_normal((hidden, VOCAB)).astype(np.float32)
    h, out = rng.standard_normal((1, hidden)).astype(np.float32), np.empty((1, G), np.float32)
    xs = rng.standard_normal((window, hidden)).astype(np.float32)
    gates, logits = np.empty((window, G), np.float32), np.empty((window, VOCAB), np.float32)

    def run():
        for _ in range(max(1, chars // window)):
            for W in W_xh:
                np.matmul(xs, W, out=gates)
            np.matmul(xs, W_hy, out=logits)
            for _ in range(window):
                for W in W_hh:
                    np.matmul(h, W, out=out)
        return max(1, chars // window) * window

    return {"chars_per_sec": harness.best_rate(run, seconds)}


def base_source(commit):
    """The charrnn package of ``commit``, extracted into a temporary directory."""
    dest = tempfile.mkdtemp(prefix=f"charrnn-{commit}-")
    archive = subprocess.run(["git", "-C", harness.ROOT, "archive", commit, "charrnn"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    return dest


def main(argv):
    ap = harness.parser(__doc__, repeat=3, seconds=4.0)
    ap.add_argument("--only", choices=["sample", "lines", "eval"], action="append")
    ap.add_argument("--base", default="5548594", help="lines: the commit to compare against [default: the last that "
                    "scored one line at a time]")
    ap.add_argument("--torch-sampler", choices=["lstmcell", "lstm"], default="lstmcell")
    ap.add_argument("--eval-chars", type=int, default=50_000, help="characters the eval part scores")
    args = harness.start(ap, argv)
    only = set(args.only or ["sample", "lines", "eval"])
    small = args.smoke  # toy models; lines: the code here against itself (two charrnn packages cannot share a process)
    table = harness.Table([("what", "what"), ("charrnn chars/s", "ours"), ("against chars/s", "peer"),
                           ("ratio", "ratio"), ("per round", "per_round")])
    rounds, seconds = args.repeat, args.seconds
    if "sample" in only:
        kw = {"samples": SAMPLES, "hidden": 32 if small else 512, "layers": 2, "length": 20 if small else LENGTH,
              "seconds": seconds}
        contenders = {"batch": (charrnn_sample, kw), "one": (charrnn_sample, {**kw, "samples": 1}),
                      "bound": (products_sample, kw)}
        torch = harness.need_torch("the PyTorch sampler")
        if torch:
            contenders["torch"] = (torch_sample, {**kw, "mode": args.torch_sampler})
        results = harness.alternate(contenders, rounds)
        label = "sample LSTM 512x2, 64 samples x 500 chars as one batch"
        table.add(harness.ratio_row(results, "batch", "one"), what=f"{label} / one sample alone")
        if torch:
            table.add(harness.ratio_row(results, "batch", "torch"),
                      what=f"the same / PyTorch stepping the 64 samples at batch 64 ({args.torch_sampler})")
        table.add(harness.ratio_row(results, "batch", "bound"), what="the same / numpy's products alone at batch 64")
    if "lines" in only:
        base = harness.ROOT if small else base_source(args.base)
        for cell, h, l in [("lstm", 16, 1)] if small else [("lstm", 128, 2), ("gru", 512, 2)]:
            kw = {"cell": cell, "hidden": h, "layers": l, "lines": 50 if small else 10_000, "seconds": seconds}
            results = harness.alternate({"new": (score_lines, {**kw, "src": harness.ROOT}),
                                         "base": (score_lines, {**kw, "src": base})}, rounds)
            table.add(harness.ratio_row(results, "new", "base"),
                      what=f"per-line scoring, {kw['lines']:,} lines, {cell.upper()} {h}x{l}: now / {args.base}")
        if base != harness.ROOT:
            shutil.rmtree(base)
    if "eval" in only:
        for cell, h, l in [("gru", 16, 2)] if small else [("lstm", 128, 2), ("gru", 512, 2), ("lstm", 512, 2)]:
            kw = {"cell": cell, "hidden": h, "layers": l, "chars": 1000 if small else args.eval_chars,
                  "seconds": seconds}
            results = harness.alternate({"eval": (eval_file, kw), "bound": (eval_products, kw)}, rounds)
            table.add(harness.ratio_row(results, "eval", "bound"),
                      what=f"whole-file eval ({kw['chars']:,} chars, batch 1), {cell.upper()} {h}x{l} / products alone")
    harness.finish(args, [table])
