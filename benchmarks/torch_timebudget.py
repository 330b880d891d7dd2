"""PyTorch time-budget recipe: how low does validation loss get in N seconds?

The peer side of charrnn's learning-speed comparison.  Recipe:

* corpus: tinyshakespeare (path from ``--data``); vocabulary = sorted distinct
  characters of the whole file; first 90% train, last 10% validation;
* model: Embedding(V, H) -> nn.LSTM(H, H, num_layers=L, batch_first=True)
  -> Linear(H, V);
* Adam lr 2e-3, gradient-norm clipping at 5, mean cross-entropy;
* batches: the training text is cut into B contiguous streams; each step takes
  the next T characters of every stream, with the hidden state carried across
  chunks (detached) and reset at the start of each epoch;
* training runs for ``--max-time`` seconds of training wall time (validation
  time excluded); validation loss is measured at each ``--report-at``
  checkpoint (in training seconds) and at the end;
* validation loss = mean nats/char over the WHOLE validation tail: every
  character after the first is predicted once.  The tail is split into B
  contiguous streams evaluated in T-long chunks with the state carried, and the
  few characters left over are evaluated after the last stream, continuing
  from its state.

Run ``python benchmarks/torch_timebudget.py --help`` for the options; import
and call ``run(...)`` to get the same numbers as a dict.  torch is imported
lazily, so importing this module never needs torch.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import (  # noqa: E402,F401  (torch_available: part of this module's API)
    DEFAULT_CORPUS,  # noqa: E402
    torch_available,
    write_json,
)


def _parse_checkpoints(spec: str | list | tuple | None) -> list[float]:
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s.strip()]
    return sorted({float(s) for s in spec})


def load_corpus(path: str = DEFAULT_CORPUS, val_frac: float = 0.1):
    """Return (train_ids, val_ids, chars) as int64 numpy arrays + vocab list."""
    import numpy as np

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    chars = sorted(set(text))
    lookup = {ch: i for i, ch in enumerate(chars)}
    ids = np.fromiter((lookup[ch] for ch in text), dtype=np.int64, count=len(text))
    n_train = int(len(ids) * (1.0 - val_frac))
    return ids[:n_train], ids[n_train:], chars


def _build_model(vocab: int, hidden: int, layers: int):
    import torch.nn as nn

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, hidden)
            self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, x, state=None):
            out, state = self.lstm(self.embed(x), state)
            return self.head(out), state

    return CharLSTM()


def evaluate(model, val_ids, batch: int, seq: int) -> float:
    """Mean nats/char over every prediction in ``val_ids`` (len(val_ids)-1 of them)."""
    import torch
    import torch.nn.functional as F

    vocab = model.head.out_features
    n_pred = len(val_ids) - 1
    streams = max(1, min(batch, n_pred))
    per = n_pred // streams
    rest = n_pred - streams * per
    x_all = torch.from_numpy(val_ids[:-1])
    y_all = torch.from_numpy(val_ids[1:])
    x = x_all[: streams * per].reshape(streams, per)
    y = y_all[: streams * per].reshape(streams, per)

    was_training = model.training
    model.eval()
    total = 0.0
    state = None
    with torch.no_grad():
        for pos in range(0, per, seq):
            logits, state = model(x[:, pos : pos + seq], state)
            total += F.cross_entropy(logits.reshape(-1, vocab),
                                     y[:, pos : pos + seq].reshape(-1), reduction="sum").item()
        if rest:
            # The leftover predictions directly follow the last stream: carry its state.
            if state is None:
                last = None
            else:
                last = tuple(s[:, -1:, :].contiguous() for s in state)
            xr = x_all[streams * per :].reshape(1, rest)
            yr = y_all[streams * per :].reshape(1, rest)
            logits, _ = model(xr, last)
            total += F.cross_entropy(logits.reshape(-1, vocab), yr.reshape(-1),
                                     reduction="sum").item()
    model.train(was_training)
    return total / n_pred


def run(
    hidden: int = 512,
    layers: int = 1,
    batch: int = 32,
    seq: int = 100,
    max_time: float = 120.0,
    report_at: str | list | tuple | None = "60,120",
    seed: int = 0,
    lr: float = 2e-3,
    clip: float = 5.0,
    data: str = DEFAULT_CORPUS,
    threads: int | None = None,
    log=None,
) -> dict:
    """Train for ``max_time`` seconds of training time; return a result dict.

    ``result['checkpoints']`` is a list of dicts, one per reached checkpoint
    plus the final one, each with train_seconds, steps, chars, train_loss
    (mean over the steps since the previous checkpoint), val_loss (nats/char)
    and val_bpc (bits/char).
    """
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    np.random.seed(seed)

    train_ids, val_ids, chars = load_corpus(data)
    vocab = len(chars)
    stream_len = len(train_ids) // batch
    if stream_len < seq + 1:
        raise ValueError("training text too short for this batch/seq")
    streams = torch.from_numpy(train_ids[: batch * stream_len].reshape(batch, stream_len))
    chunks_per_epoch = (stream_len - 1) // seq

    model = _build_model(vocab, hidden, layers)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_params = sum(p.numel() for p in model.parameters())

    checkpoints = [c for c in _parse_checkpoints(report_at) if c < max_time]
    results: list[dict] = []
    train_time = 0.0
    train_cpu = 0.0
    steps = 0
    epoch = 0
    chunk = 0
    state = None
    loss_sum, loss_n = 0.0, 0

    def checkpoint(label):
        nonlocal loss_sum, loss_n
        t0 = time.perf_counter()
        val = evaluate(model, val_ids, batch, seq)
        eval_s = time.perf_counter() - t0
        row = {
            "checkpoint": label,
            "train_seconds": round(train_time, 3),
            "train_cpu_seconds": round(train_cpu, 3),
            "steps": steps,
            "epochs": round(epoch + chunk / chunks_per_epoch, 4),
            "chars": steps * batch * seq,
            "train_loss": loss_sum / loss_n if loss_n else float("nan"),
            "val_loss": val,
            "val_bpc": val / math.log(2),
            "eval_seconds": round(eval_s, 3),
        }
        results.append(row)
        loss_sum, loss_n = 0.0, 0
        if log:
            log(f"  t={row['train_seconds']:8.1f}s steps={steps:6d} "
                f"train={row['train_loss']:.4f} val={val:.4f} nats/char "
                f"({row['val_bpc']:.3f} bpc, eval {eval_s:.1f}s)")

    while train_time < max_time:
        if chunk >= chunks_per_epoch:  # new epoch: start the streams again, fresh state
            epoch += 1
            chunk = 0
            state = None
        t0 = time.perf_counter()
        c0 = time.process_time()
        pos = chunk * seq
        x = streams[:, pos : pos + seq]
        y = streams[:, pos + 1 : pos + seq + 1]
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        state = tuple(s.detach() for s in state)
        train_time += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        loss_sum += loss.item()
        loss_n += 1
        steps += 1
        chunk += 1
        while checkpoints and train_time >= checkpoints[0]:
            checkpoints.pop(0)
            checkpoint("report")
    checkpoint("final")

    return {
        "recipe": "torch Embedding+LSTM+Linear, Adam, clip_grad_norm",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data": data,
        "vocab": vocab,
        "train_chars": int(len(train_ids)),
        "val_chars": int(len(val_ids)),
        "hidden": hidden,
        "layers": layers,
        "batch": batch,
        "seq": seq,
        "lr": lr,
        "clip": clip,
        "seed": seed,
        "max_time": max_time,
        "params": n_params,
        "train_chars_per_sec": steps * batch * seq / train_time if train_time else 0.0,
        "checkpoints": results,
    }


def format_table(res: dict) -> str:
    lines = [
        f"torch time budget: LSTM H={res['hidden']} L={res['layers']} B={res['batch']} "
        f"T={res['seq']} params={res['params']:,} threads={res['threads']} "
        f"max_time={res['max_time']}s",
        f"{'train_s':>9} {'steps':>7} {'epochs':>7} {'chars':>11} {'train_loss':>10} "
        f"{'val_loss':>9} {'val_bpc':>8}",
    ]
    for r in res["checkpoints"]:
        lines.append(
            f"{r['train_seconds']:9.1f} {r['steps']:7d} {r['epochs']:7.3f} {r['chars']:11,d} "
            f"{r['train_loss']:10.4f} {r['val_loss']:9.4f} {r['val_bpc']:8.3f}"
        )
    lines.append(f"training throughput: {res['train_chars_per_sec']:,.0f} chars/s")
    if res["checkpoints"]:
        last = res["checkpoints"][-1]
        lines.append(f"process CPU time during training: {last['train_cpu_seconds']:.1f}s "
                     f"for {last['train_seconds']:.1f}s wall "
                     "(a low ratio on a shared machine hints at contention)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="PyTorch LSTM time-budget baseline on tinyshakespeare.")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=100)
    ap.add_argument("--max-time", type=float, default=120.0,
                    help="training wall seconds, validation excluded (default %(default)s)")
    ap.add_argument("--report-at", default="60,120",
                    help="comma-separated training seconds at which to evaluate (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--data", default=os.environ.get("CHARRNN_CORPUS", DEFAULT_CORPUS))
    ap.add_argument("--json", metavar="PATH", help="also write the result as JSON ('-' for stdout)")
    args = ap.parse_args(argv)

    if not torch_available():
        print("torch is not installed", file=sys.stderr)
        return 2
    res = run(hidden=args.hidden, layers=args.layers, batch=args.batch, seq=args.seq,
              max_time=args.max_time, report_at=args.report_at, seed=args.seed, lr=args.lr,
              data=args.data, threads=args.threads,
              log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(res))
    if args.json:
        write_json(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
