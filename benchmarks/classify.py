"""The classifier against its peers on the shipped names data: accuracy, training speed, predict speed.

    python benchmarks/classify.py speed --rounds 3 --seconds 8      # training texts/s, charrnn vs PyTorch
    python benchmarks/classify.py predict --rounds 3                # texts/s of predict, charrnn vs PyTorch
    python benchmarks/classify.py accuracy --seconds 120            # test accuracy and macro-F1 of each

Every figure comes from a fresh subprocess with ``--threads`` BLAS / intra-op threads (numpy's OpenBLAS
and PyTorch alike), charrnn and its peer alternating; a ratio is charrnn / peer within one round, and
the table gives the best round's figures with the range of the per-round ratios (the machine is shared
and noisy). The peer (benchmarks/torch_bilstm.py) is a PyTorch script of the same model (one-hot into
nn.LSTM(bidirectional=True) over packed sequences, h_n joined, a linear layer), optimizer and batches.
``accuracy`` trains charrnn (``charrnn classify train`` with the options given) and the peer for the
same time, and scores both, the majority class and fastText (``supervised -minn 2 -maxn 5``, where the
``fasttext`` or ``fasttext-wheel`` package imports) on the test split.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import machine  # noqa: E402

DATA = os.path.join(ROOT, "data")
TRAIN, VALID, TEST = (os.path.join(DATA, f"names.{s}.txt") for s in ("train", "valid", "test"))
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def child(task, threads, **kw):
    """Run ``task`` in a fresh interpreter with ``threads`` BLAS/torch threads; return its JSON result."""
    env = {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}
    env = {k: v for k, v in env.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, __file__, "_child", json.dumps({"task": task, "threads": threads, **kw})],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- what the children measure


def _speed_charrnn(cell, hidden, batch, seconds, **_):
    import numpy as np
    from torch_bilstm import prepare

    from charrnn.classify.data import length_buckets, pad_batch
    from charrnn.classify.model import Classifier, ClassifierConfig
    from charrnn.nn.optim import make_optimizer

    _, labels, vocab, encoded, targets = prepare(TRAIN)
    model = Classifier(ClassifierConfig(len(vocab) + 1, len(labels), cell, hidden), rng=np.random.default_rng(0))
    optimizer = make_optimizer("adam", model.params, 3e-3)
    Y = np.eye(len(labels))[targets]
    return _timed(lambda rows: _step_charrnn(model, optimizer, pad_batch(encoded, rows, len(vocab)), Y),
                  length_buckets, encoded, batch, seconds)


def _step_charrnn(model, optimizer, batch, Y):
    _, grads = model.loss_and_grads(batch.ids, batch.lengths, Y[batch.rows])
    optimizer.step(model.params, grads)
    return len(batch.rows)


def _speed_torch(cell, hidden, batch, seconds, threads, **_):
    import torch
    from torch_bilstm import TorchClassifier, prepare, train_step

    from charrnn.classify.data import length_buckets, pad_batch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    _, labels, vocab, encoded, targets = prepare(TRAIN)
    model = TorchClassifier(len(vocab) + 1, len(labels), cell, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.99))

    def step(rows):
        b = pad_batch(encoded, rows, len(vocab))
        train_step(model, optimizer, torch.from_numpy(b.ids), torch.from_numpy(b.lengths),
                   torch.from_numpy(targets[b.rows]))
        return len(b.rows)

    return _timed(step, length_buckets, encoded, batch, seconds)


def _timed(step, length_buckets, encoded, batch, seconds):
    """Texts per second of ``step`` over the epoch's batches (repeated), after three warm-up steps."""
    import numpy as np

    order = length_buckets(encoded.lengths, batch, np.random.default_rng([1, 0]))
    for rows in order[:3]:
        step(rows)
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        done += step(order[i % len(order)])
        i += 1
    return {"texts_per_sec": done / (time.perf_counter() - start)}


