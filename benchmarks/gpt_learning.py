"""What --model gpt learns in a given wall time, against the nanoGPT-style PyTorch model in the same run.

    flock /work/signals/bench.lock python benchmarks/gpt_learning.py --max-time 300
    python benchmarks/gpt_learning.py --max-time 300 --no-peer -- --preset nanogpt-cpu

tinyshakespeare, first 90 % train, last 10 % validation, nats per character over the whole validation
tail, as benchmarks/learning.py measures; charrnn runs ``charrnn train --model gpt`` as a user would
(its time budget includes its validation passes and checkpoint writes). The peer (gpt_peer.py) is the
same shape as charrnn's run (read back from its checkpoint), trained as nanoGPT trains
shakespeare_char: random windows, AdamW (0.9, 0.99) with weight decay 0.1 on the matrices, 100 warm-up
steps, cosine decay to a tenth, gradient-norm clipping at 1.0; its budget counts training time only.
Both are scored with the same sliding windows (charrnn/evaluate.py, ``window_nlls``: windows of P
characters placed every P // 2), so the two numbers measure the same thing.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import learning  # noqa: E402
from learning import child_env, print_curves, run_charrnn  # noqa: E402

# the corpus beside the repository (../shared/data), or beside a worktree's parent (../../shared/data)
CORPUS = next((p for p in (os.path.join(HERE, *up, "shared", "data", "tinyshakespeare.txt")
                           for up in ((os.pardir, os.pardir), (os.pardir, os.pardir, os.pardir)))
               if os.path.exists(p)), learning.CORPUS)
learning.CORPUS = CORPUS  # run_charrnn trains on it


def torch_window_nll(model, ids, context, batch=64):
    """Mean -log p over ids[1:] with charrnn's window placement (see evaluate.window_nlls)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    P, S = context, max(1, context // 2)
    windows, t, end = [], 1, len(ids)
    while t < end:
        a = 0 if t <= P else ((t - P - 1) // S + 1) * S
        stop = min(end, a + P + 1)
        windows.append((a, t, stop))
        t = stop
    total = 0.0
    model.eval()
    with torch.no_grad():
        full = [w for w in windows if w[2] - w[0] == P + 1]
        for b in range(0, len(full), batch):
            group = full[b : b + batch]
            rows = torch.from_numpy(np.array([a for a, _, _ in group])[:, None] + np.arange(P + 1))
            window = ids[rows]  # (W, P+1)
            logp = F.log_softmax(model(window[:, :-1])[0], dim=-1)  # (W, P, V)
            nll = -logp.gather(2, window[:, 1:, None])[..., 0]
            for j, (a, t, _) in enumerate(group):
                total += nll[j, t - a - 1 :].sum().item()
        for a, t, stop in windows:
            if stop - a != P + 1:
                window = ids[a:stop][None]
                logp = F.log_softmax(model(window[:, :-1])[0], dim=-1)
                total += -logp.gather(2, window[:, 1:, None])[0, t - a - 1 :, 0].sum().item()
    model.train()
    return total / (len(ids) - 1)


def run_peer(layers, heads, width, context, batch, lr, dropout, max_time, marks, seed=0, threads=None):
    """Train the nanoGPT-style model for ``max_time`` seconds of training; [(seconds, val loss, steps)]."""
    import gpt_peer
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    with open(CORPUS, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    n = int(len(data) * 0.9)
    train, val = data[:n], data[n:]
    model = gpt_peer.build(len(chars), width, layers, heads, context, dropout)
    opt = gpt_peer.optimizer(model, lr)
    gen = torch.Generator().manual_seed(seed)
    curve, train_time, steps = [], 0.0, 0
    pending = sorted(m for m in marks if m < max_time)
    while train_time < max_time:
        start = time.perf_counter()
        warmup = min(1.0, (steps + 1) / 100)
        progress = min(1.0, train_time / max_time)
        for group in opt.param_groups:  # warm-up, then cosine from lr to lr / 10 over the time budget
            group["lr"] = lr * warmup * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        starts = torch.randint(len(train) - context - 1, (batch,), generator=gen)
        x = torch.stack([train[i : i + context] for i in starts])
        y = torch.stack([train[i + 1 : i + 1 + context] for i in starts])
        gpt_peer.train_step(model, opt, x, y)
        steps += 1
        train_time += time.perf_counter() - start
        if pending and train_time >= pending[0]:
            pending.pop(0)
            curve.append((train_time, torch_window_nll(model, val, context), steps))
    curve.append((train_time, torch_window_nll(model, val, context), steps))
    return curve


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-time", type=float, default=300)
    ap.add_argument("--report-at", default=None, help="seconds, comma-separated (default: 60,120,...,max)")
    ap.add_argument("--random-seed", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true", help="skip the PyTorch model")
    ap.add_argument("--peer-lr", type=float, default=None, help="the peer's peak rate [default: charrnn's]")
    ap.add_argument("--peer-threads", type=int, default=1,
                    help="PyTorch threads for the peer; 0: its default [default: 1, the faster on the shared 2-core "
                    "machine: benchmarks/gpt.py]")
    ap.add_argument("--keep", metavar="DIR", help="charrnn's checkpoint directory, kept")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--peer-child", help=argparse.SUPPRESS)
    ap.add_argument("extra", nargs="*", help="options for charrnn train (after --)")
    args = ap.parse_args()
    if args.peer_child:
        print(json.dumps(run_peer(**json.loads(args.peer_child))))
        return
    if not os.path.exists(CORPUS):
        sys.exit(f"{CORPUS} is not here")
    import machine

    print(machine.describe())
    marks = [float(m) for m in args.report_at.split(",")] if args.report_at else sorted(
        {m for m in (60, 120, 300, 900, 1800) if m < args.max_time} | {args.max_time})
    keep = args.keep or os.path.join("/tmp", f"gpt-learning-{os.getpid()}")
    curve, last = run_charrnn(args.max_time, ["--model", "gpt", *args.extra], None, args.random_seed, keep)
    rows = [{"run": "charrnn --model gpt " + " ".join(args.extra), "curve": curve, "steps": last["step"]}]
    sys.path.insert(0, os.path.dirname(HERE))
    from charrnn.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(os.path.join(keep, "latest.npz"))
    cfg, train_cfg = ckpt.model.config, ckpt.meta["train"]
    print(f"charrnn: {cfg.num_layers} layers, {cfg.num_heads} heads, {cfg.hidden_size} wide, context "
          f"{cfg.context_length}, batch {train_cfg['batch_size']}, learning rate {train_cfg['learning_rate']}, "
          f"dropout {cfg.dropout}; {last['step']} steps")
    if not args.no_peer:
        spec = {"layers": cfg.num_layers, "heads": cfg.num_heads, "width": cfg.hidden_size,
                "context": cfg.context_length, "batch": train_cfg["batch_size"],
                "lr": args.peer_lr or train_cfg["learning_rate"], "dropout": cfg.dropout,
                "max_time": args.max_time, "marks": marks, "seed": args.random_seed,
                "threads": args.peer_threads}
        out = subprocess.run([sys.executable, __file__, "--peer-child", json.dumps(spec)], check=True,
                             capture_output=True, text=True, env=child_env())
        curve = json.loads(out.stdout.strip().splitlines()[-1])
        threads = args.peer_threads or "default"
        rows.append({"run": f"torch nanoGPT-style, same shape, lr {spec['lr']}, {threads} threads", "curve": curve,
                     "steps": curve[-1][2]})
    print_curves(rows, marks, 60, steps=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"marks": marks, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
