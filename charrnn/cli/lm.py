"""The language-model commands: train, sample, eval, info, plot, export, import and serve, a thin layer over
the library (train.py, sample.py, evaluate.py, io/)."""

import codecs
import json
import os
import time
from collections import Counter
from dataclasses import asdict

import click
from rich.table import Table

from ..engines.torch_engine import TorchEngineError, import_torch
from ..inference.evaluate import EvalResult, evaluate_file, score_lines
from ..inference.sample import stream_samples
from ..io.checkpoint import load_checkpoint, resolve_checkpoint
from ..io.corpus import quoted
from ..io.export import export_checkpoint, import_safetensors
from ..models.registry import MODEL_KINDS
from ..models.rnn import DTYPES
from ..nn.cells import ACTIVATIONS
from ..nn.optim import CLIP_MODES, OPTIMIZERS
from ..nn.schedule import SCHEDULES
from ..serve.server import ServeConfig, make_server, serve_until_signal
from ..training.loop import DEVICES, ENGINES, PRECISIONS
from ..training.loop import train as train_model
from ..training.presets import DEFAULTS, PRESETS, finetune_configs, preset_configs, resume_config
from .errors import user_errors
from .options import CONTEXT_SETTINGS, FiniteFloatRange, explicit
from .report import ConsoleReporter, console, count, print_summary, training_summary


def _preset_default(name):
    return f"[default: {PRESETS['default'][name]}, or the preset's]"


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("corpus", nargs=-1, required=True, type=click.Path(exists=True, readable=True))
@click.option("--preset", type=click.Choice(list(PRESETS)), default="default", show_default=True,
              help="A bundle of the options below (docs/training.md); options you give win.")
@click.option("--model", type=click.Choice(MODEL_KINDS),
              help="A recurrent cell, or gpt: a Transformer (alone, it trains the gpt recipe). "
              f"{_preset_default('model')}")
@click.option("--hidden-size", type=click.IntRange(min=1),
              help=f"Units per layer; for gpt the embedding width. {_preset_default('hidden_size')}")
@click.option("--num-layers", type=click.IntRange(min=1),
              help=f"Stacked layers (gpt: blocks). {_preset_default('num_layers')}")
@click.option("--num-heads", type=click.IntRange(min=1),
              help="Attention heads, for --model gpt; must divide --hidden-size. "
              f"[default: {PRESETS['gpt']['num_heads']}, or the preset's]")
@click.option("--activation", type=click.Choice(ACTIVATIONS),
              help=f"For --model rnn. [default: {DEFAULTS['activation']}]")
@click.option("--dropout", type=FiniteFloatRange(0, 1, max_open=True),
              help=f"Dropout on each layer's output. {_preset_default('dropout')}")
@click.option("--weight-drop", type=FiniteFloatRange(0, 1, max_open=True),
              help=f"Fraction of recurrent weights dropped per step (DropConnect). {_preset_default('weight_drop')}")
@click.option("--dtype", type=click.Choice(DTYPES), help=_preset_default("dtype"))
@click.option("--batch-size", type=click.IntRange(min=1), help=f"Streams B. {_preset_default('batch_size')}")
@click.option("--seq-length", type=click.IntRange(min=1),
              help=f"BPTT length T; for gpt the context length. {_preset_default('seq_length')}")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help=_preset_default("optimizer"))
@click.option("--learning-rate", type=FiniteFloatRange(min=0, min_open=True),
              help="[default: the preset's; with another --optimizer, tuned for it and the model]")
@click.option("--lr-schedule", type=click.Choice(SCHEDULES), help=_preset_default("lr_schedule"))
@click.option("--min-lr", type=FiniteFloatRange(min=0),
              help="Where the cosine schedule ends: it decays from --learning-rate down to this (at most "
              f"--learning-rate). {_preset_default('min_lr')}")
@click.option("--lr-decay", type=FiniteFloatRange(0, 1, min_open=True),
              help=f"Per-epoch factor of the exponential schedule. {_preset_default('lr_decay')}")
