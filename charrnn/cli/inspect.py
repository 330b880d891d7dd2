"""The commands that look inside a model: ``inspect`` (each character's surprise and the likeliest characters
before it) and ``neurons`` (units that track a feature, gate saturation, every activation), a thin layer over
inference/inspect.py, neurons.py and pages.py; the terminal's colours are drawn here."""

import json
import math
import os

import click
import numpy as np
from rich.table import Table
from rich.text import Text as RichText

from ..inference.features import FEATURES, check_feature
from ..inference.inspect import inspect_file
from ..inference.neurons import (
    ActivationDump,
    Correlation,
    Saturation,
    UnitTrace,
    check_recurrent,
    count_chars,
    feature_stream,
    scan,
)
from ..inference.pages import (
    MAX_PAGE_CHARS,
    PageText,
    char_texts,
    page_limit,
    symbol_texts,
    top_lists,
    unit_scale,
    units_page,
    write_page,
)
from ..io.checkpoint import load_checkpoint
from ..io.corpus import file_codes
from ..plot import plot_saturation
from .errors import user_errors
from .options import CONTEXT_SETTINGS, explicit
from .report import console
from .sample import refuse_existing

SURPRISE_BINS = (1, 2, 4, 6, 8)  # bits per character: the terminal's colour steps
SURPRISE_STYLES = ("", "black on #ffffb2", "black on #fed976", "black on #fd8d3c", "black on #f03b20",
                   "white on #bd0026")  # below 1 bit: unmarked
NOT_SCORED = "black on grey70"
UNIT_STYLES = ("white on #2166ac", "black on #67a9cf", "black on #d1e5f0", "", "black on #fddbc7",
               "black on #ef8a62", "white on #b2182b")  # -1 ... +1, in 7 steps
UNIT_EDGES = (-0.75, -0.45, -0.15, 0.15, 0.45, 0.75)


def _nonempty(path):
    if os.path.getsize(path) == 0:
        raise click.ClickException(f"{path}: nothing to inspect: it is empty")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="The likeliest next characters kept for each character.")
@click.option("--json", "as_json", is_flag=True,
              help='JSON Lines, a record per character: {"char", "logprob": the natural log of its probability '
              'given the text before it (null where not scored), "top": [[char, probability], ...] the likeliest '
              'characters before it was read}.')
@click.option("--html", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"Write a self-contained page of the text (its first {MAX_PAGE_CHARS:,} characters): "
              "coloured by surprise, the probability and top-K on hover.")
@click.option("--attention", is_flag=True,
              help="gpt, with --html: draw each head's attention on the page too (the page then holds fewer "
              "characters: 16 MiB of weights, a byte each).")
@click.option("--overwrite", is_flag=True, help="Replace --html FILE if it exists.")
def inspect(checkpoint, file, top_k, as_json, html, attention, overwrite):
    """Show how surprised CHECKPOINT is by each character of FILE: the text coloured by bits per character,
    with a legend and the file's mean.

    FILE is scored as `charrnn eval` scores it (from a fresh state as if after a newline, characters
    outside the vocabulary left out), so minus the mean logprob is eval's loss.

    \b
    Example:
      charrnn inspect checkpoints held_out.py
      charrnn inspect checkpoints held_out.py --json --top-k 3
      charrnn inspect checkpoints held_out.py --html surprise.html
    """
    if attention and html is None:
        raise click.UsageError("--attention draws on the page: give --html FILE too")
    if not (as_json or html) and explicit(click.get_current_context(), "top_k"):
        raise click.UsageError("--top-k lists the likeliest characters in --json records or on the --html page; "
                               "give one of them too")
    if html is not None:
        refuse_existing(html, overwrite, file)
    _nonempty(file)
    with user_errors():
        ckpt = load_checkpoint(checkpoint)
        vocab = ckpt.vocab
        page = PageText(vocab, page_limit(ckpt.model, attention) if html is not None else 0)  # 0: counts only
        out, symbols = console(), symbol_texts(vocab)
        for piece in inspect_file(ckpt.model, vocab, file, top_k, attention=attention):
            if as_json:
                _echo_records(vocab, symbols, piece)
            elif html is None:
                out.print(_surprise_text(vocab, piece), end="")
            page.add(piece)
    if page.scored == 0:
        raise click.ClickException(f"{file}: nothing to score: none of its characters is in the vocabulary")
    summary = f"{file}: {page.summary()}"
    if html is not None:
        with user_errors():
            write_page(html, page.data(summary), title=f"{os.path.basename(file)}: surprise",
                       source=f"{checkpoint} reading {file}")
    if as_json:
        return
    if html is None:
        out.print()
        out.print(_surprise_legend())
    else:
        out.print(f"wrote {html} ({len(page.chars):,} characters)")
    out.print(summary)


