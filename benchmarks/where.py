"""Where a recurrent model's training step spends its time, on this CPU.

    python benchmarks/where.py                       # the training rows of benchmarks/speed.py
    python benchmarks/where.py --config gru,512,2,32,100

Each configuration (cell, H, layers, B, T) is timed as one worker runs its share of a step: half the
batch on the default two workers, alone in one process, on one BLAS thread (the script re-runs itself
with OPENBLAS_NUM_THREADS=1 and without this machine's OPENBLAS_CORETYPE, as benchmark children run).
Phases: the recurrence, split into its per-timestep products (h W_hh forward, d(h_proj) W_hh^T
backward) and the gate arithmetic around them; making the step weights; the rest of the forward and
backward passes (the products over all timesteps: input projections, weight gradients, the gradient
into the layer below; the output layer and softmax; the one-hot lookups); and Adam's update of all
parameters, which the main process makes once per step. Timers wrap the cells' products and the
model's step loops; "overhead of the timers" is the wrapped step against an unwrapped one.
"""

import argparse
import os
import sys
import time

ROWS = ("lstm,128,2,50,50", "gru,128,2,50,50", "rnn,128,2,50,50", "lstm,512,2,64,100", "gru,512,2,64,100",
        "rnn,512,2,64,100", "gru,512,2,32,100")
VOCAB = 65


def one_thread_child():
    """Re-run this script on one BLAS thread with OpenBLAS's own choice of kernel (before numpy loads)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["CHARRNN_WHERE_CHILD"] = "1"
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def best_time(function, repeat):
    """The fastest of ``repeat`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def where(cell, hidden, layers, batch, seq, repeat):
    import numpy as np

    from charrnn.engines.pool import default_workers
    from charrnn.nn import cells
    from charrnn.nn.optim import make_optimizer
    from charrnn.rnn import CharRNN, ModelConfig

    share = -(-batch // default_workers(batch))  # a worker's streams
    model = CharRNN(ModelConfig(VOCAB, cell, hidden, layers, dropout=0.0), rng=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, VOCAB, (seq + 1, share))
    opt = make_optimizer("adam", model.params, 2e-3, grad_clip=5.0)

    def step():
        return model.loss_and_grads(ids[:-1], ids[1:])

    step()
    plain = best_time(step, repeat)
    _, grads, _ = step()
    adam = best_time(lambda: opt.step(model.params, grads), repeat)

    spent = dict.fromkeys(("forward products", "forward", "backward products", "backward", "step weights"), 0.0)
    phase = ["forward"]

    def timed(name, function):
        def run(*args):
            phase[0] = name
            start = time.perf_counter()
            result = function(*args)
            spent[name] += time.perf_counter() - start
            return result

        return run

    def timed_matmul(*args):
        start = time.perf_counter()
        result = np.matmul(*args)
        spent[phase[0] + " products"] += time.perf_counter() - start
        return result

    cells.matmul = timed_matmul
    model._steps_forward = timed("forward", model._steps_forward)
    model._steps_backward = timed("backward", model._steps_backward)
    model.step_weights = timed("step weights", model.step_weights)
    try:
        step()
        wrapped = float("inf")
        for _ in range(repeat):  # the phases of the fastest wrapped step
            for name in spent:
                spent[name] = 0.0
            start = time.perf_counter()
            step()
            elapsed = time.perf_counter() - start
            if elapsed < wrapped:
                wrapped, phases = elapsed, dict(spent)
    finally:
        cells.matmul = np.matmul
    rows = [
        ("per-timestep products, forward (h W_hh)", phases["forward products"]),
        ("gate arithmetic, forward", phases["forward"] - phases["forward products"]),
        ("per-timestep products, backward (d(h_proj) W_hh^T)", phases["backward products"]),
        ("gate arithmetic, backward", phases["backward"] - phases["backward products"]),
        ("step weights (gate scale, blocks, W_hh^T)", phases["step weights"]),
        ("products over all timesteps, output layer, softmax, lookups",
         wrapped - phases["forward"] - phases["backward"] - phases["step weights"]),
    ]
    total = wrapped + adam
    print(f"\n{cell} H={hidden} L={layers} B={batch} T={seq}: a worker's share, B={share}: {plain * 1e3:.1f} ms a "
          f"step unwrapped ({share * seq / plain:,.0f} chars/s a worker), {wrapped * 1e3:.1f} ms wrapped; "
          f"Adam over {model.num_params():,} parameters {adam * 1e3:.2f} ms")
    for name, seconds in [*rows, ("Adam update (main process, once a step)", adam)]:
        print(f"  {name:<62} {seconds * 1e3:8.2f} ms  {seconds / total:6.1%}")
    print(f"  {'overhead of the timers (wrapped - unwrapped)':<62} {(wrapped - plain) * 1e3:8.2f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", metavar="CELL,H,L,B,T", help="default: the speed table's rows")
    ap.add_argument("--repeat", type=int, default=7, help="each figure is the fastest of this many steps")
    args = ap.parse_args()
    if os.environ.get("CHARRNN_WHERE_CHILD") != "1":
        one_thread_child()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine import describe

    print(describe())
    print("one process, OPENBLAS_NUM_THREADS=1")
    for row in args.config or ROWS:
        cell, *numbers = row.split(",")
        where(cell, *map(int, numbers), args.repeat)


if __name__ == "__main__":
    main()