@click.option("--lr-decay-after", type=click.IntRange(min=0),
              help=f"Epochs before the exponential decay starts. {_preset_default('lr_decay_after')}")
@click.option("--warmup", type=click.IntRange(min=0), metavar="STEPS",
              help=f"Linear learning-rate warm-up over the first STEPS steps. {_preset_default('warmup')}")
@click.option("--grad-clip", type=FiniteFloatRange(min=0), metavar="C",
              help=f"Clip the gradient at C, as --clip-mode says; 0 disables. {_preset_default('grad_clip')}")
@click.option("--clip-mode", type=click.Choice(CLIP_MODES),
              help="value: clip each gradient element to [-C, C]; norm: scale the whole gradient so that its "
              "global L2 norm is at most C (torch.nn.utils.clip_grad_norm_). "
              f"{_preset_default('clip_mode')}")
@click.option("--weight-decay", type=FiniteFloatRange(min=0), help=_preset_default("weight_decay"))
@click.option("--average", type=click.IntRange(min=0), metavar="STEPS",
              help="Validate, save and sample a running average of the weights over about STEPS steps; 0: off. "
              f"{_preset_default('average')}")
@click.option("--val-frac", type=FiniteFloatRange(0, 1, max_open=True), default=DEFAULTS["val_frac"],
              show_default=True, help="Tail of the corpus held out for validation.")
@click.option("--eval-every", type=click.IntRange(min=1), help=f"Steps. {_preset_default('eval_every')}")
@click.option("--patience", type=click.IntRange(min=1), help="Stop after this many evaluations without a new best.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps in all.")
@click.option("--max-epochs", type=FiniteFloatRange(min=0, min_open=True))
@click.option("--max-time", type=FiniteFloatRange(min=0, min_open=True),
              help="Stop after this many seconds of training in all (a resumed run counts the time already trained). "
              f"{_preset_default('max_time')}")
@click.option("--random-seed", type=click.IntRange(min=0), help="Make the run reproducible.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=DEFAULTS["checkpoint_dir"],
              show_default=True)
@click.option("--sample-length", type=click.IntRange(min=0), default=DEFAULTS["sample_length"], show_default=True,
              help="Preview sample at each evaluation; 0 disables.")
@click.option("--encoding", default=DEFAULTS["encoding"], show_default=True, help="Text encoding of the corpus.")
@click.option("--bytes", "bytes_mode", is_flag=True, help="Every byte a symbol: trains on any file.")
@click.option("--resume", "resume", is_flag=False, flag_value="", default=None, metavar="[CHECKPOINT]",
              help="Continue from CHECKPOINT (default: latest.npz in --checkpoint-dir).")
@click.option("--init-from", type=click.Path(exists=True), metavar="CHECKPOINT",
              help="Fine-tune: start from CHECKPOINT's weights (new characters get new rows) with a fresh optimizer, "
              "schedule and step count.")
@click.option("--overwrite", is_flag=True, help="Start afresh even if --checkpoint-dir holds a model (it is replaced).")
@click.option("--late-dropout", type=FiniteFloatRange(0, 1, max_open=True),
              help="Raise dropout linearly from --dropout to this rate between --late-dropout-epochs. "
              f"{_preset_default('late_dropout')}")
@click.option("--late-dropout-epochs", type=(FiniteFloatRange(min=0), FiniteFloatRange(min=0)), metavar="A B",
              help=f"Epochs where the rise starts and ends. {_preset_default('late_dropout_epochs')}")