def _echo_records(vocab, symbols, piece):
    tops = top_lists(symbols, piece.top_ids, piece.top_probs)
    lines = [json.dumps({"char": c, "logprob": None if math.isnan(lp) else lp, "top": top}, ensure_ascii=False)
             for c, lp, top in zip(char_texts(vocab, piece.codes), piece.logprob.tolist(), tops)]
    click.echo("\n".join(lines))


def _styled(chars, styles):
    """A rich Text of ``chars``, each run of one style as one span."""
    text, start = RichText(), 0
    for end in range(1, len(chars) + 1):
        if end == len(chars) or styles[end] != styles[start]:
            text.append("".join(chars[start:end]), style=styles[start] or None)
            start = end
    return text


def _surprise_text(vocab, piece):
    bins = np.digitize(-piece.logprob / math.log(2), SURPRISE_BINS)  # nan -> past the last bin
    styles = [SURPRISE_STYLES[b] if b < len(SURPRISE_STYLES) else NOT_SCORED for b in bins.tolist()]
    return _styled(char_texts(vocab, piece.codes), styles)


def _surprise_legend():
    legend = RichText("bits/char: ")
    edges = (0, *SURPRISE_BINS)
    for i, style in enumerate(SURPRISE_STYLES):
        label = f"{edges[i]}-{edges[i + 1]}" if i + 1 < len(edges) else f"{edges[i]}+"
        legend.append(f" {label} ", style=style or "reverse")
        legend.append(" ")
    legend.append(" not scored ", style=NOT_SCORED)
    return legend


def _parse_unit(ctx, param, value):
    """LAYER:UNIT[:STATE] -> (layer, unit, state)."""
    if value is None:
        return None
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0].isdigit() or not parts[1].isdigit():
        raise click.BadParameter(f"{value!r} is not LAYER:UNIT or LAYER:UNIT:STATE (e.g. 2:68 or 2:68:c)")
    return int(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else "h"


def _check_feature(ctx, param, value):
    if value is not None:
        try:
            check_feature(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--feature", callback=_check_feature, metavar="F",
              help=f"Rank the units by Pearson correlation with a feature of each character: {', '.join(FEATURES)} "
              "(docs/inspect.md defines them).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Units listed (and on the page).")
@click.option("--json", "as_json", is_flag=True,
              help='JSON: with --feature a list of {"layer", "state", "unit", "r"}; with --saturation a list of '
              '{"layer", "gate", "left", "right"}, the fractions for each unit.')
@click.option("--show", callback=_parse_unit, metavar="LAYER:UNIT[:STATE]",
              help="Colour the text by that unit (state h, c, or gate_i, gate_f, ...; default h).")
@click.option("--html", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"With --feature, write a self-contained page of the text (its first {MAX_PAGE_CHARS:,} characters)"
              " coloured by each of the top units, or by surprise.")
@click.option("--dump", type=click.Path(dir_okay=False), metavar="FILE.npz",
              help="Write every activation: arrays layer{L}/h (and c, gate_i, ...), (characters, units), row i "
              "after reading character i.")
@click.option("--saturation", is_flag=True,
              help="How often each logistic gate is left- (< 0.1) or right-saturated (> 0.9), per layer and gate.")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="PNG",
              help="With --saturation: draw it, a point per unit (needs matplotlib: pip install 'charrnn[plot]').")
@click.option("--overwrite", is_flag=True, help="Replace the --html, --dump or --plot file if it exists.")
def neurons(checkpoint, file, feature, top, as_json, show, html, dump, saturation, plot, overwrite):
    """Look at CHECKPOINT's units (a recurrent model's h, and c for an LSTM, every layer) as it reads FILE.

    The text is read as `charrnn eval` reads it, in one batched pass; row i of every activation is the
    state after reading character i.

    \b
    Example:
      charrnn neurons checkpoints held_out.py --feature bracket-depth
      charrnn neurons checkpoints held_out.py --feature 'regex:"[^"\\n]*"' --json --dump acts.npz
      charrnn neurons checkpoints held_out.py --show 2:68:c
      charrnn neurons checkpoints held_out.py --saturation
    """
    _check_combination(feature, saturation, show, dump, html, plot, as_json)
    for output in (html, dump, plot):
        if output is not None:
            refuse_existing(output, overwrite, file)
    _nonempty(file)
    with user_errors():
        ckpt = load_checkpoint(checkpoint)
        model, vocab = ckpt.model, ckpt.vocab
        check_recurrent(model, "neurons")
        readers = {"correlation": Correlation(model, vocab, feature_stream(feature, vocab, file)) if feature else None,
                   "saturation": Saturation(model) if saturation else None,
                   "trace": UnitTrace(model, *show) if show else None}
        dumper = ActivationDump(model, dump, count_chars(vocab, file)) if dump else None
        try:
            rows = scan(model, vocab, file_codes(vocab, file), [r for r in (*readers.values(), dumper) if r])
        except BaseException:
            if dumper is not None:
                dumper.discard()
            raise
        if dumper is not None:
            dumper.close()
        _report_neurons(ckpt, file, rows, readers, feature, top, as_json, html, plot, checkpoint)
    if dump is not None and not as_json:
        click.echo(f"wrote {dump} ({rows:,} rows)")


