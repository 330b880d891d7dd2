"""serve: what `charrnn serve` costs over calling the library, and how it holds under load and abuse.

    python -m benchmarks serve --markdown               # five to ten minutes on 2 cores
    python -m benchmarks serve --repeat 7 --length 1000 --load-rounds 5

For each model (random weights: speed does not depend on what a model learnt), each round times, in turn: the
library's `generate` in this process; POST /v1/generate to a `charrnn serve` subprocess on 127.0.0.1; the same with
"stream": true (and the time to its first event); and two streaming requests at once (their characters together
per second). Each ratio is the best round's speed over the library's best round, with the range of the per-round
ratios. No PyTorch peer: the library is the reference. The whole suite runs without the forced OpenBLAS kernel.

Then the load table (serve_load.py): an LSTM 128 × 2 server answering 200-character requests from 1, 8 and 50
clients at once, alone, while 500 slow connections are held, and while four scoring clients hang up.
"""

import http.client
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks import harness
from benchmarks.serve_load import load_rows, start_server

MODELS = [("lstm", 128, 2), ("gru", 512, 2)]


def post(port, body):
    """Seconds to the whole answer, seconds to its first event, the answer's text."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/generate", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    first = response.fp.readline() if body.get("stream") else b""
    first_at = time.perf_counter() - started
    data = (first + response.read()).decode()
    conn.close()
    if body.get("stream"):
        text = "".join(json.loads(line[6:])["text"] for line in data.split("\n")
                       if line.startswith("data: ") and '"text"' in line)
    else:
        text = json.loads(data)["text"]
    return time.perf_counter() - started, first_at, text


def one_round(model, vocab, port, length, seed):
    from charrnn import generate

    body = {"length": length, "temperature": 0.8, "random_seed": seed}
    started = time.perf_counter()
    expected = "".join(generate(model, vocab, "", length=length, temperature=0.8, random_seed=seed))
    library = time.perf_counter() - started
    plain, _, text = post(port, body)
    assert text == expected, "the server's text is not the library's"
    stream, first_at, text = post(port, {**body, "stream": True})
    assert text == expected, "the server's streamed text is not the library's"
    times = [0.0, 0.0]

    def ask(i):
        times[i] = post(port, {**body, "random_seed": seed + i, "stream": True})[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = time.perf_counter() - started
    return {"library": length / library, "json": length / plain, "stream": length / stream,
            "first_ms": 1000 * first_at, "two": 2 * length / both}


def main(argv):
    if any(k in os.environ for k in harness.FORCED) and "--smoke" not in argv:  # the library and the server alike
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", "serve", *argv], harness.child_env())
    ap = harness.parser(__doc__, repeat=5)
    ap.add_argument("--length", type=int, default=2000, help="characters per request [default: 2000]")
    ap.add_argument("--load-rounds", type=int, default=3, help="rounds of the load table, --seconds each [default: 3]")
    args = harness.start(ap, argv)
    from charrnn import CharRNN, Checkpoint, ModelConfig, Vocab, save_checkpoint

    vocab = Vocab(tuple(chr(c) for c in range(32, 97)))  # 65 symbols, as tinyshakespeare's
    length = 50 if args.smoke else args.length
    table = harness.Table([("model", "model"), ("library chars/s (best)", "library"), ("JSON answer / library", "json"),
                           ("stream / library", "stream"), ("first event (ms)", "first"),
                           ("2 streams at once, together / library", "two")],
                          title=f"{length} characters per request, temperature 0.8, best of {args.repeat} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        for cell, hidden, layers in [("lstm", 16, 1)] if args.smoke else MODELS:
            model = CharRNN(ModelConfig(vocab_size=len(vocab), model=cell, hidden_size=hidden, num_layers=layers),
                            rng=np.random.default_rng(0))
            path = os.path.join(tmp, f"{cell}{hidden}.npz")
            save_checkpoint(path, Checkpoint(model, vocab, {}))
            server, port = start_server(path, length)
            try:
                one_round(model, vocab, port, length, 1000)  # warm-up: buffers, caches, first-call costs
                rounds = [one_round(model, vocab, port, length, seed) for seed in range(args.repeat)]
            finally:
                server.terminate()
                server.wait()
            library = max(r["library"] for r in rounds)

            def ratio(key, rounds=rounds, library=library):
                per_round = [r[key] / r["library"] for r in rounds]
                return f"{max(r[key] for r in rounds) / library:.2f}× ({min(per_round):.2f}-{max(per_round):.2f})"

            first = sorted(r["first_ms"] for r in rounds)
            table.add(model=f"{cell.upper()} {hidden} × {layers}", library=library, json=ratio("json"),
                      stream=ratio("stream"), first=f"{first[0]:.1f} (median {first[len(first) // 2]:.1f})",
                      two=ratio("two"))
        load = load_table(args, tmp, vocab)
    harness.finish(args, [table, load])


def load_table(args, tmp, vocab):
    from charrnn import CharRNN, Checkpoint, ModelConfig, save_checkpoint

    hidden = 16 if args.smoke else 128
    model = CharRNN(ModelConfig(vocab_size=len(vocab), model="lstm", hidden_size=hidden, num_layers=2),
                    rng=np.random.default_rng(0))
    path = os.path.join(tmp, "load.npz")
    save_checkpoint(path, Checkpoint(model, vocab, {}))
    length, seconds, rounds = (20, 0.1, 1) if args.smoke else (200, args.seconds, args.load_rounds)
    table = harness.Table([("background", "background"), ("clients", "clients"), ("answers/s (best)", "rate"),
                           ("range", "range"), ("p50 ms", "p50"), ("p99 ms", "p99"), ("503s/s", "refused"),
                           ("server CPU (cores)", "cores"), ("server peak RSS (MB)", "rss")],
                          title=f"generate under load: LSTM {hidden} × 2, {length} characters per request, best of "
                                f"{rounds} rounds of {seconds:g} s")
    for row in load_rows(path, length, seconds, rounds, args.smoke):
        table.add(row)
    return table
