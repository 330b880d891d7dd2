"""speed: training and sampling chars/s of the RNNs against PyTorch scripts of the same models.

    python -m benchmarks speed --markdown                   # the whole table, about 10 minutes on 2 cores
    python -m benchmarks speed --only train --match 'lstm H=128' --repeat 8

train: charrnn's training step (forward, backward, Adam with value clipping) as `charrnn train` takes it, on its
default worker processes, against one-hot input into nn.LSTM / nn.GRU / nn.RNN(input_size=V), Adam, value
clipping, the same B and T. seed: the min-char-rnn set-up (Elman RNN H=100, T=25, B=1, Adagrad) against a
straightforward float64 numpy script of it; charrnn in float32 (the preset) and in float64. sample: `generate` at
batch 1 against the faster of an nn.LSTM and an nn.LSTMCell loop, and "bound": numpy's matrix-vector products of
one character alone, what no sampler on numpy's BLAS can beat. charrnn's peak RSS sums its processes' peaks.
"""

import numpy as np

from benchmarks import harness, peers

TRAIN = [("lstm", 128, 2, 50, 50), ("gru", 128, 2, 50, 50), ("rnn", 128, 2, 50, 50), ("lstm", 512, 2, 64, 100),
         ("gru", 512, 2, 64, 100), ("rnn", 512, 2, 64, 100), ("gru", 512, 2, 32, 100)]  # the last: the default's
SAMPLE = [(128, 2), (512, 2)]
VOCAB = 65


def charrnn_train(cell, hidden, layers, batch, seq, seconds, optimizer="adam", dtype="float32"):
    from charrnn import CharRNN, ModelConfig
    from charrnn.engines.pool import default_workers, make_engine
    from charrnn.io.corpus import StreamBatches
    from charrnn.nn.optim import make_optimizer

    ids, vocab = harness.token_ids(2_000_000 if batch > 1 else 200_000)
    model = CharRNN(ModelConfig(vocab, cell, hidden, layers, dtype=dtype, dropout=0.0), rng=np.random.default_rng(0))
    batches = StreamBatches(ids, batch, seq)
    opt = make_optimizer(optimizer, model.params, {"adam": 2e-3, "adagrad": 0.1}[optimizer], grad_clip=5.0)
    state, chunk = None, 0
    with make_engine(model, batch, seq, default_workers(batch)) as engine:

        def step():
            nonlocal state, chunk
            inputs, targets = batches.chunk(chunk % batches.chunks_per_epoch)
            _, grads, state = engine.loss_and_grads(inputs, targets, state)
            opt.step(model.params, grads)
            chunk += 1
            return batch * seq

        result = harness.rate(step, seconds)
        rss = harness.peak_rss_mb([proc.pid for proc in getattr(engine, "procs", [])])
    return {"chars_per_sec": result, "peak_rss_mb": rss}


def torch_train(cell, hidden, layers, batch, seq, seconds):
    ids, vocab = harness.token_ids(2_000_000)
    step = peers.rnn_train_step(cell, hidden, layers, batch, seq, ids, vocab)
    return {"chars_per_sec": harness.rate(step, seconds, warmup=3), "peak_rss_mb": harness.peak_rss_mb()}


def seed_train(seconds, dtype=None):
    """charrnn's min-char-rnn preset (in ``dtype``), or the plain numpy script (dtype None)."""
    if dtype:
        return charrnn_train("rnn", 100, 1, 1, 25, seconds, optimizer="adagrad", dtype=dtype)
    ids, vocab = harness.token_ids(200_000)
    step = peers.min_char_rnn_step(ids, vocab=vocab)
    return {"chars_per_sec": harness.rate(step, seconds, warmup=20), "peak_rss_mb": harness.peak_rss_mb()}


def charrnn_sample(hidden, layers, seconds, length=2000):
    from charrnn import CharRNN, ModelConfig, Vocab, generate

    vocab = Vocab(tuple(sorted(["\n", *(chr(32 + i) for i in range(VOCAB - 1))])))
    model = CharRNN(ModelConfig(VOCAB, "lstm", hidden, layers), rng=np.random.default_rng(0))
    seed = iter(range(10**9))
    run = lambda: sum(1 for _ in generate(model, vocab, length=length, random_seed=next(seed)))  # noqa: E731
    return {"chars_per_sec": harness.rate(run, seconds, warmup=1), "peak_rss_mb": harness.peak_rss_mb()}


def torch_sample(hidden, layers, mode, seconds, length=200):
    run = peers.lstm_sampler(hidden, layers, 1, mode, length=length)
    return {"chars_per_sec": harness.rate(run, seconds, warmup=1), "peak_rss_mb": harness.peak_rss_mb()}


