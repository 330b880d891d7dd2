"""Per-character features of a text, for finding the units that track them (neurons.py): one number per
character, describing the text once that character has been read.

    values = feature_values("bracket-depth", "f(a[1], {b})")   # (N,) float64: 1 2 2 3 3 2 2 2 3 3 2 1
    values = feature_values('regex:"[^"\\n]*"', text)           # 1 inside a match, else 0

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

Each takes the whole text as a string and is computed with a pass of numpy (or, for quote and indent,
a Python loop over the few characters that matter).
"""

import re

import numpy as np

FEATURES = ("quote", "line-position", "indent", "bracket-depth", "regex:PATTERN")
TAB = 8  # tab stops, for indent


class FeatureError(ValueError):
    """A feature name or pattern that cannot be used; the message is one line for the user."""


def feature_values(name, text):
    """The feature ``name`` (one of ``FEATURES``) of each character of ``text`` (a str): (N,) float64."""
    return feature_function(name)(text)


def feature_function(name):
    """The function, text -> (N,) float64, of the feature ``name``; FeatureError if there is no such feature or
    its pattern does not compile."""
    if name.startswith("regex:"):
        pattern = name[len("regex:") :]
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise FeatureError(f"bad regex {pattern!r}: {e}") from None
        return lambda text: regex_feature(compiled, text)
    functions = {"quote": quote_feature, "line-position": line_position, "indent": indent_feature,
                 "bracket-depth": bracket_depth}
    if name not in functions:
        raise FeatureError(f"unknown feature {name!r}; expected one of {', '.join(FEATURES)}")
    return functions[name]


def _codes(text):
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _spans(starts, ends, n):
    """(n,) float64: 1 for the positions in any [start, end), else 0."""
    events = np.zeros(n + 1, np.int64)
    np.add.at(events, np.asarray(starts, np.intp), 1)
    np.add.at(events, np.asarray(ends, np.intp), -1)
    return (np.cumsum(events[:n]) > 0).astype(np.float64)


def quote_feature(text):
    """1 from an opening double quote up to (not including) its closing one; see the module docstring."""
    starts, ends, inside, escaped = [], [], False, -1
    for match in re.finditer(r'["\\]', text):
        p = match.start()
        if p == escaped:
            continue
        if text[p] == "\\":
            escaped = p + 1 if inside else -1
        elif inside:
            ends.append(p)
            inside = False
        else:
            starts.append(p)
            inside = True
    if inside:
        ends.append(len(text))
    return _spans(starts, ends, len(text))


def line_position(text):
    """Characters since the last newline, the newline itself 0 (the text starts as if after one)."""
    codes = _codes(text)
    index = np.arange(len(codes))
    last_newline = np.maximum.accumulate(np.where(codes == ord("\n"), index, -1)) if len(codes) else index
    return (index - last_newline).astype(np.float64)


def indent_feature(text):
    """The width of the line's leading whitespace read so far (tab stops every 8); see the module docstring."""
    values = np.zeros(len(text))
    for match in re.finditer(r"(?:^|(?<=\n))[ \t]+", text):
        width, p = 0, match.start()
        for ch in match.group():
            width = (width // TAB + 1) * TAB if ch == "\t" else width + 1
            values[p] = width
            p += 1
        end = text.find("\n", p)
        values[p : len(text) if end < 0 else end] = width  # the rest of the line, up to its newline
    return values


def bracket_depth(text):
    """Brackets opened and not yet closed, never below 0: the running sum reflected at 0."""
    codes = _codes(text)
    step = np.isin(codes, [ord(c) for c in "([{"]).astype(np.int64) - np.isin(codes, [ord(c) for c in ")]}"])
    total = np.cumsum(step)
    if not len(total):
        return np.zeros(0)
    return (total - np.minimum(np.minimum.accumulate(total), 0)).astype(np.float64)


def regex_feature(pattern, text):
    """1 for the characters inside a match of ``pattern`` (compiled) found by ``finditer`` over the whole text."""
    matches = [(m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start()]
    return _spans([s for s, _ in matches], [e for _, e in matches], len(text))