@click.option("--workers", type=click.IntRange(min=1),
              help="Processes that compute each step, a share of the streams each. [default: one per CPU, "
              "at least 8 streams each]")
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULTS["engine"], show_default=True,
              help="Who computes each step: charrnn's numpy code, or PyTorch (pip install 'charrnn[torch]'; "
              "several processes under torchrun: docs/scaling.md).")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULTS["device"], show_default=True,
              help="With --engine torch: the CPU, or a CUDA GPU.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULTS["precision"], show_default=True,
              help="With --engine torch and --dtype float32: forward and backward under torch.autocast in this "
              "precision (float16 with a dynamic loss scale). The weights, gradient, optimizer state and update, "
              "hidden state, layer norms, softmax and loss stay float32.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def train(ctx, corpus, preset, resume, init_from, overwrite, quiet, **options):
    """Train a character model on CORPUS: one or more text files and directories (a directory: its text
    files, in sorted order). Each file's tail is held out for validation.

    Writes latest.npz, best.npz and metrics.jsonl to --checkpoint-dir.

    \b
    Example:
      charrnn train data/shakespeare.txt --max-time 300
      charrnn train input.txt --preset min-char-rnn
      charrnn train letters/ diaries/ --init-from checkpoints --checkpoint-dir tuned
    """
    quiet = quiet or int(os.environ.get("RANK", "0")) > 0  # under torchrun, process 0 speaks for all
    reporter = ConsoleReporter(quiet)
    given = {name: value for name, value in options.items() if explicit(ctx, name)}
    if resume is not None and init_from is not None:
        raise click.UsageError("--init-from starts a new run from a model's weights and --resume continues a run; "
                               "give one of them")
    if resume is not None and explicit(ctx, "preset"):
        raise click.UsageError("--preset sets up a new run; --resume continues one with its own settings")
    with user_errors():
        if resume is not None:
            resume = resume or os.path.join(options["checkpoint_dir"], "latest.npz")
            meta = load_checkpoint(resume).meta
            model_config, config = None, resume_config(meta.get("train", {}), meta.get("model"), **given)
            if config.engine == "torch" and "engine" not in given:
                _check_kept_engine(resume)
        elif init_from is not None:
            model_config, config = finetune_configs(load_checkpoint(init_from), preset, **given)
        else:
            model_config, config = preset_configs(preset, **given)
        result = train_model(list(corpus), model_config, config, resume=resume, reporter=reporter,
                             overwrite=overwrite, init_from=init_from)
    if not quiet:
        print_summary(result)
    if result.interrupted_by is not None:
        ctx.exit(128 + result.interrupted_by)


def _check_kept_engine(checkpoint):
    """A run trained with --engine torch resumes with it: say so if this Python has no PyTorch."""
    try:
        import_torch()
    except TorchEngineError:
        raise click.ClickException(f"{checkpoint} was trained with --engine torch, which --resume keeps, and "
                                   "PyTorch is not installed here: pip install 'charrnn[torch]', or resume "
                                   "with --engine numpy") from None


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--seed", default=None, help="Text that primes the model and starts the output (default: start as if "
              "after a newline).")
@click.option("--prime-file", type=click.File("rb"), default=None, metavar="FILE",
              help="Prime with the text of FILE ('-': standard input), of any length, as --seed does.")
@click.option("--temperature", type=FiniteFloatRange(min=0), default=1.0, show_default=True,
              help="Below 1: safer; above 1: wilder; 0: always the most likely character.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample among the K likeliest characters.")
@click.option("--top-p", type=FiniteFloatRange(0, 1, min_open=True), default=None,
              help="Sample within the smallest set of characters holding probability P.")
@click.option("--length", type=click.IntRange(min=1), default=500, show_default=True, help="Characters to generate.")
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent samples, generated side by side as one batch, separated by a blank line.")
@click.option("--random-seed", type=click.IntRange(min=0), default=None,
              help="Same seed, same text; sample i is the same whatever --num-samples is.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write the text to this file instead of standard output (kept if it exists: see --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace --output if it exists.")