def _check_combination(feature, saturation, show, dump, html, plot, as_json):
    if feature and saturation:
        raise click.UsageError("--feature and --saturation are separate reports; give one of them")
    if not (feature or saturation or show or dump):
        raise click.UsageError("give --feature F, --saturation, --show LAYER:UNIT or --dump FILE.npz")
    if html is not None and not feature:
        raise click.UsageError("--html draws the units that track --feature; give --feature F too")
    if plot is not None and not saturation:
        raise click.UsageError("--plot draws --saturation; give --saturation too")
    if show and as_json:
        raise click.UsageError("--show colours the text in the terminal; it does not go with --json")
    if not feature and explicit(click.get_current_context(), "top"):
        raise click.UsageError("--top is how many units of --feature are listed; give --feature F too")


def _report_neurons(ckpt, file, rows, readers, feature, top, as_json, html, plot, checkpoint):
    model, vocab = ckpt.model, ckpt.vocab
    if readers["trace"] is not None:
        console().print(_unit_text(vocab, np.concatenate(list(file_codes(vocab, file))), readers["trace"]))
    if readers["correlation"] is not None:
        ranking = readers["correlation"].ranking()[:top]
        _print_ranking(ranking, feature, rows, as_json)
        if html is not None:
            page = units_page(model, vocab, file_codes(vocab, file), ranking, rows)
            write_page(html, page.data(f"the top units by |r| with {feature}"),
                       title=f"{os.path.basename(file)}: {feature}", source=f"{checkpoint} reading {file}")
            if not as_json:
                click.echo(f"wrote {html}")
    if readers["saturation"] is not None:
        gates = readers["saturation"].fractions()
        if as_json:
            click.echo(json.dumps([g.to_json() for g in gates]))
        else:
            console().print(_saturation_table(gates, rows))
        if plot is not None:
            _plot_saturation(gates, plot)


def _print_ranking(ranking, feature, chars, as_json):
    if as_json:
        click.echo(json.dumps([u.to_json() for u in ranking]))
        return
    table = Table("layer", "state", "unit", "r", title=f"units by |r| with {feature} over {chars:,} characters")
    for u in ranking:
        table.add_row(str(u.layer), u.state, str(u.unit), f"{u.r:+.4f}")
    console().print(table)


def _saturation_table(gates, chars):
    table = Table("layer", "gate", "left (< 0.1)", "right (> 0.9)", "mostly left", "mostly right", "rarely either",
                  title=f"gate saturation over {chars:,} characters: mean fraction of time, and units")
    for g in gates:
        table.add_row(str(g.layer), g.gate, f"{g.left.mean():.3f}", f"{g.right.mean():.3f}",
                      str(int((g.left > 0.5).sum())), str(int((g.right > 0.5).sum())),
                      str(int((g.left + g.right < 0.1).sum())))
    table.caption = ("mostly: saturated that way after more than half of the characters; "
                     "rarely either: saturated after fewer than a tenth")
    return table


def _plot_saturation(gates, output):
    try:
        plot_saturation(gates, output)
    except ImportError:
        raise click.ClickException("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    click.echo(f"wrote {output}", err=True)


def _unit_text(vocab, codes, trace):
    values = trace.values
    scale = unit_scale(values)
    styles = [UNIT_STYLES[b] for b in np.digitize(values / scale, UNIT_EDGES).tolist()]
    shown = _styled(char_texts(vocab, codes), styles)
    legend = RichText(f"\n{trace.name} unit {trace.unit}: ")
    for value, style in zip((-1, -0.6, -0.3, 0, 0.3, 0.6, 1), UNIT_STYLES):
        legend.append(f" {value * scale:+.1f} ", style=style or "reverse")
        legend.append(" ")
    return shown + legend

