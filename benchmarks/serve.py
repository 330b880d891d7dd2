"""What `charrnn serve` costs over calling the library: generation speed through HTTP, side by side.

    python benchmarks/serve.py                 # about a minute on 2 cores
    python benchmarks/serve.py --rounds 3 --length 1000

For each model (random weights: speed does not depend on what a model learnt), each round times, in
turn: the library's ``generate`` in this process; ``POST /v1/generate`` to a ``charrnn serve``
subprocess; the same with ``"stream": true`` (and the time to its first event); and two streaming
requests at once (their characters together per second). Each figure is the best of the rounds over
the library's best, with the range of the per-round ratios (the machine is shared and noisy). It runs
without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, as benchmarks/speed.py's children do.
"""

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from charrnn.io.checkpoint import Checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.rnn import CharRNN, ModelConfig
from charrnn.sample import generate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

MODELS = [("lstm", 128, 2), ("gru", 512, 2)]
VOCAB = Vocab(tuple(chr(c) for c in range(32, 97)))  # 65 symbols, as tinyshakespeare's


def start_server(checkpoint, length):
    process = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", checkpoint, "--port", "0", "--quiet", "--max-length", str(length)],
        stdout=subprocess.PIPE, text=True)
    port = int(re.search(r":(\d+)/", process.stdout.readline()).group(1))
    return process, port


def post(port, body):
    """Seconds to the whole answer, seconds to its first byte of text, the answer's text."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/generate", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    first = response.fp.readline() if body.get("stream") else b""
    first_at = time.perf_counter() - started
    data = first + response.read()
    conn.close()
    if body.get("stream"):
        text = "".join(json.loads(line[6:])["text"] for line in data.decode().split("\n")
                       if line.startswith("data: ") and '"text"' in line)
    else:
        text = json.loads(data)["text"]
    return time.perf_counter() - started, first_at, text


def one_round(model, port, length, seed):
    body = {"length": length, "temperature": 0.8, "random_seed": seed}
    started = time.perf_counter()
    expected = "".join(generate(model, VOCAB, "", length, 0.8, random_seed=seed))
    library = time.perf_counter() - started
    plain, _, text = post(port, body)
    assert text == expected
    stream, first_at, text = post(port, {**body, "stream": True})
    assert text == expected
    results = [None, None]

    def ask(i):
        results[i] = post(port, {**body, "random_seed": seed + i, "stream": True})[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = time.perf_counter() - started
    return {"library": length / library, "json": length / plain, "stream": length / stream,
            "first_ms": 1000 * first_at, "two_streams": 2 * length / both}


def ratio_text(rounds, key):
    """Best-of-rounds speed over the library's best-of-rounds, and the range of the per-round ratios."""
    best = max(r[key] for r in rounds) / max(r["library"] for r in rounds)
    per_round = [r[key] / r["library"] for r in rounds]
    return f"{best:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"


def main(argv=None):
    forced = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # an old kernel forced on some machines here: as speed.py,
    if any(k in os.environ for k in forced):  # run (library and server alike) with the kernel numpy would pick
        env = {k: v for k, v in os.environ.items() if k not in forced}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--length", type=int, default=2000, help="characters per request")
    args = ap.parse_args(argv)
    print(f"# {machine.describe()}")
    print(f"# {args.rounds} rounds, {args.length} characters per request, temperature 0.8")
    print("| model | library chars/s (best) | JSON answer / library | stream / library | first event (ms) "
          "| 2 streams at once, together / library |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cell, hidden, layers in MODELS:
            config = ModelConfig(vocab_size=len(VOCAB), model=cell, hidden_size=hidden, num_layers=layers)
            model = CharRNN(config, rng=np.random.default_rng(0))
            path = os.path.join(tmp, f"{cell}{hidden}.npz")
            save_checkpoint(path, Checkpoint(model, VOCAB, {}))
            process, port = start_server(path, args.length)
            try:
                one_round(model, port, args.length, 1000)  # warm-up: buffers, caches, first-call costs
                rounds = [one_round(model, port, args.length, seed) for seed in range(args.rounds)]
            finally:
                process.terminate()
                process.wait()
            best = max(rounds, key=lambda r: r["library"])

            first = sorted(r["first_ms"] for r in rounds)
            print(f"| {cell.upper()} {hidden} x {layers} | {best['library']:,.0f} | {ratio_text(rounds, 'json')} | "
                  f"{ratio_text(rounds, 'stream')} | {first[0]:.1f} (median {first[len(first) // 2]:.1f}) | "
                  f"{ratio_text(rounds, 'two_streams')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
