"""classify: `charrnn classify` against a PyTorch script of the same model on the shipped names data.

    python -m benchmarks classify --markdown                   # all three parts, about 10 minutes on 2 cores
    python -m benchmarks classify --only speed --repeat 3 --seconds 6

The peer (benchmarks/peers.py) is one-hot characters into nn.LSTM / nn.GRU(bidirectional=True) over packed
sequences, h_n of both directions joined (as --pool last), a linear layer, Adam, value clipping: the same model,
optimizer and batches (texts sorted by length, cut into batches). Every figure comes from a fresh process with
--threads BLAS / intra-op threads (numpy's OpenBLAS and PyTorch alike).
accuracy: trained on data/names.train.txt, the best epoch on names.valid.txt kept, scored on names.test.txt:
the majority class, fastText (supervised -minn 2 -maxn 5, where the fasttext package imports), `charrnn classify
train` with each --options, and the PyTorch script, each trained for --train-seconds.
speed: texts/s of a training step (forward, backward, Adam) on the same length-sorted batches of 64.
predict: texts/s of predicting 20,000 names (TextClassifier.predict, batches of up to 512 sorted by length)
against the PyTorch model's forward pass over the same batches; and `charrnn classify predict CHECKPOINT FILE`
end to end (process start included) with the accuracy part's first charrnn checkpoint.
"""

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

from benchmarks import harness, peers

DATA = os.path.join(harness.ROOT, "data")
TRAIN, VALID, TEST = (os.path.join(DATA, f"names.{s}.txt") for s in ("train", "valid", "test"))


def _data(path=TRAIN):
    from charrnn.classify.data import LabelSet, build_vocab, encode_texts, read_labelled

    lines = read_labelled(path)
    labels = LabelSet.from_lines(lines.labels)
    vocab, index = build_vocab(lines.texts), labels.index()
    return lines, labels, vocab, encode_texts(lines.texts, vocab), np.array([index[n[0]] for n in lines.labels])


def _score(probs, labels):
    from charrnn.classify.data import read_labelled
    from charrnn.classify.metrics import evaluate_predictions

    report = evaluate_predictions(probs, read_labelled(TEST).labels, labels)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def _models(cell, hidden, torch_side, dropout=0.0):
    from charrnn.classify.model import Classifier, ClassifierConfig

    lines, labels, vocab, encoded, targets = _data()
    if torch_side:
        import torch

        torch.manual_seed(0)
        model = peers.classifier(len(vocab) + 1, len(labels), cell, hidden, dropout)
    else:
        model = Classifier(ClassifierConfig(len(vocab) + 1, len(labels), cell, hidden), rng=np.random.default_rng(0))
    return lines, labels, vocab, encoded, targets, model


def speed(cell, hidden, batch, seconds, threads, torch_side):
    from charrnn.classify.data import length_buckets, pad_batch
    from charrnn.nn.optim import make_optimizer

    _, labels, vocab, encoded, targets, model = _models(cell, hidden, torch_side)
    if torch_side:
        import torch

        torch.set_num_threads(threads)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
        step = lambda rows: peers.classifier_step(model, optimizer, pad_batch(encoded, rows, len(vocab)), targets)  # noqa: E731
    else:
        optimizer, Y = make_optimizer("adam", model.params, 3e-3), np.eye(len(labels))[targets]

        def step(rows):
            batch = pad_batch(encoded, rows, len(vocab))
            optimizer.step(model.params, model.loss_and_grads(batch.ids, batch.lengths, Y[batch.rows])[1])
            return len(batch.rows)

    order = iter(length_buckets(encoded.lengths, batch, np.random.default_rng([1, 0])) * 1000)
    return {"texts_per_sec": harness.rate(lambda: step(next(order)), seconds, warmup=3)}


