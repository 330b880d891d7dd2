"""inspect: what `charrnn neurons --feature` and `charrnn inspect` cost over `charrnn eval` on the same file.

    python -m benchmarks inspect --markdown                    # LSTM 128x2, 1 MB of tinyshakespeare: ~5 minutes
    python -m benchmarks inspect --chars 1000000,4000000       # and 4 MB: the peak memory must not grow with it

An LSTM 128x2 with random weights (speed does not depend on what a model learnt) over tinyshakespeare's
characters reads the first --chars characters of the corpus (repeated where it is shorter), in a fresh
interpreter per measurement: evaluate_file (what `eval` runs); the neurons pass (the line-position feature and
neurons.scan with a Correlation: what `neurons --feature line-position` runs, less its table); and the inspect pass
(inspect_file with the top 5: what `inspect --json` reads, less the printing). One pass each, chars/s and the
process's peak RSS; each ratio is eval's best time over the other's (above 1/3: within 3x of eval).
"""

import os
import tempfile
import time

import numpy as np

from benchmarks import harness


def _setup(chars):
    """The model, its vocabulary and a file of the corpus's first ``chars`` characters (kept for reuse)."""
    from charrnn import CharRNN, ModelConfig, Vocab

    with open(harness.corpus_path(), encoding="utf-8") as f:
        corpus = f.read()
    symbols = tuple(sorted(set(corpus)))
    path = os.path.join(tempfile.gettempdir(), f"charrnn-bench-inspect-{len(corpus)}-{chars}.txt")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write((corpus * (chars // len(corpus) + 1))[:chars])
    model = CharRNN(ModelConfig(len(symbols), "lstm", 128, 2, dropout=0.0), rng=np.random.default_rng(0))
    return model, Vocab(symbols), path


def timed(run):
    start = time.perf_counter()
    chars = run()
    return {"chars_per_sec": chars / (time.perf_counter() - start), "peak_rss_mb": harness.peak_rss_mb()}


def eval_pass(chars):
    from charrnn.inference.evaluate import evaluate_file

    model, vocab, path = _setup(chars)
    return timed(lambda: evaluate_file(model, vocab, path).chars)


def neurons_pass(chars):
    from charrnn.inference.neurons import Correlation, feature_stream, scan
    from charrnn.io.corpus import file_codes

    model, vocab, path = _setup(chars)

    def run():
        correlation = Correlation(model, vocab, feature_stream("line-position", vocab, path))
        rows = scan(model, vocab, file_codes(vocab, path), [correlation])
        correlation.ranking()
        return rows

    return timed(run)


def inspect_pass(chars):
    from charrnn.inference.inspect import inspect_file

    model, vocab, path = _setup(chars)
    return timed(lambda: sum(len(p.codes) for p in inspect_file(model, vocab, path, top_k=5)))


def main(argv):
    ap = harness.parser(__doc__, repeat=3)
    ap.add_argument("--chars", default="1000000", help="characters read, comma-separated sizes [1000000]")
    args = harness.start(ap, argv)
    sizes = [2000] if args.smoke else [int(c) for c in args.chars.split(",")]
    table = harness.Table([("what", "what"), ("chars/s", "ours"), ("eval chars/s", "peer"), ("speed / eval", "ratio"),
                           ("per round", "per_round"), ("peak RSS / eval's", "rss")])
    for chars in sizes:
        results = harness.alternate({"eval": (eval_pass, {"chars": chars}), "neurons": (neurons_pass, {"chars": chars}),
                                     "inspect": (inspect_pass, {"chars": chars})}, args.repeat)
        for name, what in (("neurons", "neurons --feature line-position"), ("inspect", "inspect, top 5")):
            table.add(harness.ratio_row(results, name, "eval"), what=f"{what}, {chars:,} chars, LSTM 128x2")
    harness.finish(args, [table])
