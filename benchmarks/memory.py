"""Peak memory of ``charrnn train`` on big corpora: it must not grow with the corpus.

    python benchmarks/memory.py                 # 10 MB, 100 MB and 1 GB corpora (about 10 minutes)
    python benchmarks/memory.py --sizes 10,100

Each corpus is the bundled data/shakespeare.txt repeated to the size, in a temporary directory. Each run
is ``charrnn train`` in a subprocess (model as the default recipe, 20 steps, --val-frac 0.001: validation
reads the whole held-out part, so a big corpus wants a small fraction); its peak RSS comes from the
kernel's accounting of that child (ru_maxrss). Reported: the time of the first run (a streaming
vocabulary pass and the encoding into the id cache), the peak RSS of the first run and of a second run
that reuses the cache, and the id cache's size.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import machine  # noqa: E402

BUNDLED = os.path.join(HERE, "..", "data", "shakespeare.txt")


def make_corpus(path, megabytes):
    with open(BUNDLED, "rb") as f:
        text = f.read()
    target = megabytes * 2**20
    with open(path, "wb") as out:
        written = 0
        while written < target:
            piece = text[: target - written]
            out.write(piece)
            written += len(piece)


def run_train(corpus, checkpoint_dir):
    cmd = [sys.executable, "-m", "charrnn", "train", corpus, "--checkpoint-dir", checkpoint_dir, "--max-steps", "20",
           "--eval-every", "20", "--val-frac", "0.001", "--sample-length", "0", "-q", "--random-seed", "0",
           "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"charrnn train failed on {corpus}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,1024", help="corpus sizes in MB, comma-separated")
    args = ap.parse_args()
    print(machine.describe(), flush=True)
    print(f"{'corpus':>10}{'first run':>12}{'peak RSS':>11}{'cached run':>12}{'peak RSS':>11}{'id cache':>11}")
    for size in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
            corpus = os.path.join(tmp, "corpus.txt")
            make_corpus(corpus, size)
            ck = os.path.join(tmp, "ck")
            first_time, first_rss = run_train(corpus, ck)
            second_time, second_rss = run_train(corpus, ck)
            cache = sum(os.path.getsize(os.path.join(ck, f)) for f in os.listdir(ck) if f.endswith(".ids.npy"))
            print(f"{size:>8}MB{first_time:>11.1f}s{first_rss:>8.0f} MB{second_time:>11.1f}s{second_rss:>8.0f} MB"
                  f"{cache / 2**20:>8.0f} MB", flush=True)


if __name__ == "__main__":
    main()
