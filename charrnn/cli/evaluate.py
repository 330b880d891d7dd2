"""``charrnn eval``: scoring a file with a checkpoint, as a whole or line by line, over inference/evaluate.py."""

import json
import time
from collections import Counter

import click
from rich.table import Table

from ..inference.evaluate import EvalResult, evaluate_file, score_lines
from ..io.checkpoint import load_checkpoint
from ..io.corpus import quoted
from .errors import user_errors
from .options import CONTEXT_SETTINGS
from .report import console


@click.command("eval", context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--per-line", is_flag=True, help="Also score each line: log-probability, bits per char, length.")
@click.option("--reset-per-line", is_flag=True, help="With --per-line: read each line from a fresh state.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (JSON Lines with --per-line, file total last).")
def eval_command(checkpoint, file, per_line, reset_per_line, as_json):
    """Score FILE with CHECKPOINT: loss (nats/char), bits per char, perplexity.

    The hidden state is carried through the whole file (gpt: each character is predicted from
    sliding windows of --seq-length characters, at least half a window of the text before it once the
    text is that long; docs/sampling.md). Characters the model has never seen are
    counted, reported and left out.

    \b
    Example:
      charrnn eval checkpoints held_out.txt --json
      charrnn eval checkpoints sentences.txt --per-line --reset-per-line
    """
    with user_errors():
        ckpt = load_checkpoint(checkpoint)
        start = time.perf_counter()
        if per_line or reset_per_line:
            result = _print_lines(score_lines(ckpt.model, ckpt.vocab, file, reset_per_line), as_json)
        else:
            result = evaluate_file(ckpt.model, ckpt.vocab, file)
    seconds = time.perf_counter() - start
    if result.chars == 0:
        outside = f"all {sum(result.oov.values()):,} of its characters are outside the vocabulary"
        reason = outside if result.oov else "it is empty"
        raise click.ClickException(f"{file}: nothing to score: {reason}")
    if as_json:
        click.echo(json.dumps({"file": file, **result.to_json(), "seconds": seconds,
                               "chars_per_sec": result.chars / seconds}))
        return
    out = console()
    unit, units = ("byte", "bytes") if ckpt.vocab.bytes_mode else ("char", "characters")  # what a symbol is
    out.print(f"{file}: {result.chars:,} {units} scored in {seconds:.2f} s ({result.chars / seconds:,.0f} {unit}s/s)")
    out.print(f"loss       {result.loss:.4f} nats/{unit}")
    out.print(f"bpc        {result.bpc:.4f} bits/{unit}")
    out.print(f"perplexity {result.perplexity:.3f}")
    if result.oov:
        listed = ", ".join(f"{quoted(k)}×{v}" for k, v in sorted(result.oov.items(), key=lambda kv: -kv[1])[:10])
        out.print(f"left out {sum(result.oov.values()):,} {units} outside the vocabulary: {listed}")


def _print_lines(lines, as_json):
    """Print per-line scores (a table, or JSON Lines); return the whole file's EvalResult."""
    total = EvalResult(0.0, 0, {})
    table = Table("line", "log-prob (nats)", "bits/char", "chars", "text")
    for line in lines:
        r = line.result
        total = EvalResult(total.total_nll + r.total_nll, total.chars + r.chars,
                           dict(Counter(total.oov) + Counter(r.oov)))
        if as_json:
            click.echo(json.dumps({"line": line.number, "logprob": -r.total_nll, "bpc": r.bpc if r.chars else None,
                                   "chars": r.chars, "oov": r.oov, "text": line.text}))
        else:
            table.add_row(str(line.number), f"{-r.total_nll:.2f}", f"{r.bpc:.3f}" if r.chars else "-",
                          str(r.chars), repr(line.text[:60]) + ("…" if len(line.text) > 60 else ""))
    if not as_json and table.row_count:  # an empty file is an error, not an empty table
        console().print(table)
    return total
