"""items: whole samples (`charrnn sample --stop`): names per second with --unique and --exclude and by beam
search, against plain sampling of the same batch; and what the repetition penalty does to repeats.

    python -m benchmarks items --markdown               # about 8 minutes on 2 cores, training included
    python -m benchmarks items --only throughput --repeat 5
    python -m benchmarks items --only penalty --penalty-train-time 300

throughput: an LSTM 128x2 trained --train-time seconds (default 60) on data/first_names.txt (the checkpoint is
kept in the temporary directory for the next run). 256 names a batch (--stop '\\n', temperature 1): plain
(draw_samples, one batch stepped until its last name ends) against the same with unique=True and
exclude=every training name (repeats and known names drawn again, in batches). Beam search of width K (8, 64)
against plain sampling of a batch of K with the same stop: items per second, and rows x characters stepped per
second (the search's own cost per row and character: log-softmax, ranking K x V candidates, copying states).
penalty: an LSTM 256x2 trained --penalty-train-time seconds (default 120) on tinyshakespeare; 64 samples of 500
characters after a newline, for each temperature and --repetition-penalty R (window 20; and windows 8 and 64
for greedy at R 1.5, temperature 0.8 at R 1.3): distinct-4, the share of the samples' 4-grams that are
distinct (pooled over the 64 samples, and within each sample, averaged), and the samples' bits per character
under the model (what the penalty costs).
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import harness

NAMES = os.path.join(harness.ROOT, "data", "first_names.txt")
SMOKE_MODEL = ["--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "16", "--max-steps",
               "4"]


def trained(corpus, name, options):
    """A checkpoint of `charrnn train corpus *options`, trained once and kept in the temporary directory."""
    key = hashlib.sha256(repr((os.path.getsize(corpus), options)).encode()).hexdigest()[:12]
    ck = os.path.join(tempfile.gettempdir(), f"charrnn-bench-items-{name}-{key}")
    if not os.path.exists(os.path.join(ck, "latest.npz")):
        subprocess.run([sys.executable, "-m", "charrnn", "train", corpus, "--checkpoint-dir", ck, "--sample-length",
                        "0", "-q", "--overwrite", *options], check=True, env=harness.child_env(), cwd=harness.ROOT)
    return ck


def _rates(call, seconds):
    """Per second, over at least ``seconds`` of calls after one untimed call: the sums of the (items, row-steps)
    that ``call()`` returns (a draw's lengths vary with its random seed, so rates are over many draws)."""
    call()
    items = row_steps = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or not items:
        n, steps = call()
        items, row_steps = items + n, row_steps + steps
    elapsed = time.perf_counter() - start
    return {"items_per_sec": items / elapsed, "row_steps_per_sec": row_steps / elapsed}


def names_rate(checkpoint, count, seconds, unique=False, exclude=False):
    """draw_samples(count, --stop '\\n', unique, exclude=the training names): names per second."""
    from charrnn import load_checkpoint
    from charrnn.inference.items import draw_samples, lines_of

    ckpt, excluded, seeds = load_checkpoint(checkpoint), lines_of(NAMES) if exclude else (), iter(range(10**9))

    def call():
        samples = draw_samples(ckpt.model, ckpt.vocab, count, stop="\n", length=100, unique=unique, exclude=excluded,
                               random_seed=next(seeds))
        return sum(1 for _ in samples), 0

    return _rates(call, seconds)


def batch_rate(checkpoint, width, seconds, beam=False):
    """One batch of ``width`` rows, --stop '\\n': a beam search of that width, or ``width`` samples; items and
    rows x characters stepped per second."""
    from charrnn import load_checkpoint
    from charrnn.inference.sample import start_draw

    ckpt, seeds = load_checkpoint(checkpoint), iter(range(10**9))

    def call():
        draw = start_draw(ckpt.model, ckpt.vocab, width, stop="\n", length=100, beam_width=width if beam else None,
                          random_seed=next(seeds))
        for _ in draw:
            pass
        return width, width * draw.steps

    return _rates(call, seconds)


def distinct(texts, n=4):
    """(distinct n-grams / n-grams over all ``texts``, the same within each text, averaged)."""
    grams = [[t[i : i + n] for i in range(len(t) - n + 1)] for t in texts]
    pooled = [g for each in grams for g in each]
    return len(set(pooled)) / len(pooled), float(np.mean([len(set(g)) / len(g) for g in grams]))


def penalty_rows(checkpoint, samples, length):
    """The penalty table's rows: distinct-4 and bits per character for each temperature, penalty and window."""
    from charrnn import load_checkpoint
    from charrnn.inference.sample import start_draw

    ckpt = load_checkpoint(checkpoint)
    settings = [(t, r, 20) for t in (0.0, 0.8, 1.0) for r in (1.0, 1.1, 1.3, 1.5)]
    settings += [(0.0, 1.5, 8), (0.0, 1.5, 64), (0.8, 1.3, 8), (0.8, 1.3, 64)]
    rows = []
    for temperature, penalty, window in settings:
        draw = start_draw(ckpt.model, ckpt.vocab, samples, length=length, temperature=temperature,
                          repetition_penalty=penalty, repetition_window=window, random_seed=1, scores=True)
        texts = ["".join(pieces) for pieces in zip(*draw)]
        pooled, within = distinct(texts)
        bpc = float(-draw.logprob.sum() / draw.chars.sum() / np.log(2))
        rows.append({"temperature": f"{temperature:g}", "penalty": f"{penalty:g}", "window": str(window),
                     "pooled": pooled, "within": within, "bpc": bpc})
    return rows


def main(argv):
    ap = harness.parser(__doc__, repeat=3, seconds=4.0)
    ap.add_argument("--only", choices=["throughput", "penalty"], action="append")
    ap.add_argument("--train-time", type=float, default=60, help="seconds of training for the names model")
    ap.add_argument("--penalty-train-time", type=float, default=120, help="seconds of training for the penalty's")
    args = harness.start(ap, argv)
    only = set(args.only or ["throughput", "penalty"])
    small = args.smoke
    tables = []
    if "throughput" in only:
        tables.append(throughput(args, small))
    if "penalty" in only:
        tables.append(penalty(args, small))
    harness.finish(args, tables)


def throughput(args, small):
    model = SMOKE_MODEL if small else ["--model", "lstm", "--hidden-size", "128", "--num-layers", "2", "--max-time",
                                       str(args.train_time), "--random-seed", "0"]
    ck = trained(NAMES, "names", model)
    table = harness.Table([("what", "what"), ("items/s", "ours"), ("against items/s", "peer"), ("ratio", "ratio"),
                           ("per round", "per_round"), ("row-steps/s", "steps"), ("against row-steps/s", "peer_steps")],
                          "names (LSTM 128x2 on data/first_names.txt), --stop '\\n'")
    count = 16 if small else 256
    kw = {"checkpoint": ck, "count": count, "seconds": args.seconds}
    results = harness.alternate({"plain": (names_rate, kw), "filtered": (names_rate, {**kw, "unique": True,
                                                                                    "exclude": True})}, args.repeat)
    table.add(harness.ratio_row(results, "filtered", "plain", "items_per_sec"),
              what=f"{count} names --unique --exclude TRAIN / {count} names, plain")
    for width in (4,) if small else (8, 64):
        kw = {"checkpoint": ck, "width": width, "seconds": args.seconds}
        results = harness.alternate({"beam": (batch_rate, {**kw, "beam": True}), "plain": (batch_rate, kw)},
                                    args.repeat)
        row = harness.ratio_row(results, "beam", "plain", "items_per_sec")
        steps = [max(r["row_steps_per_sec"] for r in results[name]) for name in ("beam", "plain")]
        table.add(row, steps=steps[0], peer_steps=steps[1],
                  what=f"--beam-width {width} --num-samples {width} / {width} names sampled as one batch")
    return table


def penalty(args, small):
    model = SMOKE_MODEL if small else ["--model", "lstm", "--hidden-size", "256", "--num-layers", "2", "--max-time",
                                       str(args.penalty_train_time), "--random-seed", "0"]
    ck = trained(harness.corpus_path(), "penalty", model)
    table = harness.Table([("temperature", "temperature"), ("--repetition-penalty", "penalty"),
                           ("--repetition-window", "window"), ("distinct-4, all samples", "pooled"),
                           ("distinct-4 within a sample", "within"), ("bits/char under the model", "bpc")],
                          "64 samples x 500 characters, LSTM 256x2 on tinyshakespeare")
    for row in penalty_rows(ck, 8 if small else 64, 20 if small else 500):
        table.add(row)
    return table