def sample(checkpoint, seed, prime_file, temperature, top_k, top_p, length, num_samples, random_seed, output,
           overwrite):
    """Generate text from CHECKPOINT (a .npz file, or a directory: best.npz, else latest.npz).

    The text is written as it is generated. Several samples are generated side by side, up to 256
    at a time: the first of each batch is written as it is generated, the others when it ends.

    \b
    Example:
      charrnn sample checkpoints --seed "ROMEO." --temperature 0.8 --length 500
      charrnn sample checkpoints --prime-file scene.txt --length 1000
    """
    if prime_file is not None and seed is not None:
        raise click.UsageError("give --seed or --prime-file, not both")
    seed = seed or ""
    with user_errors():
        ckpt = load_checkpoint(checkpoint)
        source = "--seed"
        if prime_file is not None:
            source = f"--prime-file {_stream_name(prime_file)}"
            seed = _read_prime(prime_file, ckpt.vocab)
        try:
            ckpt.vocab.encode(seed)
        except KeyError as e:
            what = "bytes" if ckpt.vocab.bytes_mode else "characters"
            raise click.ClickException(f"{source} has {what} the model has never seen: {e.args[0]}") from None
    if output != "-":
        refuse_existing(output, overwrite)
    with click.open_file(output, "w", encoding="utf-8") as out:
        _write_samples(out, stream_samples(ckpt.model, ckpt.vocab, num_samples, seed, length, temperature, top_k,
                                           top_p, random_seed))


def _write_samples(output, pieces):
    """Write (sample index, text) pieces as they come, samples separated by a blank line."""
    interactive = output.isatty() if hasattr(output, "isatty") else False
    current = 0
    for i, piece in pieces:
        if i != current:
            output.write("\n\n")
            current = i
        output.write(piece)
        if interactive or "\n" in piece:
            output.flush()
    output.write("\n")
    output.flush()


def _stream_name(stream):
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) and not name.startswith("<") else "-"


def _read_prime(stream, vocab):
    """The prime text of an open binary file: bytes for a --bytes model, else text in the model's encoding."""
    data, name = stream.read(), _stream_name(stream)
    if not data:
        raise click.ClickException(f"--prime-file {name}: the file is empty; nothing to prime with")
    if vocab.bytes_mode:
        return data
    codec = "utf-8-sig" if codecs.lookup(vocab.encoding).name == "utf-8" else vocab.encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        raise click.ClickException(
            f"--prime-file {name}: not valid {vocab.encoding} at byte {e.start}; this model reads {vocab.encoding} text"
        ) from None


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


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
def info(checkpoint):
    """Describe CHECKPOINT: model, vocabulary, parameters and training position.

    \b
    Example:
      charrnn info checkpoints/best.npz
    """
    with user_errors():
        path = resolve_checkpoint(checkpoint)
        ckpt = load_checkpoint(path)
    meta, cfg = ckpt.meta, ckpt.model.config
    table = Table(title=path, show_header=False)
    for key, value in asdict(cfg).items():
        table.add_row(key, str(value))
    table.add_row("vocabulary", f"{len(ckpt.vocab)} symbols: {ckpt.vocab.preview(ckpt.vocab.symbols, 80)}")
    table.add_row("parameters", f"{ckpt.model.num_params():,}")
    average = meta.get("train", {}).get("average")
    table.add_row("weights", f"running average over {average} steps (--average)" if average else "as trained")
    table.add_row("step", str(meta.get("step", "-")))  # an import has no training position
    epoch, chunk = meta.get("epoch", "-"), meta.get("chunk", 0)
    table.add_row("epoch", f"{epoch} complete, then {count(chunk, 'step')} into the next" if chunk else str(epoch))
    if "elapsed" in meta:
        table.add_row("time trained", f"{meta['elapsed']:.1f} s")
    if meta.get("init_from"):
        table.add_row("fine-tuned from", meta["init_from"])
    if meta.get("train"):
        table.add_row("training", training_summary(meta["train"]))
    val = meta.get("last_val_loss")
    table.add_row("val loss", f"{val:.4f}" if val is not None else "-")
    table.add_row("format version", str(meta["version"]))
    console().print(table)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default="loss.png", show_default=True)
