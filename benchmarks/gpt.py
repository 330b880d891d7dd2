"""gpt: --model gpt against a PyTorch model of the same shape written as nanoGPT's model.py writes it.

    python -m benchmarks gpt --markdown                       # training and sampling, about 15 minutes on 2 cores
    python -m benchmarks gpt --only train --repeat 2 --seconds 10

train: chars/s of a full step (forward, backward, clipped AdamW update) on tinyshakespeare ids; charrnn as
`charrnn train` takes it, on its default worker processes; the peer (benchmarks/peers.py: c_attn,
scaled_dot_product_attention, tanh GELU, lm_head tied to wte, AdamW, norm clipping) on random windows, with
PyTorch's default threads and with one. sample: 1,000 characters at batch 1 after a one-character seed; charrnn's
key/value-cache sampler against nanoGPT's cache-less `generate` and a PyTorch loop with a preallocated key/value
cache over the same modules (the window slides as charrnn's). Set-ups: nanogpt-cpu (nanoGPT's shakespeare_char CPU
example: 4 layers, 4 heads, 128 wide, context 64, batch 12) and mid (6 layers, 6 heads, 192 wide, context 128,
batch 32). Peak RSS sums charrnn's processes.
"""

import numpy as np

from benchmarks import harness, peers

SETUPS = {"nanogpt-cpu": (4, 4, 128, 64, 12), "mid": (6, 6, 192, 128, 32)}  # layers, heads, width, context, batch
SMOKE_SETUP = (1, 2, 16, 16, 4)
LENGTH = 1000


def _model(shape, vocab=65):
    from charrnn import CharGPT, GPTConfig

    layers, heads, width, context, _ = shape
    config = GPTConfig(vocab, hidden_size=width, num_layers=layers, num_heads=heads, context_length=context)
    return CharGPT(config, rng=np.random.default_rng(0))


def charrnn_train(shape, seconds):
    from charrnn.engines.pool import default_workers, make_engine
    from charrnn.io.corpus import StreamBatches
    from charrnn.nn.optim import make_optimizer

    ids, vocab = harness.token_ids(400_000)
    model, (_, _, _, context, batch) = _model(shape, vocab), shape
    batches = StreamBatches(ids, batch, context)
    opt = make_optimizer("adam", model.params, 1e-3, grad_clip=1.0, weight_decay=0.1)
    chunk = 0
    with make_engine(model, batch, context, default_workers(batch, min_streams=model.min_streams_per_worker)) as engine:

        def step():
            nonlocal chunk
            inputs, targets = batches.chunk(chunk % batches.chunks_per_epoch)
            opt.step(model.params, engine.loss_and_grads(inputs, targets)[1])
            chunk += 1
            return batch * context

        chars_per_sec = harness.rate(step, seconds)
        rss = harness.peak_rss_mb([proc.pid for proc in getattr(engine, "procs", [])])
    return {"chars_per_sec": chars_per_sec, "peak_rss_mb": rss}


def torch_train(shape, seconds, threads=None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    layers, heads, width, context, batch = shape
    ids, vocab = harness.token_ids(400_000)
    torch.manual_seed(0)
    model = peers.gpt(vocab, width, layers, heads, context)
    opt, data, gen = peers.gpt_optimizer(model, 1e-3), torch.tensor(ids), torch.Generator().manual_seed(0)
    chars_per_sec = harness.rate(lambda: peers.gpt_step(model, opt, data, batch, context, gen), seconds)
    return {"chars_per_sec": chars_per_sec, "peak_rss_mb": harness.peak_rss_mb()}


def charrnn_sample(shape, seconds, length=LENGTH):
    model, rng = _model(shape), np.random.default_rng(0)

    def sample():  # generate()'s loop: Gumbel-max picking at temperature 1
        sampler, logits = model.start_sampling(np.array([0]))
        gumbel = rng.gumbel(size=(length, 65))
        for i in range(length):
            logits = sampler.step(int((logits + gumbel[i]).argmax()))
        return length

    return {"chars_per_sec": harness.best_rate(sample, seconds, warmup=0), "peak_rss_mb": harness.peak_rss_mb()}


def torch_sample(shape, seconds, cached, threads=None, length=LENGTH):
    import torch

    if threads:
        torch.set_num_threads(threads)
    layers, heads, width, context, _ = shape
    torch.manual_seed(0)
    model = peers.gpt(65, width, layers, heads, context).eval()
    generate = peers.generate_kv_cache if cached else peers.generate_no_cache

    def sample():
        generate(model, torch.zeros((1, 1), dtype=torch.long), length, context)
        return length

    return {"chars_per_sec": harness.best_rate(sample, seconds, warmup=0), "peak_rss_mb": harness.peak_rss_mb()}


def main(argv):
    ap = harness.parser(__doc__, repeat=3, seconds=10.0)
    ap.add_argument("--only", choices=("train", "sample"))
    ap.add_argument("--setups", default=",".join(SETUPS), help="comma-separated: " + ", ".join(SETUPS))
    ap.add_argument("--sample-seconds", type=float, default=2.0, help="seconds per sampling measurement")
    args = harness.start(ap, argv)
    if not harness.need_torch("the gpt suite (its peers are PyTorch)"):
        return 0
    table = harness.Table([("what", "what"), ("set-up", "setup"), ("charrnn chars/s", "ours"), ("peer", "peer_name"),
                           ("peer chars/s", "peer"), ("ratio", "ratio"), ("per round", "per_round"),
                           ("peak RSS charrnn / peer", "rss")])
    setups = {"smoke": SMOKE_SETUP} if args.smoke else {name: SETUPS[name] for name in args.setups.split(",")}
    for setup, shape in setups.items():
        if args.only in (None, "train"):
            kw = {"shape": shape, "seconds": args.seconds}
            results = harness.alternate({"ours": (charrnn_train, kw), "peer": (torch_train, kw),
                                         "peer1": (torch_train, {**kw, "threads": 1})}, args.repeat)
            table.add(harness.ratio_row(results, "ours", "peer"), what="train", setup=setup,
                      peer_name="PyTorch nanoGPT-style, default threads")
            table.add(harness.ratio_row(results, "ours", "peer1"), what="train", setup=setup,
                      peer_name="PyTorch nanoGPT-style, 1 thread")
    for setup, shape in setups.items():
        if args.only in (None, "sample"):
            kw = {"shape": shape, "seconds": args.seconds if args.smoke else args.sample_seconds,
                  **({"length": 20} if args.smoke else {})}
            results = harness.alternate({"ours": (charrnn_sample, kw),
                                         "nocache": (torch_sample, {**kw, "cached": False}),
                                         "kv": (torch_sample, {**kw, "cached": True}),
                                         "kv1": (torch_sample, {**kw, "cached": True, "threads": 1})}, args.repeat)
            for peer, name in (("nocache", "nanoGPT `generate` (no cache), default threads"),
                               ("kv", "PyTorch key/value-cache loop, default threads"),
                               ("kv1", "PyTorch key/value-cache loop, 1 thread")):
                table.add(harness.ratio_row(results, "ours", peer), what="sample", setup=setup, peer_name=name)
    harness.finish(args, [table])
