"""Per-character features of a text, for finding the units that track them (neurons.py): one number per
character, describing the text once that character has been read.

    values = feature_values("bracket-depth", "f(a[1], {b})")   # (N,) float64: 0 1 1 2 2 1 1 1 2 2 1 0
    stream = FeatureStream("quote")                           # the same, piece by piece:
    values = stream.values(piece)                              # for each consecutive piece of the text (a str)

    quote           1 from an opening double quote up to the character before its closing one: inside a
                    quotation, once that character is read. A backslash inside a quotation escapes the
                    next character (\\" does not close it); single quotes are ordinary characters.
    line-position   characters since the last newline: 0 for the newline itself, 1 for the character
                    after it (the text starts as if after a newline)
    indent          the width of the line's leading whitespace read so far (a tab advances to the next
                    multiple of 8): it counts up within the indentation and holds after it
    bracket-depth   brackets ( [ { opened and not yet closed by ) ] } (of any kind); a closing bracket
                    with none open counts nothing
    regex:PATTERN   1 for the characters inside a match of PATTERN (Python's re, found by re.finditer over
                    the whole text), else 0

A stream carries what it needs from piece to piece (the position in the line, the depth, ...), so a text of
any length costs memory for one piece; a regex is matched against the whole text once, given when the stream
is made, and keeps only the matches' spans.
"""

import re

import numpy as np

from ..io.corpus import text_to_codes

FEATURES = ("quote", "line-position", "indent", "bracket-depth", "regex:PATTERN")
TAB = 8  # tab stops, for indent
OPEN, CLOSE = (np.array([ord(c) for c in chars], np.uint32) for chars in ("([{", ")]}"))


class FeatureError(ValueError):
    """A feature name or pattern that cannot be used; the message is one line for the user."""


def check_feature(name):
    """Raise FeatureError unless ``name`` is a feature (and its pattern compiles); return its compiled pattern for
    a regex, else None."""
    if name.startswith("regex:"):
        pattern = name[len("regex:") :]
        try:
            return re.compile(pattern)
        except re.error as e:
            raise FeatureError(f"bad regex {pattern!r}: {e}") from None
    if name not in STEPS:
        raise FeatureError(f"unknown feature {name!r}; expected one of {', '.join(FEATURES)}")
    return None


def feature_values(name, text):
    """The feature ``name`` (one of ``FEATURES``) of each character of ``text`` (a str): (N,) float64."""
    return FeatureStream(name, text).values(text)


class FeatureStream:
    """The feature ``name`` over a text given piece by piece, in order: ``values(piece)`` (n,) float64 for each.
    A regex needs the whole text (a str) here, to be matched once; the other features read only the pieces."""

    def __init__(self, name, text=None):
        pattern = check_feature(name)
        self.name, self.position = name, 0  # characters given so far
        if pattern is not None:
            if text is None:
                raise ValueError("a regex feature is matched against the whole text: give it")
            spans = [(m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start()]
            self.spans = np.array(spans, np.int64).reshape(-1, 2)  # (matches, 2): [start, end) of each
        else:
            self.step, self.state = STEPS[name], INITIAL[name]

    def values(self, piece):
        n = len(piece)
        if self.name.startswith("regex:"):
            values = _inside(self.spans, self.position, n)
        else:
            values, self.state = self.step(piece, self.state)
        self.position += n
        return values


def _inside(spans, offset, n):
    """(n,) float64: 1 for the positions offset..offset+n-1 inside any [start, end) of ``spans``, else 0."""
    starts = np.clip(spans[:, 0] - offset, 0, n)
    ends = np.clip(spans[:, 1] - offset, 0, n)
    events = np.zeros(n + 1, np.int64)
    np.add.at(events, starts, 1)
    np.add.at(events, ends, -1)
    return (np.cumsum(events[:n]) > 0).astype(np.float64)


def quote_step(piece, state):
    """quote over ``piece``; state: (inside a quotation, the piece's first character escaped)."""
    inside, escaped = state
    starts, ends = ([0], []) if inside else ([], [])
    escaped = 0 if escaped else -1  # the position of an escaped character
    for match in re.finditer(r'["\\]', piece):
        p = match.start()
        if p == escaped:
            continue
        if piece[p] == "\\":
            escaped = p + 1 if inside else -1
        elif inside:
            ends.append(p)
            inside = False
        else:
            starts.append(p)
            inside = True
    ends += [len(piece)] * (len(starts) - len(ends))
    spans = np.array([starts, ends], np.int64).T.reshape(-1, 2)
    return _inside(spans, 0, len(piece)), (inside, escaped == len(piece))


def line_position_step(piece, since):
    """line-position over ``piece``; state: the last character's value."""
    codes = text_to_codes(piece, bytes_mode=False)  # (n,)
    index = np.arange(len(codes))
    last_newline = np.maximum.accumulate(np.where(codes == ord("\n"), index, -1 - since)) if len(codes) else index
    values = (index - last_newline).astype(np.float64)
    return values, int(values[-1]) if len(values) else since


def indent_step(piece, state):
    """indent over ``piece``; state: (the line's indentation read so far, still within it)."""
    width, leading = state
    values, p = np.zeros(len(piece)), 0
    for k, line in enumerate(piece.split("\n")):
        if k:  # the newline before this line: a new line starts, with nothing read
            p, width, leading = p + 1, 0, True
        if leading:
            indentation = len(line) - len(line.lstrip(" \t"))
            for ch in line[:indentation]:
                width = (width // TAB + 1) * TAB if ch == "\t" else width + 1
                values[p] = width
                p += 1
            leading = indentation == len(line)
            line = line[indentation:]
        values[p : p + len(line)] = width
        p += len(line)
    return values, (width, leading)


def bracket_depth_step(piece, depth):
    """bracket-depth over ``piece``: the running sum of opens and closes from ``depth``, reflected at 0."""
    codes = text_to_codes(piece, bytes_mode=False)  # (n,)
    if not len(codes):
        return np.zeros(0), depth
    total = depth + np.cumsum(np.isin(codes, OPEN).astype(np.int64) - np.isin(codes, CLOSE))
    values = total - np.minimum(np.minimum.accumulate(total), 0)
    return values.astype(np.float64), int(values[-1])


STEPS = {"quote": quote_step, "line-position": line_position_step, "indent": indent_step,
         "bracket-depth": bracket_depth_step}
INITIAL = {"quote": (False, False), "line-position": 0, "indent": (0, True), "bracket-depth": 0}