def plot(checkpoint_dir, output):
    """Plot training and validation loss from CHECKPOINT_DIR/metrics.jsonl into a PNG.

    Needs matplotlib: pip install 'charrnn[plot]'.

    \b
    Example:
      charrnn plot checkpoints --output loss.png
    """
    from ..plot import plot_metrics

    with user_errors():
        try:
            plot_metrics(os.path.join(checkpoint_dir, "metrics.jsonl"), output)
        except ImportError:
            raise click.ClickException("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    click.echo(f"wrote {output}")


def refuse_existing(output, overwrite, source=None):
    """A file already at OUTPUT (a checkpoint, the corpus) is kept unless --overwrite; the command's own input
    ``source``, even with it."""
    if not os.path.exists(output):
        return
    if source is not None and os.path.exists(source) and os.path.samefile(output, source):
        raise click.ClickException(f"{output} is the file being read; write to another name")
    if not overwrite:
        raise click.ClickException(f"{output} already exists; give --overwrite to replace it, or another name")


@click.command("export", context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("output", type=click.Path(dir_okay=False, writable=True))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (without it, an existing OUTPUT is kept).")
def export_command(checkpoint, output, overwrite):
    """Write CHECKPOINT's model to OUTPUT (.safetensors) as a PyTorch state_dict.

    Names and layout are those of nn.LSTM/nn.GRU/nn.RNN(input_size=V, hidden_size=H, num_layers=L)
    as "rnn" and nn.Linear(H, V) as "decoder" (gpt: nanoGPT's GPT names); the model config and
    vocabulary ride in the metadata.

    \b
    Example:
      charrnn export checkpoints/best.npz model.safetensors
    """
    with user_errors():
        source = resolve_checkpoint(checkpoint)
    refuse_existing(output, overwrite, source)
    with user_errors():
        ckpt = export_checkpoint(source, output)
    click.echo(f"wrote {output} ({ckpt.model.num_params():,} parameters, {ckpt.model.config.model})")


@click.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False, writable=True))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (without it, an existing OUTPUT is kept).")
def import_command(source, output, overwrite):
    """Write a charrnn checkpoint OUTPUT (.npz) from SOURCE, a .safetensors export.

    SOURCE holds the state_dict `charrnn export` writes (a model trained in PyTorch, say), with
    charrnn.model and charrnn.vocab in its metadata. The checkpoint samples, scores and trains on.

    \b
    Example:
      charrnn import model.safetensors imported.npz
      charrnn sample imported.npz --seed "ROMEO:"
    """
    if not output.endswith(".npz"):
        raise click.ClickException(f"{output}: a charrnn checkpoint's name ends in .npz; give OUTPUT one")
    refuse_existing(output, overwrite, source)
    with user_errors():
        ckpt = import_safetensors(source, output)
    click.echo(f"wrote {output} ({ckpt.model.num_params():,} parameters, {ckpt.model.config.model})")

@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--host", default=ServeConfig.host, show_default=True,
              help="Address to listen on; 0.0.0.0 opens the model to anyone who can reach this machine.")
@click.option("--port", type=click.IntRange(0, 65535), default=ServeConfig.port, show_default=True,
              help="0: any free port (the address is printed).")
@click.option("--max-length", type=click.IntRange(min=1), default=ServeConfig.max_length, show_default=True,
              help="Most characters one request may generate.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=ServeConfig.max_concurrent,
              show_default=True,
              help="Requests served at once, each with its own copy of the model; more are answered 503.")
@click.option("-q", "--quiet", is_flag=True, help="No access log on stderr.")
@click.pass_context
def serve(ctx, checkpoint, host, port, max_length, max_concurrent, quiet):
    """Serve CHECKPOINT over HTTP: a page to play with at /, and a JSON API (docs/server.md).

    \b
    Example:
      charrnn serve checkpoints
      curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' -d '{"seed": "ROMEO."}'
    """
    config = ServeConfig(host=host, port=port, max_length=max_length, max_concurrent=max_concurrent, quiet=quiet)
    with user_errors():
        path = resolve_checkpoint(checkpoint)
        ckpt = load_checkpoint(path)
        try:
            server = make_server(ckpt.model, ckpt.vocab, config, {"checkpoint": path, "step": ckpt.meta.get("step")})
        except OSError as e:
            raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if server.server_name not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can use the model", err=True)
    click.echo(f"serving {path} at {server.url} (Ctrl-C stops)")
    ctx.exit(128 + serve_until_signal(server))


COMMANDS = (train, sample, eval_command, info, plot, export_command, import_command, serve)
