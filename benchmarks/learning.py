"""learning: the validation loss a model reaches in a wall-time budget, or after N fine-tuning steps.

    python -m benchmarks learning --max-time 300                 # the default recipe and 3 PyTorch LSTM anchors
    python -m benchmarks learning --model gpt --max-time 300     # --model gpt and a nanoGPT-style model
    python -m benchmarks learning --max-time 1800 --no-peers --report-at 300,900,1800 -- --dropout 0.35
    python -m benchmarks learning --finetune --base CHECKPOINT --steps 100 --eval-every 25

tinyshakespeare, first 90 % train, last 10 % validation, nats per character over the whole validation tail.
charrnn runs `charrnn train` as a user would (extra options after --); its budget includes its validation passes
and checkpoint writes, the peers' budget is training time only. rnn peers: Embedding + nn.LSTM + Linear, Adam 2e-3,
norm clipping 5, contiguous streams. gpt peer: the same shape as charrnn's run (read from its checkpoint), trained
as nanoGPT trains shakespeare_char (random windows, AdamW (0.9, 0.99), weight decay 0.1, 100 warm-up steps, cosine
to a tenth, norm clipping 1); both scored with the same sliding windows (P characters every P // 2).
--finetune: `charrnn train PLAYS/ --init-from BASE` against `charrnn train PLAYS/` from scratch (the base's shape,
the same options and seed), N steps each, seeds alternating; PLAYS are the seven plays of data/shakespeare.txt
that tinyshakespeare does not hold, one file each (each play's last 10 % held out). BASE: the default recipe
trained --base-time seconds on tinyshakespeare unless --base is given. Loss after N steps does not depend on the
machine's load; the seeds' range shows how much it moves.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

from benchmarks import harness, peers

ANCHORS = [(512, 1, 32, 100), (256, 2, 32, 100), (384, 1, 64, 64)]  # hidden, layers, batch, seq
NEW_PLAYS = ("JULIUS CAESAR", "MACBETH", "OTHELLO, THE MOOR OF VENICE", "THE MERCHANT OF VENICE",
             "MUCH ADO ABOUT NOTHING", "TWELFTH NIGHT; OR, WHAT YOU WILL", "THE TWO GENTLEMEN OF VERONA")
SMOKE_MODEL = ["--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "16", "--max-steps",
               "4", "--eval-every", "2"]


def charrnn_train(corpus, checkpoint_dir, *options):
    """`charrnn train` as a user runs it (quiet, no samples); its validation curve [(elapsed, loss, step)]."""
    subprocess.run([sys.executable, "-m", "charrnn", "train", corpus, "--checkpoint-dir", checkpoint_dir,
                    "--sample-length", "0", "-q", *options], check=True, env=harness.child_env(), cwd=harness.ROOT)
    with open(os.path.join(checkpoint_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [(r["elapsed"], r["val_loss"], r["step"]) for r in records if "val_loss" in r]


def _text(corpus):
    with open(corpus, encoding="utf-8") as f:
        return f.read()


def anchor(corpus, hidden, layers, batch, seq, max_time, marks):
    return {"curve": peers.lstm_anchor(_text(corpus), hidden, layers, batch, seq, max_time, marks)}


def gpt_peer(corpus, threads, **spec):
    import torch

    if threads:
        torch.set_num_threads(threads)
    return {"curve": peers.gpt_for_time(_text(corpus), **spec)}


def at(curve, mark):
    """The last validation loss measured at or before ``mark`` seconds (None before the first)."""
    seen = [loss for t, loss, _ in curve if t <= mark * 1.02]
    return seen[-1] if seen else None


def budget(args, tmp, corpus):
    marks = [float(m) for m in args.report_at.split(",")] if args.report_at else sorted(
        {m for m in (60, 120, 300, 900, 1800) if m < args.max_time} | {args.max_time})
    table = harness.Table([("run", "run"), *((f"val @ {m:g} s", f"at{m:g}") for m in marks), ("best", "best"),
                           ("steps", "steps")], title=f"validation loss, {args.max_time:g} s budget")

    def add(run, curve):
        table.add(run=run, best=min(loss for _, loss, _ in curve), steps=curve[-1][2],
                  **{f"at{m:g}": at(curve, m) for m in marks})

    options = ["--max-time", str(args.max_time), "--val-frac", "0.1", "--random-seed", str(args.random_seed),
               *(["--model", "gpt"] if args.model == "gpt" else []), *(SMOKE_MODEL if args.smoke else []), *args.extra]
    add(f"charrnn {' '.join(options[6:]) or 'default recipe'}", charrnn_train(corpus, tmp, *options))
    if args.no_peers or not harness.need_torch("the PyTorch peers"):
        return table
    if args.model == "gpt":
        from charrnn import load_checkpoint

        ckpt = load_checkpoint(os.path.join(tmp, "latest.npz"))
        cfg, train = ckpt.model.config, ckpt.meta["train"]
        spec = {"layers": cfg.num_layers, "heads": cfg.num_heads, "width": cfg.hidden_size,
                "context": cfg.context_length, "batch": train["batch_size"], "dropout": cfg.dropout,
                "lr": args.peer_lr or train["learning_rate"], "max_time": args.max_time, "marks": marks,
                "seed": args.random_seed}
        curve = harness.run_child(gpt_peer, corpus=corpus, threads=args.peer_threads, **spec)["curve"]
        add(f"torch nanoGPT-style, same shape, lr {spec['lr']:g}, {args.peer_threads or 'default'} threads", curve)
        return table
    for hidden, layers, batch, seq in [(16, 1, 4, 16)] if args.smoke else ANCHORS:
        curve = harness.run_child(anchor, corpus=corpus, hidden=hidden, layers=layers, batch=batch, seq=seq,
                                  max_time=args.max_time, marks=marks)["curve"]
        add(f"torch LSTM H={hidden} L={layers} B={batch} T={seq}", curve)
    return table


def write_plays(directory):
    """The seven plays tinyshakespeare does not hold, one file each (01-julius-caesar.txt, ...)."""
    text = _text(harness.BUNDLED)
    starts = [m.start() for m in re.finditer(r"^.+\n\nby William Shakespeare$", text, re.M)] + [len(text)]
    plays = {text[a:b].split("\n", 1)[0]: text[a:b].strip("\n") + "\n" for a, b in zip(starts, starts[1:])}
    for i, title in enumerate(NEW_PLAYS, start=1):
        with open(os.path.join(directory, f"{i:02d}-{re.sub(r'[^a-z]+', '-', title.lower()).strip('-')}.txt"), "w",
                  encoding="utf-8") as f:
            f.write(plays[title])


def finetune(args, tmp, corpus):
    plays, base = os.path.join(tmp, "plays"), args.base or os.path.join(tmp, "base")
    os.mkdir(plays)
    write_plays(plays)
    small = SMOKE_MODEL[:8] if args.smoke else []
    if not args.base:
        charrnn_train(corpus, base, "--max-time", str(args.base_time), "--random-seed", "0", *small)
    from charrnn import load_checkpoint

    cfg = load_checkpoint(base).model.config
    shape = ["--model", cfg.model, "--hidden-size", str(cfg.hidden_size), "--num-layers", str(cfg.num_layers),
             "--dtype", cfg.dtype]
    curves = {"tuned": [], "scratch": []}
    for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
        for arm in ("tuned", "scratch") if i % 2 == 0 else ("scratch", "tuned"):
            options = ["--max-steps", str(args.steps), "--eval-every", str(args.eval_every), "--random-seed",
                       str(seed), *small[4:], *(["--init-from", base] if arm == "tuned" else shape)]
            curve = charrnn_train(plays, os.path.join(tmp, f"{arm}-{seed}"), *options)
            curves[arm].append({step: loss for _, loss, step in curve})
    table = harness.Table([("N steps", "steps"), ("from tinyshakespeare", "tuned"), ("from scratch", "scratch"),
                           ("scratch / fine-tuned", "ratio_text")],
                          title="validation loss on the new plays after N steps, best of the seeds [range]")
    for n in sorted(set.intersection(*(set(c) for arm in curves.values() for c in arm))):
        tuned, scratch = [c[n] for c in curves["tuned"]], [c[n] for c in curves["scratch"]]
        ratios = [s / t for s, t in zip(scratch, tuned)]
        table.add(steps=str(n), tuned=f"{min(tuned):.4f} [{min(tuned):.4f}-{max(tuned):.4f}]",
                  scratch=f"{min(scratch):.4f} [{min(scratch):.4f}-{max(scratch):.4f}]",
                  ratio_text=f"{min(scratch) / min(tuned):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")
    return table


def main(argv):
    ap = harness.parser(__doc__)
    ap.add_argument("--model", choices=("rnn", "gpt"), default="rnn", help="the default recipe, or --model gpt's")
    ap.add_argument("--max-time", type=float, default=300)
    ap.add_argument("--report-at", help="seconds, comma-separated [default: 60,120,300,900,1800 below the budget]")
    ap.add_argument("--random-seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true", help="charrnn alone")
    ap.add_argument("--peer-lr", type=float, help="gpt: the peer's peak rate [default: charrnn's]")
    ap.add_argument("--peer-threads", type=int, default=0, help="gpt: the peer's PyTorch threads [default: its own]")
    ap.add_argument("--finetune", action="store_true", help="fine-tuning against training from scratch instead")
    ap.add_argument("--base", metavar="CHECKPOINT", help="finetune: the base [default: train one for --base-time]")
    ap.add_argument("--base-time", type=float, default=300)
    ap.add_argument("--steps", type=int, default=100, help="finetune: N, both arms")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("extra", nargs="*", help="options for charrnn train (after --)")
    args = harness.start(ap, argv)
    corpus = harness.corpus_path()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:  # a short excerpt: validation passes take no time
            args.max_time, args.base_time, args.steps, args.eval_every, args.seeds = 0.3, 1, 2, 1, "0"
            with open(os.path.join(tmp, "excerpt.txt"), "w", encoding="utf-8") as f:
                f.write(_text(corpus)[:50_000])
            corpus = f.name
        table = finetune(args, tmp, corpus) if args.finetune else budget(args, os.path.join(tmp, "run"), corpus)
    harness.finish(args, [table])
