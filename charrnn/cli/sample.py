"""``charrnn sample``: text from a checkpoint, one sample or many side by side, over inference/sample.py, or
whole items (stop texts, unique, excluded, beam search, JSON) over inference/items.py."""

import json
import os
from dataclasses import dataclass

import click

from ..inference.decoding import stop_ids
from ..inference.items import MAX_TRIES, DrawLimitError, draw_samples, lines_of
from ..inference.sample import SamplingOptions, stream_samples
from ..io.checkpoint import load_checkpoint
from ..io.corpus import text_codec
from .errors import user_errors
from .options import CONTEXT_SETTINGS, EscapedText, Utf8Text, explicit, sampling_options, shared_option

UNKNOWN = ("error", "skip")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--seed", type=Utf8Text(), default=None,
              help="Text that primes the model and starts the output (default: start as if after a newline).")
@click.option("--prime-file", type=click.File("rb"), default=None, metavar="FILE",
              help="Prime with the text of FILE ('-': standard input), of any length, as --seed does.")
@click.option("--unknown", type=click.Choice(UNKNOWN), default="error", show_default=True,
              help="Characters of --seed or --prime-file the model has never seen: an error, or skip them (with a "
              "warning naming them).")
@sampling_options
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent samples, generated side by side as one batch.")
@click.option("--unique", is_flag=True, help="No two printed samples are equal: a repeat is drawn again.")
@click.option("--exclude", type=click.Path(exists=True, dir_okay=False), multiple=True, metavar="FILE",
              help="No printed sample equals a line of FILE (repeatable): --exclude corpus.txt prints only new items.")
@click.option("--max-tries", type=click.IntRange(min=1), default=MAX_TRIES, show_default=True, metavar="N",
              help="With --unique, --exclude or --stop, draw at most N times --num-samples samples; if that finds too "
              "few, say how many were printed and exit with status 1.")
@click.option("--json", "json_lines", is_flag=True,
              help="One JSON object a line per sample: text, logprob (natural log of the generated characters' "
              "probability under the model, the stop text's included), chars, stopped_by (stop or length).")
@click.option("--separator", type=EscapedText(), default=None, metavar="TEXT",
              help="Write TEXT after every sample (escapes as --stop; '\\0': NUL, as xargs -0 reads). "
              "Default: a blank line between samples; with --stop, a newline after each.")
@shared_option("random_seed", help="Same seed, same text; sample i is the same whatever --num-samples is.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write the text to this file instead of standard output (kept if it exists: see --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace --output if it exists.")
def sample(checkpoint, seed, prime_file, unknown, num_samples, unique, exclude, max_tries, json_lines, separator,
           random_seed, output, overwrite, **options):
    """Generate text from CHECKPOINT (a .npz file, or a directory: best.npz, else latest.npz).

    The text is written as it is generated. Several samples are generated side by side, up to 256
    at a time: the first of each batch is written as it is generated, the others when it ends. With
    --stop, --unique, --exclude, --json or --beam-width each sample is written whole, once it ends.

    \b
    Example:
      charrnn sample checkpoints --seed "Romeo." --temperature 0.8 --length 500
      charrnn sample checkpoints --prime-file scene.txt --length 1000
      charrnn sample names --stop '\\n' --num-samples 20 --unique --exclude names.txt
    """
    both = prime_file is not None and seed is not None
    sampling = _sampling_options(options, num_samples, json_lines, separator, both)
    if not (unique or exclude or sampling.stop) and explicit(click.get_current_context(), "max_tries"):
        raise click.UsageError("--max-tries bounds the draws of --unique, --exclude and --stop; give one of them too")
    with user_errors():
        ckpt = load_checkpoint(checkpoint)
        seed = _seed(ckpt.vocab, seed, prime_file, unknown)
        _check_stops(ckpt.vocab, sampling.stop)
        excluded = set().union(*(_exclude_lines(path, ckpt.vocab) for path in exclude))
    if output != "-":
        refuse_existing(output, overwrite)
    layout = Layout.of(separator, sampling.stop)
    model, vocab = ckpt.model, ckpt.vocab
    with user_errors(), click.open_file(output, "w", encoding="utf-8") as out:  # a full disk: one line
        if json_lines or unique or excluded or sampling.stop or sampling.beam_width is not None:
            samples = draw_samples(model, vocab, num_samples, seed, options=sampling, random_seed=random_seed,
                                   unique=unique, exclude=excluded, max_tries=max_tries)
            _write_records(out, samples, layout, json_lines, max_tries)
        else:
            pieces = stream_samples(model, vocab, num_samples, seed, options=sampling, random_seed=random_seed)
            _write_samples(out, pieces, layout)