def _predict_charrnn(cell, hidden, n, **_):
    import numpy as np
    from torch_bilstm import prepare

    from charrnn.classify.model import Classifier, ClassifierConfig
    from charrnn.classify.predict import TextClassifier

    lines, labels, vocab, _, _ = prepare(TRAIN)
    model = Classifier(ClassifierConfig(len(vocab) + 1, len(labels), cell, hidden), rng=np.random.default_rng(0))
    clf = TextClassifier(model, vocab, labels)
    texts = (lines.texts * (n // len(lines.texts) + 1))[:n]
    clf.predict(texts[:1000])
    start = time.perf_counter()
    clf.predict(texts)
    return {"texts_per_sec": n / (time.perf_counter() - start)}


def _predict_torch(cell, hidden, n, threads, **_):
    import torch
    from torch_bilstm import TorchClassifier, predict, prepare

    from charrnn.classify.data import encode_texts

    torch.set_num_threads(threads)
    lines, labels, vocab, _, _ = prepare(TRAIN)
    model = TorchClassifier(len(vocab) + 1, len(labels), cell, hidden)
    texts = (lines.texts * (n // len(lines.texts) + 1))[:n]
    predict(model, encode_texts(texts[:1000], vocab), len(vocab))
    start = time.perf_counter()
    predict(model, encode_texts(texts, vocab), len(vocab))
    return {"texts_per_sec": n / (time.perf_counter() - start)}


def _predict_cli(n, checkpoint, **_):
    """texts/s of ``charrnn classify predict CHECKPOINT FILE`` end to end, process start included."""
    from torch_bilstm import prepare

    lines = prepare(TRAIN)[0]
    texts = (lines.texts * (n // len(lines.texts) + 1))[:n]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charrnn", "classify", "predict", checkpoint, f.name],
                   stdout=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - start
    os.unlink(f.name)
    return {"texts_per_sec": n / elapsed}


def _accuracy_charrnn(seconds, options, **_):
    from charrnn.classify.data import read_labelled
    from charrnn.classify.metrics import evaluate_predictions
    from charrnn.classify.predict import TextClassifier

    directory = tempfile.mkdtemp()
    subprocess.run([sys.executable, "-m", "charrnn", "classify", "train", TRAIN, "--valid", VALID, "--max-time",
                    str(seconds), "--checkpoint-dir", directory, "--random-seed", "1", "-q", *options], check=True)
    clf = TextClassifier.load(directory)
    test = read_labelled(TEST)
    report = evaluate_predictions(clf.predict_proba(test.texts), test.labels, clf.labels)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "checkpoint": directory}


def _accuracy_torch(seconds, threads, cell, hidden, dropout, **_):
    import numpy as np
    import torch
    from torch_bilstm import predict, train_for

    from charrnn.classify.data import encode_texts, read_labelled
    from charrnn.classify.metrics import evaluate_predictions

    torch.set_num_threads(threads)
    model, labels, vocab = train_for(TRAIN, VALID, seconds, cell, hidden, dropout=dropout)
    test = read_labelled(TEST)
    predicted = predict(model, encode_texts(test.texts, vocab), len(vocab))
    probs = np.eye(len(labels))[predicted]
    report = evaluate_predictions(probs, test.labels, labels)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def _accuracy_fasttext(threads, tuned, **_):
    import fasttext
    import numpy as np

    from charrnn.classify.data import LabelSet, read_labelled
    from charrnn.classify.metrics import evaluate_predictions

    options = {"epoch": 25, "lr": 0.5} if tuned else {}
    start = time.perf_counter()
    model = fasttext.train_supervised(TRAIN, minn=2, maxn=5, thread=threads, verbose=0, seed=1, **options)
    elapsed = time.perf_counter() - start
    test = read_labelled(TEST)
    labels = LabelSet(tuple(name[len("__label__") :] for name in model.labels))
    predicted, _ = model.predict(test.texts, k=1)
    index = labels.index()
    probs = np.eye(len(labels))[[index[p[0][len("__label__") :]] for p in predicted]]
    report = evaluate_predictions(probs, test.labels, labels)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "seconds": elapsed}


def _accuracy_majority(**_):
    from collections import Counter

    from charrnn.classify.data import LabelSet, read_labelled
    from charrnn.classify.metrics import evaluate_predictions

    train, test = read_labelled(TRAIN), read_labelled(TEST)
    labels = LabelSet.from_lines(train.labels)
    majority = Counter(n for names in train.labels for n in names).most_common(1)[0][0]
    import numpy as np

    probs = np.zeros((len(test.texts), len(labels)))
    probs[:, labels.index()[majority]] = 1
    report = evaluate_predictions(probs, test.labels, labels)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "label": majority}


TASKS = {name[1:]: fn for name, fn in globals().items() if name.startswith(("_speed_", "_predict_", "_accuracy_"))}


# ---- the tables


def rounds(pairs, n):
    """Run each (name, task, kwargs) in ``pairs`` alternately, ``n`` rounds; print each round."""
    results = {name: [] for name, _, _ in pairs}
    for r in range(n):
        for name, task, kw in pairs:
            results[name].append(child(task, **kw))
        figures = "  ".join(f"{name} {results[name][-1]['texts_per_sec']:,.0f}" for name, _, _ in pairs)
        print(f"  round {r + 1}: {figures} texts/s", flush=True)
    return results


def ratio_row(label, results, ours, peer):
    a = [x["texts_per_sec"] for x in results[ours]]
    b = [x["texts_per_sec"] for x in results[peer]]
    per_round = [x / y for x, y in zip(a, b)]
    best = max(range(len(a)), key=lambda i: per_round[i])
    return (f"| {label} | {max(a):,.0f} | {max(b):,.0f} | {max(a) / max(b):.2f}x | "
            f"{min(per_round):.2f}-{max(per_round):.2f}x (best round {per_round[best]:.2f}x) |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["speed", "predict", "accuracy", "_child"])
    parser.add_argument("spec", nargs="?")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--options", action="append", default=[],
                        help="accuracy: charrnn classify train options of a charrnn row (repeatable; none: defaults)")
    parser.add_argument("--torch-dropout", type=float, default=0.0)
    parser.add_argument("--checkpoint", help="predict: also time `charrnn classify predict CHECKPOINT FILE` end to end")
    args = parser.parse_args()
    if args.what == "_child":
        sys.path.insert(0, HERE)
        spec = json.loads(args.spec)
        print(json.dumps(TASKS[spec.pop("task")](**spec)))
        return
    print(machine.describe(), flush=True)
    print(f"{args.threads} BLAS / torch threads; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    common = {"threads": args.threads, "hidden": args.hidden}
    if args.what in ("speed", "predict"):
        unit = f"batch {args.batch}, {args.seconds:g} s a run" if args.what == "speed" else f"{args.texts:,} texts"
        rows = []
        for cell in args.cells.split(","):
            kw = {**common, "cell": cell, "batch": args.batch, "seconds": args.seconds, "n": args.texts}
            print(f"{args.what}: bidirectional {cell.upper()} {args.hidden}, {unit}", flush=True)
            results = rounds([("charrnn", f"{args.what}_charrnn", kw), ("pytorch", f"{args.what}_torch", kw)],
                             args.rounds)
            rows.append(ratio_row(f"Bi{cell.upper()} {args.hidden}", results, "charrnn", "pytorch"))
        if args.what == "predict" and args.checkpoint:
            cli = [child("predict_cli", n=args.texts, checkpoint=args.checkpoint, **common) for _ in range(args.rounds)]
            figures = ", ".join(f"{r['texts_per_sec']:,.0f}" for r in cli)
            print(f"charrnn classify predict {args.checkpoint} FILE ({args.texts:,} lines, process start included): "
                  f"{figures} texts/s")
        print("\n| model | charrnn texts/s | PyTorch texts/s | best/best | per-round ratios |\n|---|---|---|---|---|")
        print("\n".join(rows))
        return
    print(f"accuracy: {args.seconds:g} s of training each")
    rows = [("majority class", child("accuracy_majority", **common))]
    try:
        import fasttext  # noqa: F401

        for tuned in (False, True):
            result = child("accuracy_fasttext", tuned=tuned, **common)
            name = "fastText -minn 2 -maxn 5" + (" -epoch 25 -lr 0.5" if tuned else " (default epoch 5, lr 0.1)")
            rows.append((f"{name}, {result['seconds']:.1f} s", result))
    except ImportError:
        print("fastText is not installed (pip install fasttext-wheel): its rows are left out")
    for options in args.options or [""]:
        result = child("accuracy_charrnn", seconds=args.seconds, options=options.split(), **common)
        print(f"charrnn classify train {options or '(defaults)'}: checkpoint {result['checkpoint']}")
        rows.append((f"charrnn classify {options or '(defaults)'}, {args.seconds:g} s", result))
    rows.append((f"PyTorch BiLSTM script, H={args.hidden}, dropout {args.torch_dropout:g}, {args.seconds:g} s",
                 child("accuracy_torch", seconds=args.seconds, cell="lstm", dropout=args.torch_dropout, **common)))
    print("\n| model | test accuracy | test macro-F1 |\n|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} |")


if __name__ == "__main__":
    main()
