"""Behaviour fingerprint of a charrnn tree: hashes of what its public API and commands compute.

    python .ci/fingerprint.py TREE OUTDIR > after.json      # TREE: a checkout (this one: .); OUTDIR: new
    git clone --branch main . ../before && python .ci/fingerprint.py ../before ../fp-before > before.json
    diff before.json after.json                             # nothing printed: the change kept every number

It hashes float64 logits, losses and gradients of rnn/lstm/gru/gpt and the gpt sampler's logits; five short
training runs through `python -m charrnn train` (lstm on 1 worker, gru float64 on 2, rnn with rmsprop, an
exponential schedule, weight averaging and norm clipping, gpt, an lstm resumed), their checkpoints' arrays and
metadata (less paths, times and digests) and metrics; samples, eval and per-line eval of three of them; a
classifier run and its predictions. Only the public API and the commands, so a re-layout can be checked.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np

SMALL = ["--hidden-size", 32, "--num-layers", 2, "--batch-size", 16, "--seq-length", 20, "--max-time", 600,
         "--eval-every", 10, "--sample-length", 0, "--random-seed", 3]
UNSTABLE_META = ("train", "corpus", "corpus_files", "elapsed", "rng_state", "corpus_sha256")


def digest(*items):
    """The first 16 hex digits of the SHA-256 of arrays' bytes and strings."""
    d = hashlib.sha256()
    for item in items:
        d.update(item.encode() if isinstance(item, str) else np.ascontiguousarray(item).tobytes())
    return d.hexdigest()[:16]


def model_hashes(charrnn):
    """Forward and backward passes of each model kind on fixed ids, float64."""
    hashes, ids = {}, np.random.default_rng(0).integers(0, 30, (12, 4))  # (T, B)
    for kind in ("rnn", "lstm", "gru"):
        config = charrnn.ModelConfig(30, kind, 16, 2, dtype="float64", dropout=0.1, weight_drop=0.1)
        model = charrnn.CharRNN(config, rng=np.random.default_rng(1))
        logits, state = model.forward(ids)
        loss, grads, after = model.loss_and_grads(ids[:-1], ids[1:], dropout_rng=np.random.default_rng(2))
        hashes[f"model/{kind}"] = digest(logits, *state, np.float64(loss), grads.flat, *after)
    config = charrnn.GPTConfig(30, hidden_size=16, num_layers=2, num_heads=2, context_length=12, dtype="float64",
                               dropout=0.1)
    gpt = charrnn.CharGPT(config, rng=np.random.default_rng(1))
    logits, _ = gpt.forward(ids)
    loss, grads, _ = gpt.loss_and_grads(ids[:-1], ids[1:], dropout_rng=np.random.default_rng(2))
    hashes["model/gpt"] = digest(logits, np.float64(loss), grads.flat)
    sampler, first = gpt.start_sampling(ids[:5, 0], 3)
    hashes["model/gpt-sampler"] = digest(first, *[sampler.step(np.array([1, 2, 3])).copy() for _ in range(4)])
    return hashes


class Commands:
    """``python -m charrnn`` of TREE, run in OUTDIR."""

    def __init__(self, tree, out):
        self.tree, self.out = tree, out
        self.env = {**os.environ, "PYTHONPATH": tree}

    def __call__(self, *args):
        done = subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], env=self.env, cwd=self.out,
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"charrnn {' '.join(map(str, args))} failed: {done.stderr[-2000:]}")
        return done.stdout

    def checkpoint_hashes(self, name, folder):
        with np.load(os.path.join(self.out, folder, "latest.npz"), allow_pickle=False) as saved:
            arrays = [saved[key] for key in sorted(saved.files) if key != "meta"]
            meta = json.loads(str(saved["meta"]))
        for key in UNSTABLE_META:
            meta.pop(key, None)
        with open(os.path.join(self.out, folder, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        losses = [[row.get("train_loss") for row in rows], [row.get("val_loss") for row in rows]]
        return {name: digest(*arrays, json.dumps(meta, sort_keys=True)), f"{name}/metrics": digest(json.dumps(losses))}


def training_hashes(run, corpus):
    """Five short runs; then samples and evaluations of three of them."""
    hashes = {}
    runs = {
        "lstm-1": ("a", ["--model", "lstm", *SMALL, "--max-steps", 20, "--workers", 1]),
        "gru-2workers": ("b", ["--model", "gru", *SMALL, "--max-steps", 20, "--workers", 2, "--dtype", "float64"]),
        "rnn-rmsprop-avg": ("c", ["--model", "rnn", *SMALL, "--max-steps", 20, "--optimizer", "rmsprop",
                                  "--lr-schedule", "exponential", "--average", 5, "--clip-mode", "norm",
                                  "--grad-clip", 1]),
        "gpt": ("d", ["--model", "gpt", "--hidden-size", 32, "--num-layers", 2, "--num-heads", 2, "--batch-size", 8,
                      "--seq-length", 32, "--max-steps", 20, "--eval-every", 10, "--sample-length", 0,
                      "--random-seed", 3]),
    }
    for name, (folder, options) in runs.items():
        run("train", corpus, *options, "--checkpoint-dir", folder)
        hashes.update(run.checkpoint_hashes(f"train/{name}", folder))
    run("train", corpus, "--model", "lstm", *SMALL, "--max-steps", 10, "--checkpoint-dir", "e", "--workers", 1)
    run("train", corpus, "--resume", "--max-steps", 20, "--checkpoint-dir", "e")
    hashes.update(run.checkpoint_hashes("train/lstm-resumed", "e"))
    for folder in "abd":
        hashes[f"sample/{folder}"] = digest(run("sample", folder, "--seed", "Romeo.", "--length", 200, "--random-seed",
                                                5, "--num-samples", 3, "--temperature", 0.8, "--top-k", 10))
        scores = json.loads(run("eval", folder, corpus, "--json"))
        hashes[f"eval/{folder}"] = digest(json.dumps({key: scores[key] for key in ("loss", "chars", "oov")}))
        lines = run("eval", folder, corpus, "--per-line", "--reset-per-line", "--json").splitlines()[:-1]
        hashes[f"eval-lines/{folder}"] = digest("\n".join(json.dumps(json.loads(line)) for line in lines))
    return hashes


def classifier_hashes(run, data):
    run("classify", "train", os.path.join(data, "names.train.txt"), "--max-steps", 30, "--eval-every", 15,
        "--random-seed", 1, "--checkpoint-dir", "k", "--hidden-size", 32)
    with np.load(os.path.join(run.out, "k", "latest.npz"), allow_pickle=False) as saved:
        arrays = [saved[key] for key in sorted(saved.files) if key != "meta"]
    predictions = run("classify", "predict", "k", os.path.join(data, "names.test.txt"), "-k", "2", "--prob")
    return {"classify": digest(*arrays), "classify/predict": digest(predictions)}


def main(tree, out):
    tree, out = os.path.abspath(tree), os.path.abspath(out)
    os.makedirs(out, exist_ok=False)
    sys.path.insert(0, tree)
    import charrnn  # the tree's own package, not an installed one

    corpus = os.path.join(out, "corpus.txt")
    with open(os.path.join(tree, "data", "shakespeare.txt"), encoding="utf-8") as f, open(corpus, "w") as g:
        g.write(f.read(60000))
    run = Commands(tree, out)
    hashes = {**model_hashes(charrnn), **training_hashes(run, corpus), **classifier_hashes(run, run.tree + "/data")}
    print(json.dumps(hashes, indent=1, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