def _sampling_options(options, num_samples, json_lines, separator, seed_and_prime):
    """The SamplingOptions of the command's options; click.UsageError for those that do not go together."""
    if seed_and_prime:
        raise click.UsageError("give --seed or --prime-file, not both")
    if json_lines and separator is not None:
        raise click.UsageError("give --json or --separator, not both: --json writes one object a line")
    beam = options["beam_width"]
    if beam is not None:
        if options["temperature"] != 1 or options["top_k"] or options["top_p"] or options["repetition_penalty"] != 1:
            raise click.UsageError("--beam-width follows the model's own probabilities: it takes no --temperature, "
                                   "--top-k, --top-p or --repetition-penalty")
        if num_samples > beam:
            raise click.UsageError(f"--num-samples {num_samples} is more than the {beam} texts --beam-width {beam} "
                                   "finds; widen the beam or ask for fewer")
    elif explicit(click.get_current_context(), "beam_score"):
        raise click.UsageError("--beam-score ranks the texts of a beam search: give --beam-width too")
    if options["repetition_penalty"] == 1 and explicit(click.get_current_context(), "repetition_window"):
        raise click.UsageError("--repetition-window is how far --repetition-penalty looks back: give a penalty "
                               "above 1 too")
    return SamplingOptions(**options).validate()


def _seed(vocab, seed, prime_file, unknown):
    """The seed the model reads: --seed, or the text of --prime-file; characters the model has never seen
    are an error, or with --unknown skip left out with a warning."""
    source = "--seed"
    if prime_file is not None:
        source = f"--prime-file {_stream_name(prime_file)}"
        seed = _read_prime(prime_file, vocab)
    seed = seed or ""
    try:
        vocab.encode(seed)
    except KeyError as e:
        what = "bytes" if vocab.bytes_mode else "characters"
        if unknown == "error":
            raise click.ClickException(f"{source} has {what} the model has never seen: {e.args[0]} "
                                       "(--unknown skip leaves them out)") from None
        click.echo(f"Warning: {source}: skipped {what} the model has never seen: {e.args[0]}", err=True)
        seed = vocab.without_unknown(seed)
    return seed


def _check_stops(vocab, stops):
    for text in stops:
        try:
            stop_ids(vocab, [text])
        except (KeyError, UnicodeEncodeError) as e:
            unknown = e.args[0] if isinstance(e, KeyError) else repr(text)
            raise click.ClickException(f"--stop {text!r} has characters the model has never seen: {unknown}; "
                                       "it could never end a sample") from None


def _exclude_lines(path, vocab):
    try:
        return lines_of(path, vocab.encoding)
    except UnicodeDecodeError as e:
        raise click.ClickException(f"--exclude {path}: not valid {vocab.encoding} at byte {e.start}") from None


@dataclass(frozen=True)
class Layout:
    """What is written between two samples and after the last."""

    between: str
    end: str

    @classmethod
    def of(cls, separator, stops):
        """--separator after every sample; else a newline after each with --stop, a blank line between
        samples without."""
        if separator is not None:
            return cls(separator, separator)
        return cls("\n", "\n") if stops else cls("\n\n", "\n")


def _write_records(output, samples, layout, json_lines, max_tries):
    """Write whole samples (items.Sample) as they come, as JSON lines or text; DrawLimitError ends the output
    as usual, then is one line on stderr."""
    printed = 0
    try:
        for sample in samples:
            if json_lines:
                output.write(json.dumps(sample.to_json(), ensure_ascii=False) + "\n")
            else:
                output.write((layout.between if printed else "") + sample.text)
            printed += 1
            output.flush()
    except DrawLimitError as e:
        raise click.ClickException(
            f"printed {e.found} of {e.wanted} samples: {e.drawn:,} draws found no others that are new (not "
            f"repeats, excluded or empty); raise --max-tries (now {max_tries}) or ask for fewer") from None
    finally:
        if printed and not json_lines:
            output.write(layout.end)
        output.flush()


def _write_samples(output, pieces, layout):
    """Write (sample index, text) pieces as they come, samples separated as ``layout`` says."""
    interactive = output.isatty() if hasattr(output, "isatty") else False
    current = 0
    for i, piece in pieces:
        if i != current:
            output.write(layout.between)
            current = i
        output.write(piece)
        if interactive or "\n" in piece:
            output.flush()
    output.write(layout.end)
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
    try:
        return data.decode(text_codec(vocab.encoding))
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
