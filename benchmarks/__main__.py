"""charrnn's benchmarks, run from the repository root:

    python -m benchmarks SUITE [options]        # python -m benchmarks SUITE --help for a suite's options
    python -m benchmarks SUITE --smoke          # toy sizes, a second or so: does it still run?

Suites (docs/benchmarks.md has a table of each, with its machine, date and command):
    speed     training and sampling chars/s of the RNNs against PyTorch scripts of the same models
    batched   many texts at once: batched sampling, per-line scoring, whole-file eval against its bound
    roofline  train, eval and sample through the commands, as a fraction of the CPU's matrix-product peak
    gpt       --model gpt against a nanoGPT-style PyTorch model: training and sampling chars/s
    learning  validation loss reached in a wall-time budget (RNN, gpt) or after N fine-tuning steps
    classify  charrnn classify against a PyTorch BiLSTM script: accuracy, training and predict speed
    serve     generation through `charrnn serve` against the library
    inspect   `charrnn neurons --feature` and `charrnn inspect` against `charrnn eval` on the same file
    memory    peak memory of `charrnn train` against corpus size
    engine    --engine torch against the numpy engine, and data-parallel scaling under torchrun
    gpu       --engine torch on a GPU beside a nanoGPT-style script (fused AdamW, bfloat16, torch.compile)
    items     whole samples: --unique/--exclude and beam search against plain sampling; the repetition penalty
"""

import importlib
import sys

SUITES = ("speed", "batched", "roofline", "gpt", "learning", "classify", "serve", "inspect", "memory", "engine", "gpu",
          "items")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        from benchmarks import harness

        return harness.child_main(argv[1])
    if not argv or argv[0] not in SUITES:
        print(__doc__)
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    return importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
