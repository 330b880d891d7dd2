"""Fine-tuning against training from scratch: validation loss on a new corpus after the same N steps.

    python benchmarks/finetune.py                       # pretrain 300 s on tinyshakespeare, then 3 seeds
    python benchmarks/finetune.py --base DIR --steps 400 --seeds 0,1,2

The base model is the default recipe trained on tinyshakespeare (../shared/data/tinyshakespeare.txt)
for --base-time seconds (or the checkpoint given with --base). The new corpus is the seven plays of
the bundled data/shakespeare.txt that tinyshakespeare does not hold (Julius Caesar to The Two
Gentlemen of Verona), one file per play in a directory, each play's last 10 % held out: new plays, a
new layout (speakers as "MACBETH." lines, stage directions in brackets) and 16 characters
tinyshakespeare never has (digits, brackets, quotes, ...). Each seed runs, alternately,
``charrnn train PLAYS/ --init-from BASE`` and ``charrnn train PLAYS/`` with the base's shape, the
same options and the same --max-steps, as a user would (subprocesses, one at a time), and reads the
validation loss (nats per character over every held-out tail) at each evaluation from metrics.jsonl.
Loss after N steps does not depend on the machine's load; the seeds' range shows how much it moves.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import machine  # noqa: E402

TINYSHAKESPEARE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
BUNDLED = os.path.join(ROOT, "data", "shakespeare.txt")
NEW_PLAYS = ("JULIUS CAESAR", "MACBETH", "OTHELLO, THE MOOR OF VENICE", "THE MERCHANT OF VENICE",
             "MUCH ADO ABOUT NOTHING", "TWELFTH NIGHT; OR, WHAT YOU WILL", "THE TWO GENTLEMEN OF VERONA")


def write_new_corpus(directory):
    """The seven plays tinyshakespeare does not hold, one file each (01-julius-caesar.txt, ...)."""
    with open(BUNDLED, encoding="utf-8") as f:
        text = f.read()
    starts = [m.start() for m in re.finditer(r"^.+\n\nby William Shakespeare$", text, re.M)] + [len(text)]
    plays = {text[a:b].split("\n", 1)[0]: text[a:b].strip("\n") + "\n" for a, b in zip(starts, starts[1:])}
    for i, title in enumerate(NEW_PLAYS, start=1):
        name = re.sub(r"[^a-z]+", "-", title.lower()).strip("-")
        with open(os.path.join(directory, f"{i:02d}-{name}.txt"), "w", encoding="utf-8") as f:
            f.write(plays[title])


def charrnn(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    subprocess.run([sys.executable, "-m", "charrnn", *args], check=True, env=env)


def val_curve(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["val_loss"] for r in records if "val_loss" in r}, records[-1]["elapsed"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", metavar="DIR", help="a checkpoint trained on tinyshakespeare (default: train one)")
    ap.add_argument("--base-time", type=float, default=300, help="seconds of pretraining when --base is not given")
    ap.add_argument("--steps", type=int, default=400, help="N: steps on the new corpus, both arms")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    print(machine.describe(), flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        plays = os.path.join(tmp, "plays")
        os.mkdir(plays)
        write_new_corpus(plays)
        base = args.base
        if base is None:
            if not os.path.exists(TINYSHAKESPEARE):
                sys.exit(f"{TINYSHAKESPEARE} is not here")
            base = os.path.join(tmp, "base")
            charrnn("train", TINYSHAKESPEARE, "--checkpoint-dir", base, "--max-time", str(args.base_time),
                    "--random-seed", "0", "--sample-length", "0", "-q")
        sys.path.insert(0, ROOT)
        from charrnn.io.checkpoint import load_checkpoint

        ckpt = load_checkpoint(base)
        cfg = ckpt.model.config
        shape = ["--model", cfg.model, "--hidden-size", str(cfg.hidden_size), "--num-layers", str(cfg.num_layers),
                 "--dtype", cfg.dtype]
        print(f"base: {base}: {cfg.model} {cfg.hidden_size}x{cfg.num_layers}, step {ckpt.meta.get('step')}, "
              f"tinyshakespeare val loss {ckpt.meta.get('best_val_loss', float('nan')):.4f}", flush=True)
        runs = {"fine-tune": [], "scratch": []}
        for i, seed in enumerate(seeds):
            order = ("fine-tune", "scratch") if i % 2 == 0 else ("scratch", "fine-tune")  # alternate
            for arm in order:
                ck = os.path.join(tmp, f"{arm}-{seed}")
                common = ["train", plays, "--checkpoint-dir", ck, "--max-steps", str(args.steps), "--eval-every",
                          str(args.eval_every), "--random-seed", str(seed), "--sample-length", "0", "-q"]
                charrnn(*common, *(["--init-from", base] if arm == "fine-tune" else shape))
                curve, elapsed = val_curve(ck)
                runs[arm].append(curve)
                points = ", ".join(f"{step}: {loss:.4f}" for step, loss in sorted(curve.items()))
                print(f"seed {seed} {arm:<9} ({elapsed:.0f} s): val loss after N steps {{{points}}}", flush=True)
    steps = sorted(set.intersection(*(set(c) for arm in runs.values() for c in arm)))
    print(f"\nvalidation loss (nats/char) on the seven new plays' tails after N steps; best of {len(seeds)} seeds "
          "[range]")
    print(f"{'N':>6}  {'from tinyshakespeare':>26}  {'from scratch':>26}  {'scratch / fine-tune':>20}")
    table = []
    for n in steps:
        tuned = [c[n] for c in runs["fine-tune"]]
        scratch = [c[n] for c in runs["scratch"]]
        row = {"steps": n, "fine_tune": tuned, "scratch": scratch}
        table.append(row)
        ratios = [s / t for s, t in zip(scratch, tuned)]  # per seed
        print(f"{n:>6}  {min(tuned):>8.4f} [{min(tuned):.4f}-{max(tuned):.4f}]  "
              f"{min(scratch):>8.4f} [{min(scratch):.4f}-{max(scratch):.4f}]  "
              f"{min(scratch) / min(tuned):>7.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine.describe(), "seeds": seeds, "rows": table}, f, indent=2)


if __name__ == "__main__":
    main()
