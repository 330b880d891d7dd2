"""``charrnn sample``: text from a checkpoint, one sample or many side by side, over inference/sample.py."""

import codecs
import os

import click

from ..inference.sample import SamplingOptions, stream_samples
from ..io.checkpoint import load_checkpoint
from .errors import user_errors
from .options import CONTEXT_SETTINGS, sampling_options, shared_option


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--seed", default=None, help="Text that primes the model and starts the output (default: start as if "
              "after a newline).")
@click.option("--prime-file", type=click.File("rb"), default=None, metavar="FILE",
              help="Prime with the text of FILE ('-': standard input), of any length, as --seed does.")
@sampling_options
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent samples, generated side by side as one batch, separated by a blank line.")
@shared_option("random_seed", help="Same seed, same text; sample i is the same whatever --num-samples is.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write the text to this file instead of standard output (kept if it exists: see --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace --output if it exists.")
def sample(checkpoint, seed, prime_file, num_samples, random_seed, output, overwrite, **options):
    """Generate text from CHECKPOINT (a .npz file, or a directory: best.npz, else latest.npz).

    The text is written as it is generated. Several samples are generated side by side, up to 256
    at a time: the first of each batch is written as it is generated, the others when it ends.

    \b
    Example:
      charrnn sample checkpoints --seed "Romeo." --temperature 0.8 --length 500
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
        samples = stream_samples(ckpt.model, ckpt.vocab, num_samples, seed, options=SamplingOptions(**options),
                                 random_seed=random_seed)
        _write_samples(out, samples)


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


def refuse_existing(output, overwrite, source=None):
    """A file already at OUTPUT (a checkpoint, the corpus) is kept unless --overwrite; the command's own input
    ``source``, even with it."""
    if not os.path.exists(output):
        return
    if source is not None and os.path.exists(source) and os.path.samefile(output, source):
        raise click.ClickException(f"{output} is the file being read; write to another name")
    if not overwrite:
        raise click.ClickException(f"{output} already exists; give --overwrite to replace it, or another name")
