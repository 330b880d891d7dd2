"""The commands on a checkpoint file: ``charrnn info``, ``plot`` (its metrics), ``export`` and ``import``
(PyTorch's names, io/export.py)."""

import os
from dataclasses import asdict

import click
from rich.table import Table

from ..io.atomic import write_atomically
from ..io.checkpoint import load_checkpoint, resolve_checkpoint
from ..io.corpus import file_key, write_held_out
from ..io.export import export_checkpoint, import_safetensors
from ..plot import plot_metrics
from .errors import user_errors
from .options import CONTEXT_SETTINGS
from .report import console, count, training_summary
from .sample import refuse_existing


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--write-val", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write the text its training held out for validation (each corpus file's tail, as the "
              "corpus is now) to FILE, to score with charrnn eval.")
@click.option("--overwrite", is_flag=True, help="Replace the --write-val FILE if it exists.")
def info(checkpoint, write_val, overwrite):
    """Describe CHECKPOINT: model, vocabulary, parameters, training position and the corpus it was trained on.

    \b
    Example:
      charrnn info checkpoints/best.npz
      charrnn info checkpoints --write-val held_out.txt
    """
    if write_val == "-":  # click.Path takes it as a file called '-'
        raise click.UsageError("--write-val writes a file: give it a name (not '-'), then read or score that file")
    with user_errors():
        path = resolve_checkpoint(checkpoint)
        ckpt = load_checkpoint(path)
    meta, cfg = ckpt.meta, ckpt.model.config
    if write_val is not None:
        refuse_existing(write_val, overwrite)
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
    if meta.get("corpus"):
        table.add_row("corpus", corpus_description(meta))
    if meta.get("init_from"):
        table.add_row("fine-tuned from", meta["init_from"])
    if meta.get("train"):
        table.add_row("training", training_summary(meta["train"]))
    val = meta.get("last_val_loss")
    table.add_row("val loss", f"{val:.4f}" if val is not None else "-")
    table.add_row("format version", str(meta["version"]))
    console().print(table)
    if write_val is not None:
        _write_validation(meta, path, write_val)


def corpus_description(meta, shown=4):
    """The corpus a checkpoint was trained on, a line per file (the first ``shown``): its path, size and SHA-256."""
    files = meta.get("corpus_files") or [{"path": p} for p in meta["corpus"]]
    digests = meta.get("corpus_sha256") or [None] * len(files)
    lines = [f"{file['path']}" + (f", {file['size']:,} bytes" if "size" in file else "")
             + (f", sha256 {digest}" if digest else "") for file, digest in zip(files[:shown], digests)]
    if len(files) > shown:
        lines.append(f"and {len(files) - shown} more files, {sum(f.get('size', 0) for f in files):,} bytes in all")
    return "\n".join(lines)


def _write_validation(meta, path, output):
    """Write the validation tail of the corpus checkpoint ``path`` (``meta``) was trained on to ``output``."""
    train = meta.get("train", {})
    if not meta.get("corpus") or not train.get("val_frac"):
        files = f"; it validated on {', '.join(train['val_files'])}" if train.get("val_files") else ""
        raise click.ClickException(f"{path}: its training held out no tail of a corpus for validation{files}")
    with user_errors():
        changed = [f["path"] for f in meta.get("corpus_files", []) if file_key(f["path"]) != f]
        if changed:
            click.echo(f"warning: {', '.join(changed)} changed since training (size or modification time); "
                       "writing the tail of the text as it is now", err=True)
        written = []
        write_atomically(output, ".txt", lambda f: written.append(write_held_out(
            meta["corpus"], f, train["val_frac"], train.get("encoding", "utf-8"), train.get("bytes_mode", False))))
    click.echo(f"wrote {output}: the {written[0]:,} characters held out for validation")


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
    with user_errors():
        try:
            plot_metrics(os.path.join(checkpoint_dir, "metrics.jsonl"), output)
        except ImportError:
            raise click.ClickException("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    click.echo(f"wrote {output}")




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
      charrnn sample imported.npz --seed "Romeo."
    """
    if not output.endswith(".npz"):
        raise click.ClickException(f"{output}: a charrnn checkpoint's name ends in .npz; give OUTPUT one")
    refuse_existing(output, overwrite, source)
    with user_errors():
        ckpt = import_safetensors(source, output)
    click.echo(f"wrote {output} ({ckpt.model.num_params():,} parameters, {ckpt.model.config.model})")
