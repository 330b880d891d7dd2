"""What a model learns in a given wall time: charrnn's recipe against the PyTorch anchors.

    python benchmarks/learning.py --max-time 300                  # default recipe + the 3 torch anchors
    python benchmarks/learning.py --max-time 1800 --no-peers --report-at 60,120,300,900,1800
    python benchmarks/learning.py --max-time 120 --no-peers -- --model gru --learning-rate 4e-3

tinyshakespeare (../shared/data/tinyshakespeare.txt), first 90% train, last 10% validation, loss in nats
per character over the whole validation tail. charrnn runs ``charrnn train`` as a user would (its time
budget includes its own validation passes and checkpoint writes); the PyTorch anchors
(benchmarks/torch_timebudget.py: Embedding + LSTM, Adam 2e-3, grad-norm clip 5) count training time
only. Each run is a subprocess, one at a time; the children run without OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE (see benchmarks/speed.py). Extra arguments after ``--`` go to ``charrnn train``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import machine  # noqa: E402

CORPUS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "tinyshakespeare.txt"))
ANCHORS = [  # (hidden, layers, batch, seq): the PyTorch recipes the issue names
    (512, 1, 32, 100),
    (256, 2, 32, 100),
    (384, 1, 64, 64),
]


def child_env():
    return {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}


def run_charrnn(max_time, extra, eval_every, seed, keep=None):
    with tempfile.TemporaryDirectory() as tmp:
        ck = keep or tmp
        cmd = [sys.executable, "-m", "charrnn", "train", CORPUS, "--checkpoint-dir", ck, "--max-time",
               str(max_time), "--val-frac", "0.1", "--random-seed", str(seed), "--sample-length", "0", "-q",
               *(["--eval-every", str(eval_every)] if eval_every else []), *extra]
        subprocess.run(cmd, check=True, env=child_env())
        with open(os.path.join(ck, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    return [(r["elapsed"], r["val_loss"], r["step"]) for r in records if "val_loss" in r], records[-1]


def run_peer(max_time, hidden, layers, batch, seq, report_at):
    report = ",".join(map(str, report_at))
    code = (
        f"import json, sys; sys.path.insert(0, {HERE!r}); import torch_timebudget as tb; "
        f"print(json.dumps(tb.run(hidden={hidden:d}, layers={layers:d}, batch={batch:d}, seq={seq:d}, "
        f"max_time={float(max_time)!r}, report_at={report!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=child_env())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return [(c["train_seconds"], c["val_loss"], c["steps"]) for c in result["checkpoints"]]


def at_times(curve, marks):
    """The last validation loss measured at or before each mark (None if none yet)."""
    values = []
    for mark in marks:
        seen = [v for t, v, _ in curve if t <= mark * 1.02]
        values.append(seen[-1] if seen else None)
    return values


def print_curves(rows, marks, width, steps=False):
    """The table: each run's validation loss at each mark and its best (and its steps), one row per run."""
    tail = f"{'steps':>8}" if steps else ""
    print(f"{'run':<{width}}" + "".join(f"{int(m):>8}s" for m in marks) + f"{'best':>8}{tail}")
    for row in rows:
        cells = "".join(f"{v:>9.4f}" if v is not None else f"{'-':>9}" for v in at_times(row["curve"], marks))
        best = min(v for _, v, _ in row["curve"])
        print(f"{row['run'][:width]:<{width}}{cells}{best:>8.4f}" + (f"{row['steps']:>8}" if steps else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-time", type=float, default=300)
    ap.add_argument("--report-at", default=None, help="seconds, comma-separated (default: 60,120,...,max)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="charrnn steps between validations (default: the recipe's, as a user gets it)")
    ap.add_argument("--random-seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true", help="skip the PyTorch anchors")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--keep", metavar="DIR", help="charrnn's checkpoint directory, kept (default: a temporary one)")
    ap.add_argument("extra", nargs="*", help="options for charrnn train (after --)")
    args = ap.parse_args()
    print(machine.describe(), flush=True)
    if not os.path.exists(CORPUS):
        sys.exit(f"{CORPUS} is not here")
    marks = [float(m) for m in args.report_at.split(",")] if args.report_at else sorted(
        {m for m in (60, 120, 300, 900, 1800) if m < args.max_time} | {args.max_time})
    rows = []
    curve, last = run_charrnn(args.max_time, args.extra, args.eval_every, args.random_seed, args.keep)
    name = "charrnn " + (" ".join(args.extra) or "default recipe")
    rows.append({"run": name, "curve": curve, "at": at_times(curve, marks), "best": min(v for _, v, _ in curve),
                 "steps": last["step"]})
    if not args.no_peers:
        sys.path.insert(0, HERE)
        import peers

        if not peers.torch_available():
            print("torch is not installed: PyTorch anchors skipped (pip install torch==2.13.0)")
        else:
            for hidden, layers, batch, seq in ANCHORS:
                curve = run_peer(args.max_time, hidden, layers, batch, seq, marks)
                rows.append({"run": f"torch LSTM H={hidden} L={layers} B={batch} T={seq}", "curve": curve,
                             "at": at_times(curve, marks), "best": min(v for _, v, _ in curve),
                             "steps": curve[-1][2]})
    print_curves(rows, marks, 52)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"marks": marks, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
