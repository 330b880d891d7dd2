"""Many texts at once: batched sampling, batched per-line scoring, and whole-file eval against its bound.

    python benchmarks/batched.py                    # all three parts, about 10 minutes on 2 cores
    python benchmarks/batched.py --only sample --repeat 3

Every figure is measured in a fresh subprocess, the contenders of a part alternating round by round;
each is the best of ``--repeat`` rounds, and "per round" gives the ratio within each round (the
machine is shared and noisy). Children run without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (machine.py).

- sample: LSTM 512x2 (V=65), 64 samples of 500 characters. charrnn's generate_batch (one batch of
  64) against one sample (generate, 500 characters), PyTorch stepping the same 64 samples at batch 64
  (a stack of nn.LSTMCell, or with ``--torch-sampler lstm`` nn.LSTM fed one step at a time; one-hot
  input, Linear, softmax, torch.multinomial; LSTMCell was the faster here), and numpy's products
  alone at batch 64 (the bound).
- lines: ``score_lines(..., reset_per_line=True)`` (what ``eval --per-line --reset-per-line`` runs) on
  the first 10,000 lines of tinyshakespeare, against the same call in the base commit's code
  (``--base``, default 5548594, extracted with git archive), for LSTM 128x2 and the default GRU 512x2.
- eval: ``evaluate_file`` (one state carried through the file, at batch 1) on the first
  ``--eval-chars`` characters of tinyshakespeare, against its products alone: the per-character recurrent
  matrix-vector products at batch 1 and the 512-step window products (upper layers' inputs, output
  layer) that evaluate_file does, and nothing else.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import machine  # noqa: E402
import peers  # noqa: E402
import timing  # noqa: E402

VOCAB = 65


def corpus_path():
    """tinyshakespeare: $CHARRNN_CORPUS, else ../shared/data beside the repository (or beside its
    worktrees' folder, where a checkout lives under a folder of worktrees)."""
    for path in (peers.corpus_path(), os.path.join(ROOT, "..", "..", "shared", "data", "tinyshakespeare.txt")):
        if os.path.exists(path):
            return path
    raise SystemExit(f"tinyshakespeare not found (looked for {peers.corpus_path()}): set {peers.CORPUS_ENV}")
SAMPLES, LENGTH = 64, 500


def _vocab_and_model(cell, hidden, layers):
    import numpy as np

    from charrnn.io.corpus import Vocab
    from charrnn.rnn import CharRNN, ModelConfig

    with open(corpus_path(), encoding="utf-8") as f:
        symbols = tuple(sorted(set(f.read())))
    model = CharRNN(ModelConfig(len(symbols), cell, hidden, layers, dropout=0.0), rng=np.random.default_rng(0))
    return Vocab(symbols), model


def charrnn_sample(samples, seconds):
    from charrnn.sample import generate, generate_batch

    vocab, model = _vocab_and_model("lstm", 512, 2)
    if samples == 1:
        return timing.best_rate(lambda: sum(1 for _ in generate(model, vocab, "", LENGTH, random_seed=0)), seconds)
    return timing.best_rate(
        lambda: samples * sum(1 for _ in generate_batch(model, vocab, samples, "", LENGTH, random_seed=0)), seconds)


def torch_sample(samples, mode, seconds):
    """PyTorch stepping ``samples`` samples at once, one character at a time (its idiomatic sampler)."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    hidden, layers = 512, 2
    with torch.no_grad():
        lstm = nn.LSTM(VOCAB, hidden, num_layers=layers).eval()
        head = nn.Linear(hidden, VOCAB).eval()
        cells = []
        for i in range(layers):
            cell = nn.LSTMCell(VOCAB if i == 0 else hidden, hidden).eval()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(lstm, f"{name}_l{i}"))
            cells.append(cell)
        eye = torch.eye(VOCAB)

        def run():
            prev = torch.zeros(samples, dtype=torch.long)
            if mode == "lstm":
                state = None
                for _ in range(LENGTH):
                    out, state = lstm(eye[prev][None], state)
                    prev = torch.multinomial(torch.softmax(head(out[0]), dim=-1), 1)[:, 0]
            else:
                hs = [torch.zeros(samples, hidden) for _ in range(layers)]
                cs = [torch.zeros(samples, hidden) for _ in range(layers)]
                for _ in range(LENGTH):
                    x = eye[prev]
                    for i, cell in enumerate(cells):
                        hs[i], cs[i] = cell(x, (hs[i], cs[i]))
                        x = hs[i]
                    prev = torch.multinomial(torch.softmax(head(x), dim=-1), 1)[:, 0]
            return samples * LENGTH

        return timing.best_rate(run, seconds)


def products_sample(samples, seconds):
    """The products one character of ``samples`` samples needs (LSTM 512x2), alone: the bound."""
    import numpy as np

    rng = np.random.default_rng(0)
    H = 512
    mats = [rng.standard_normal((H, 4 * H)).astype(np.float32) for _ in range(3)]
    mats.append(rng.standard_normal((H, VOCAB)).astype(np.float32))
    x = rng.standard_normal((samples, H)).astype(np.float32)
    outs = [np.empty((samples, m.shape[1]), np.float32) for m in mats]

    def run():
        for _ in range(LENGTH):
            for m, out in zip(mats, outs):
                np.matmul(x, m, out=out)
        return samples * LENGTH

    return timing.best_rate(run, seconds)


def _lines_file(count):
    path = os.path.join(tempfile.gettempdir(), f"charrnn-bench-{count}-lines.txt")
    if not os.path.exists(path):
        with open(corpus_path(), encoding="utf-8") as f:
            lines = f.read().split("\n")[:count]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return path


def score_lines_run(src, cell, hidden, layers, seconds):
    """chars/s of score_lines(..., reset_per_line=True) over 10,000 lines with the charrnn at ``src``."""
    sys.path.insert(0, src)
    import charrnn

    assert os.path.dirname(charrnn.__file__) == os.path.join(src, "charrnn"), charrnn.__file__
    from charrnn.evaluate import score_lines

    vocab, model = _vocab_and_model(cell, hidden, layers)
    path = _lines_file(10_000)
    return timing.best_rate(  # a run is long: its own warm-up is a small part of it
        lambda: sum(line.result.chars for line in score_lines(model, vocab, path, reset_per_line=True)), seconds,
        warmup=0)


def eval_file_run(cell, hidden, layers, chars, seconds):
    from charrnn.evaluate import evaluate_file

    vocab, model = _vocab_and_model(cell, hidden, layers)
    path = os.path.join(tempfile.gettempdir(), f"charrnn-bench-{chars}-chars.txt")
    if not os.path.exists(path):
        with open(corpus_path(), encoding="utf-8") as f:
            text = f.read(chars)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return timing.best_rate(lambda: evaluate_file(model, vocab, path).chars, seconds, warmup=0)


def eval_products(cell, hidden, layers, seconds, chars, window=512):
    """evaluate_file's products alone for ``chars`` characters: per character each layer's (1, H) x (H, G·H)
    recurrent product; per 512-character window the upper layers' input products and the output layer."""
    import numpy as np

    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * hidden
    rng = np.random.default_rng(0)
    W_hh = [rng.standard_normal((hidden, G)).astype(np.float32) for _ in range(layers)]
    W_xh = [rng.standard_normal((hidden, G)).astype(np.float32) for _ in range(layers - 1)]
    W_hy = rng.standard_normal((hidden, VOCAB)).astype(np.float32)
    h = rng.standard_normal((1, hidden)).astype(np.float32)
    out = np.empty((1, G), np.float32)
    xs = rng.standard_normal((window, hidden)).astype(np.float32)
    gates = np.empty((window, G), np.float32)
    logits = np.empty((window, VOCAB), np.float32)

    def run():
        for _ in range(chars // window):
            for W in W_xh:
                np.matmul(xs, W, out=gates)
            np.matmul(xs, W_hy, out=logits)
            for _ in range(window):
                for W in W_hh:
                    np.matmul(h, W, out=out)
        return chars // window * window

    return timing.best_rate(run, seconds)


def worker(kind, args, seconds):
    if kind == "charrnn-sample":
        return charrnn_sample(int(args[0]), seconds)
    if kind == "torch-sample":
        return torch_sample(int(args[0]), args[1], seconds)
    if kind == "products-sample":
        return products_sample(int(args[0]), seconds)
    if kind == "score-lines":
        return score_lines_run(args[0], args[1], int(args[2]), int(args[3]), seconds)
    if kind == "eval-file":
        return eval_file_run(args[0], int(args[1]), int(args[2]), int(args[3]), seconds)
    if kind == "eval-products":
        return eval_products(args[0], int(args[1]), int(args[2]), seconds, chars=int(args[3]))
    raise SystemExit(f"unknown worker {kind}")


def measure(kind, args, seconds):
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(seconds), *map(str, args)],
                         capture_output=True, text=True, env=machine.benchmark_env())
    if out.returncode:
        raise SystemExit(f"{kind} {args} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def rounds_of(contenders, repeat, seconds):
    """{name: [chars/s per round]}, the contenders alternating within each round."""
    rounds = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, (kind, args) in contenders.items():
            rounds[name].append(measure(kind, args, seconds))
    return rounds


def ratio_row(label, rounds, ours, peer):
    best = max(rounds[ours]) / max(rounds[peer])
    per_round = [a / b for a, b in zip(rounds[ours], rounds[peer])]
    return {"what": label, "ours": max(rounds[ours]), "peer": max(rounds[peer]), "ratio": best,
            "per_round": f"{min(per_round):.2f}-{max(per_round):.2f}"}


def base_source(commit):
    """The base commit's charrnn package, extracted into a temporary directory."""
    dest = tempfile.mkdtemp(prefix=f"charrnn-{commit}-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "charrnn"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    return dest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["sample", "lines", "eval"], action="append")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each figure is the best of them")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    ap.add_argument("--base", default="5548594", help="the commit whose score_lines the lines part compares against")
    ap.add_argument("--torch-sampler", choices=["lstmcell", "lstm"], default="lstmcell",
                    help="PyTorch's batch-64 sampler: a stack of nn.LSTMCell (the faster here) or nn.LSTM stepped")
    ap.add_argument("--eval-chars", type=int, default=50_000, help="characters of tinyshakespeare the eval part scores")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    only = set(args.only or ["sample", "lines", "eval"])
    print(machine.describe(), flush=True)
    print(f"rounds: {args.repeat}, {args.seconds:g} s per measurement, contenders alternating", flush=True)
    rows = []

    def emit(row):
        rows.append(row)
        print(f"{row['what']:<62}{row['ours']:>10,.0f}{row['peer']:>10,.0f}  {row['ratio']:6.2f}x  "
              f"{row['per_round']}", flush=True)

    print(f"{'':<62}{'charrnn':>10}{'against':>10}   ratio  per round")
    if "sample" in only:
        rounds = rounds_of({
            "batch": ("charrnn-sample", (SAMPLES,)), "one": ("charrnn-sample", (1,)),
            "torch": ("torch-sample", (SAMPLES, args.torch_sampler)), "bound": ("products-sample", (SAMPLES,)),
        }, args.repeat, args.seconds)
        emit(ratio_row("sample LSTM 512x2: 64 x 500 chars batched / one sample", rounds, "batch", "one"))
        emit(ratio_row(f"sample LSTM 512x2: 64 batched / torch batch 64 ({args.torch_sampler})", rounds, "batch",
                       "torch"))
        emit(ratio_row("sample LSTM 512x2: 64 batched / products alone (bound)", rounds, "batch", "bound"))
    if "lines" in only:
        base = base_source(args.base)
        for cell, h, l in (("lstm", 128, 2), ("gru", 512, 2)):
            rounds = rounds_of({"new": ("score-lines", (ROOT, cell, h, l)),
                                "base": ("score-lines", (base, cell, h, l))}, args.repeat, args.seconds)
            emit(ratio_row(f"eval --reset-per-line, 10,000 lines, {cell.upper()} {h}x{l}: now / {args.base}",
                           rounds, "new", "base"))
    if "eval" in only:
        for cell, h, l in (("lstm", 128, 2), ("gru", 512, 2), ("lstm", 512, 2)):
            rounds = rounds_of({"eval": ("eval-file", (cell, h, l, args.eval_chars)),
                                "bound": ("eval-products", (cell, h, l, args.eval_chars))}, args.repeat, args.seconds)
            emit(ratio_row(f"eval whole file, {cell.upper()} {h}x{l}: evaluate_file / products alone",
                           rounds, "eval", "bound"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine.describe(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(worker(sys.argv[2], sys.argv[4:], float(sys.argv[3])))
    else:
        main()
