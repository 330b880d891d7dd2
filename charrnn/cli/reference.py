"""The command reference (docs/cli.md), rendered from the click commands themselves so it cannot go stale.

    python -m charrnn.cli.reference > docs/cli.md

Every command and subcommand of the ``charrnn`` group, in the order they are defined: its usage line, its
help text and a table of its options (the help text of each, and its default where it has one).
"""

import re
import sys

import click

from . import main as charrnn_group

HEADER = """\
# Command reference

Every `charrnn` command and option, with its default. This file is generated from the commands
themselves; do not edit it by hand, regenerate it:

    python -m charrnn.cli.reference > docs/cli.md

What the options do in depth: [training.md](training.md), [sampling.md](sampling.md),
[classify.md](classify.md), [server.md](server.md), [scaling.md](scaling.md).
"""

_DEFAULT_IN_HELP = re.compile(r"\s*\[default: ([^\]]*)\]")  # a default written into an option's help text
_NO_WRAP = "\b"  # click's marker for a paragraph kept as written (examples)


def render(group=None):
    """The markdown reference of ``group`` (the ``charrnn`` command line by default) and everything under it."""
    group = charrnn_group if group is None else group
    parts = [HEADER]
    for path, command, ctx in _walk(group, ("charrnn",), None):
        parts.append(_command(path, command, ctx))
    return "\n".join(parts)


def _walk(command, path, parent):
    """(path, command, context) for ``command`` and, if it is a group, every command under it, depth first."""
    ctx = click.Context(command, info_name=path[-1], parent=parent, **command.context_settings)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from _walk(sub, (*path, name), ctx)


def _command(path, command, ctx):
    lines = [f"## `{' '.join(path)}`", "", "```", command.get_usage(ctx), "```", ""]
    lines += _help_text(command.help or "")
    options = [p for p in command.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]
    if options:
        lines += ["| option | default | meaning |", "|---|---|---|"]
        lines += [_option_row(option, ctx) for option in options]
        lines.append("")
    if isinstance(command, click.Group):
        lines += ["Commands:", ""]
        lines += [f"- `{' '.join((*path, name))}`: {_escape(sub.get_short_help_str(limit=200))}"
                  for name, sub in command.commands.items() if not sub.hidden]
        lines.append("")
    return "\n".join(lines)


def _help_text(text):
    """A command's help as markdown: its paragraphs as prose, a paragraph click keeps as written (``\\b``:
    the examples) as its heading line and a code block."""
    lines = []
    for paragraph in re.split(r"\n\s*\n", _dedent(text).strip()):
        if paragraph.startswith(_NO_WRAP):
            body = paragraph[len(_NO_WRAP):].strip("\n").splitlines()
            if body and body[0].endswith(":") and not body[0].startswith(" "):
                lines += [_escape(body[0]), ""]
                body = body[1:]
            lines += ["```", *_dedent("\n".join(body)).splitlines(), "```", ""]
        else:
            lines += [_escape(" ".join(line.strip() for line in paragraph.splitlines())), ""]
    return lines


def _option_row(option, ctx):
    names, _ = option.get_help_record(ctx)
    help_text = " ".join((option.help or "").split())
    extra = option.get_help_extra(ctx)
    default = extra.pop("default", None)
    written = _DEFAULT_IN_HELP.search(help_text)
    if written:
        default = default or written.group(1)
        help_text = _DEFAULT_IN_HELP.sub("", help_text, count=1).strip()
    notes = [v for k, v in extra.items() if k != "envvars"]
    if notes:
        help_text = f"{help_text} [{'; '.join(notes)}]".strip()
    cells = (f"`{names}`", _escape(default) if default else "", _escape(help_text))
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _dedent(text):
    lines = text.splitlines()
    indent = min((len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()), default=0)
    return "\n".join([lines[0].strip(), *(line[indent:] for line in lines[1:])]) if lines else ""


def _escape(text):
    """Help text as markdown shows it as written: outside `code` spans, a backslash, a star, an underscore that
    is not inside a word (``__label__``) and a ``<`` that would open a tag (``<TAB>``) are escaped."""
    pieces = str(text).split("`")
    for i in range(0, len(pieces), 2):
        pieces[i] = re.sub(r"[\\*]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|<(?=[A-Za-z/!?])", r"\\\g<0>", pieces[i])
    return "`".join(pieces)


def main():
    sys.stdout.reconfigure(encoding="utf-8")
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