def predict(cell, hidden, texts, threads, torch_side):
    from charrnn.classify.data import encode_texts, length_buckets, pad_batch
    from charrnn.classify.predict import TextClassifier

    lines, labels, vocab, _, _, model = _models(cell, hidden, torch_side)
    names = (lines.texts * (texts // len(lines.texts) + 1))[:texts]
    if torch_side:
        import torch

        torch.set_num_threads(threads)

        def run(names):
            encoded = encode_texts(names, vocab)
            peers.classifier_predict(model, (pad_batch(encoded, rows, len(vocab))
                                             for rows in length_buckets(encoded.lengths, 512)))
    else:
        run = TextClassifier(model, vocab, labels).predict
    run(names[:1000])
    start = time.perf_counter()
    run(names)
    return {"texts_per_sec": texts / (time.perf_counter() - start)}


def predict_cli(checkpoint, texts):
    names = (_data()[0].texts * (texts // 1000 + 1))[:texts]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charrnn", "classify", "predict", checkpoint, f.name],
                   stdout=subprocess.DEVNULL, check=True, env=harness.child_env(1), cwd=harness.ROOT)
    elapsed = time.perf_counter() - start
    os.unlink(f.name)
    return {"texts_per_sec": texts / elapsed}


def accuracy_charrnn(seconds, options, checkpoint_dir, threads):
    from charrnn.classify.predict import TextClassifier

    subprocess.run([sys.executable, "-m", "charrnn", "classify", "train", TRAIN, "--valid", VALID, "--max-time",
                    str(seconds), "--checkpoint-dir", checkpoint_dir, "--random-seed", "1", "-q", *options],
                   check=True, env=harness.child_env(threads), cwd=harness.ROOT)
    clf = TextClassifier.load(checkpoint_dir)
    return _score(clf.predict_proba(_data(TEST)[0].texts), clf.labels)


def accuracy_torch(seconds, hidden, dropout, threads):
    """The PyTorch script trained for ``seconds``, validating after each epoch; the best epoch scored."""
    import torch

    from charrnn.classify.data import encode_texts, length_buckets, pad_batch, read_labelled

    torch.set_num_threads(threads)
    _, labels, vocab, encoded, targets, model = _models("lstm", hidden, True, dropout)
    torch.manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    valid, test = read_labelled(VALID), read_labelled(TEST)
    index = labels.index()
    valid_targets = np.array([index.get(names[0], -1) for names in valid.labels])

    def predicted(texts):
        e = encode_texts(texts, vocab)
        batches = (pad_batch(e, rows, len(vocab)) for rows in length_buckets(e.lengths, 512))
        return peers.classifier_predict(model, batches)

    start, epoch, best, best_state = time.perf_counter(), 0, -1.0, None
    while time.perf_counter() - start < seconds:
        for rows in length_buckets(encoded.lengths, 64, np.random.default_rng([1, epoch])):
            peers.classifier_step(model, optimizer, pad_batch(encoded, rows, len(vocab)), targets)
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
        accuracy = float((predicted(valid.texts) == valid_targets).mean())
        if accuracy > best:
            best, best_state = accuracy, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return _score(np.eye(len(labels))[predicted(test.texts)], labels)


def accuracy_fasttext(tuned, threads):
    import fasttext

    from charrnn.classify.data import LabelSet

    start = time.perf_counter()
    model = fasttext.train_supervised(TRAIN, minn=2, maxn=5, thread=threads, verbose=0, seed=1,
                                      **({"epoch": 25, "lr": 0.5} if tuned else {}))
    elapsed = time.perf_counter() - start
    labels = LabelSet(tuple(name[len("__label__") :] for name in model.labels))
    index = labels.index()
    predicted, _ = model.predict(_data(TEST)[0].texts, k=1)
    return {**_score(np.eye(len(labels))[[index[p[0][len("__label__") :]] for p in predicted]], labels),
            "seconds": elapsed}


def accuracy_majority():
    lines, labels, _, _, _ = _data()
    majority = Counter(n for names in lines.labels for n in names).most_common(1)[0][0]
    probs = np.zeros((len(_data(TEST)[0].texts), len(labels)))
    probs[:, labels.index()[majority]] = 1
    return {**_score(probs, labels), "label": majority}


def main(argv):
    ap = harness.parser(__doc__, repeat=3, seconds=6.0)
    ap.add_argument("--only", choices=["accuracy", "speed", "predict"], action="append")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / intra-op threads of every child [default: 1]")
    ap.add_argument("--cells", default="lstm,gru", help="speed, predict: the cells [default: lstm,gru]")
    ap.add_argument("--hidden", type=int, default=128, help="speed, predict: units per direction [default: 128]")
    ap.add_argument("--texts", type=int, default=20_000, help="predict: how many names [default: 20,000]")
    ap.add_argument("--train-seconds", type=float, default=90, help="accuracy: training time of each [default: 90]")
    ap.add_argument("--options", action="append", help="accuracy: `charrnn classify train` options of a charrnn row "
                    "(repeatable) [default: none, and --hidden-size 256 --pool max --dropout 0.4]")
    ap.add_argument("--torch-hidden", type=int, default=256, help="accuracy: the PyTorch script's units [256]")
    ap.add_argument("--torch-dropout", type=float, default=0.4, help="accuracy: the PyTorch script's dropout [0.4]")
    ap.add_argument("--checkpoint", help="predict: the checkpoint `charrnn classify predict` runs [default: the "
                    "accuracy part's first]")
    args = harness.start(ap, argv)
    only, threads, tables = set(args.only or ["accuracy", "speed", "predict"]), args.threads, []
    torch = harness.need_torch("the PyTorch script's rows")
    smoke = {"--max-epochs": "1", "--hidden-size": "8"} if args.smoke else {}
    if args.smoke:
        args.train_seconds, args.texts, args.hidden, args.torch_hidden, args.cells = 0.2, 300, 8, 8, "lstm"
    checkpoint, tmp = args.checkpoint, tempfile.mkdtemp(prefix="charrnn-bench-classify-")
    if "accuracy" in only:
        table = harness.Table([("model", "model"), ("test accuracy", "accuracy"), ("test macro-F1", "macro_f1")],
                              title=f"accuracy, {args.train_seconds:g} s of training each")
        tables.append(table)
        result = harness.run_child(accuracy_majority)
        table.add(result, model=f"majority class ({result['label']})")
        try:
            import fasttext  # noqa: F401

            for tuned in (False, True):
                result = harness.run_child(accuracy_fasttext, tuned=tuned, threads=threads)
                name = "-epoch 25 -lr 0.5 (tuned by hand on valid)" if tuned else "(its defaults: 5 epochs, lr 0.1)"
                table.add(result, model=f"fastText supervised -minn 2 -maxn 5 {name}, {result['seconds']:.1f} s")
        except ImportError:
            print("fastText is not installed (pip install fasttext-wheel): its rows are left out")
        rows = args.options or ["", "--hidden-size 256 --pool max --dropout 0.4"][: 1 if args.smoke else 2]
        for i, options in enumerate(rows):
            opts = options.split()
            opts += [x for k, v in smoke.items() if k not in opts for x in (k, v)]
            directory = os.path.join(tmp, f"charrnn-{i}")
            checkpoint = checkpoint or directory
            result = accuracy_charrnn(args.train_seconds, opts, directory, threads)
            table.add(result, model=f"charrnn classify {options or '(defaults)'}, {args.train_seconds:g} s")
        if torch:
            result = harness.run_child(accuracy_torch, seconds=args.train_seconds, hidden=args.torch_hidden,
                                       dropout=args.torch_dropout, threads=threads)
            table.add(result, model=f"PyTorch BiLSTM script, H={args.torch_hidden}, dropout {args.torch_dropout:g}, "
                      f"{args.train_seconds:g} s")
    for part in [p for p in ("speed", "predict") if p in only]:
        unit = f"batch 64, {args.seconds:g} s a run" if part == "speed" else f"{args.texts:,} texts"
        table = harness.Table([("model", "model"), ("charrnn texts/s", "ours"), ("PyTorch texts/s", "peer"),
                               ("ratio", "ratio"), ("per round", "per_round")],
                              title=f"{part} ({unit}, {threads} thread{'s' if threads > 1 else ''})")
        tables.append(table)
        for cell in args.cells.split(","):
            kw = {"cell": cell, "hidden": args.hidden, "threads": threads, "torch_side": False,
                  **({"batch": 64, "seconds": args.seconds} if part == "speed" else {"texts": args.texts})}
            fn = speed if part == "speed" else predict
            contenders = {"ours": (fn, kw), **({"peer": (fn, {**kw, "torch_side": True})} if torch else {})}
            results = harness.alternate(contenders, args.repeat)
            model = f"Bi{cell.upper()} {args.hidden}"
            if torch:
                table.add(harness.ratio_row(results, "ours", "peer", key="texts_per_sec"), model=model)
            else:
                table.add(model=model, ours=max(r["texts_per_sec"] for r in results["ours"]))
        if part == "predict" and checkpoint and os.path.exists(checkpoint):
            cli = [harness.run_child(predict_cli, checkpoint=checkpoint, texts=args.texts)["texts_per_sec"]
                   for _ in range(args.repeat)]
            table.add(model=f"`charrnn classify predict` CLI, {args.texts:,} lines",
                      ours=f"{min(cli):,.0f}-{max(cli):,.0f}", per_round=f"{len(cli)} runs")
    harness.finish(args, tables)