def products_alone(hidden, layers, seconds):
    """chars/s of nothing but one character's products in float32: each layer's h W_hh (H x 4H), each upper
    layer's x W_xh, and the output layer."""
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((hidden, 4 * hidden)).astype(np.float32) for _ in range(2 * layers - 1)]
    mats.append(rng.standard_normal((hidden, VOCAB)).astype(np.float32))
    x = rng.standard_normal((1, hidden)).astype(np.float32)
    outs = [np.empty((1, m.shape[1]), np.float32) for m in mats]

    def run():
        for _ in range(100):
            for m, out in zip(mats, outs):
                np.matmul(x, m, out=out)
        return 100

    return {"chars_per_sec": harness.rate(run, seconds, warmup=1), "peak_rss_mb": harness.peak_rss_mb()}


def main(argv):
    ap = harness.parser(__doc__, repeat=3, seconds=6.0)
    ap.add_argument("--only", choices=["train", "seed", "sample"], action="append")
    ap.add_argument("--match", metavar="TEXT", help="only the rows whose configuration contains TEXT")
    args = harness.start(ap, argv)
    torch = harness.need_torch()
    only = set(args.only or ["train", "seed", "sample"])
    table = harness.Table([("what", "what"), ("configuration", "config"), ("charrnn chars/s", "ours"),
                           ("peer chars/s", "peer"), ("ratio", "ratio"), ("per round", "per_round"),
                           ("peak RSS charrnn / peer", "rss"), ("peer", "peer_name")])
    wanted = lambda config: (args.match or "") in config  # noqa: E731
    smoke = dict(hidden=16, layers=1, batch=4, seq=8) if args.smoke else None
    train = [("lstm", 128, 2, 50, 50)] if args.smoke else TRAIN
    if "train" in only:
        for cell, h, l, b, t in train:
            config = f"{cell} H={h} L={l} B={b} T={t}"
            if not wanted(config):
                continue
            kw = {"cell": cell, **(smoke or dict(hidden=h, layers=l, batch=b, seq=t)), "seconds": args.seconds}
            contenders = {"ours": (charrnn_train, kw), **({"peer": (torch_train, kw)} if torch else {})}
            results = harness.alternate(contenders, args.repeat)
            if torch:
                table.add(harness.ratio_row(results, "ours", "peer"), what="train", config=config,
                          peer_name=f"torch nn.{cell.upper()}, one-hot, Adam")
            else:
                table.add(what="train", config=config, ours=max(r["chars_per_sec"] for r in results["ours"]))
    if "seed" in only and wanted("seed"):
        results = harness.alternate({"f32": (seed_train, {"seconds": args.seconds, "dtype": "float32"}),
                                     "f64": (seed_train, {"seconds": args.seconds, "dtype": "float64"}),
                                     "peer": (seed_train, {"seconds": args.seconds})}, args.repeat)
        name = "plain numpy min-char-rnn, float64"
        table.add(harness.ratio_row(results, "f32", "peer"), what="train", config="seed: rnn H=100 T=25 B=1",
                  peer_name=name + " (ours: the preset, float32)")
        table.add(harness.ratio_row(results, "f64", "peer"), what="train", config="seed, float64 both",
                  peer_name=name)
    for h, l in [] if "sample" not in only else [(16, 1)] if args.smoke else SAMPLE:
        config = f"lstm H={h} L={l} B=1"
        if not wanted(config):
            continue
        kw = {"hidden": h, "layers": l, "seconds": args.seconds}
        contenders = {"ours": (charrnn_sample, {**kw, **({"length": 20} if args.smoke else {})}),
                      "bound": (products_alone, kw)}
        if torch:
            small = {"length": 20} if args.smoke else {}
            contenders.update(lstm=(torch_sample, {**kw, **small, "mode": "lstm"}),
                              cell=(torch_sample, {**kw, **small, "mode": "lstmcell"}))
        results = harness.alternate(contenders, args.repeat)
        if not torch:
            table.add(what="sample", config=config, ours=max(r["chars_per_sec"] for r in results["ours"]))
            continue
        faster = max(("lstm", "cell"), key=lambda k: max(r["chars_per_sec"] for r in results[k]))
        results["peer"] = [max(p, key=lambda r: r["chars_per_sec"]) for p in zip(results["lstm"], results["cell"])]
        peer_name = f"torch nn.{'LSTMCell' if faster == 'cell' else 'LSTM'} loop (the faster)"
        table.add(harness.ratio_row(results, "ours", "peer"), what="sample", config=config, peer_name=peer_name)
        table.add(harness.ratio_row(results, "bound", "peer"), what="bound", config=f"lstm H={h} L={l}: products alone",
                  peer_name="numpy's matrix-vector products of one character, nothing else")
    harness.finish(args, [table])
