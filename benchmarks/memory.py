"""memory: peak memory of `charrnn train` against corpus size: it must not grow with the corpus.

    python -m benchmarks memory --markdown              # 10 MB, 100 MB and 1 GB corpora, about 10 minutes
    python -m benchmarks memory --sizes 10,100

Each corpus is the bundled data/shakespeare.txt repeated to the size, in a temporary directory ($TMPDIR). Each run
is `charrnn train` in a subprocess (the default model, 20 steps, --val-frac 0.001: validation reads the whole
held-out part, so a big corpus wants a small fraction); its peak RSS is the kernel's account of that child
(ru_maxrss). Reported: the time of the first run (a streaming vocabulary pass and the encoding into the id cache),
the peak RSS of the first run and of a second run that reuses the cache, and the id cache's size.
"""

import os
import sys
import tempfile

from benchmarks import harness


def make_corpus(path, megabytes):
    with open(harness.BUNDLED, "rb") as f:
        text = f.read()
    target, written = int(megabytes * 2**20), 0
    with open(path, "wb") as out:
        while written < target:
            written += out.write(text[: target - written])


def run_train(corpus, checkpoint_dir, extra):
    cmd = [sys.executable, "-m", "charrnn", "train", corpus, "--checkpoint-dir", checkpoint_dir, "--max-steps", "20",
           "--eval-every", "20", "--val-frac", "0.001", "--sample-length", "0", "-q", "--random-seed", "0",
           "--overwrite", *extra]
    return harness.run_measured(cmd)


def main(argv):
    ap = harness.parser(__doc__)
    ap.add_argument("--sizes", default="10,100,1024", help="corpus sizes in MB, comma-separated [10,100,1024]")
    args = harness.start(ap, argv)
    sizes = [0.1] if args.smoke else [float(s) for s in args.sizes.split(",")]
    extra = ["--max-steps", "2", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4"] if args.smoke else []
    table = harness.Table([("corpus", "corpus"), ("first run (vocabulary pass, encoding)", "first"),
                           ("peak RSS", "first_rss"), ("run on the cached ids", "cached"), ("peak RSS", "cached_rss"),
                           ("id cache", "cache")])
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            corpus, ck = os.path.join(tmp, "corpus.txt"), os.path.join(tmp, "ck")
            make_corpus(corpus, size)
            first, first_rss = run_train(corpus, ck, extra)
            cached, cached_rss = run_train(corpus, ck, extra)
            cache = sum(os.path.getsize(os.path.join(ck, f)) for f in os.listdir(ck) if f.endswith(".ids.npy"))
            table.add(corpus=f"{size:g} MB", first=f"{first:.1f} s", first_rss=f"{first_rss:.0f} MB",
                      cached=f"{cached:.1f} s", cached_rss=f"{cached_rss:.0f} MB", cache=f"{cache / 2**20:.0f} MB")
    harness.finish(args, [table])
