"""Self-contained HTML pages of what a model made of a text: the text coloured by surprise, by a unit or by a
head's attention, each character's probability and top-K on hover (inspect.js draws them, offline).

    page = PageText(vocab)
    for piece in inspect_file(model, vocab, path, top_k=5):
        page.add(piece)                                 # the first MAX_PAGE_CHARS characters are kept
    write_page("surprise.html", page.data(), title="held_out.py", source="...")
    page.add_units([("layer 2 c 68", 0.39, values)])    # units to colour by: (label, r, values (N,))

``page_data`` is the same dictionary for the server's page (serve/page.html runs the same inspect.js).
"""

import base64
import json
import math
import os
import re

import numpy as np

from ..io.atomic import write_atomically
from ..io.corpus import codes_text, text_codes
from .features import FeatureStream
from .inspect import read_pieces
from .neurons import Correlation, UnitTrace, head, scan

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "inspect.html")
SCRIPT = os.path.join(HERE, "inspect.js")
MAX_PAGE_CHARS = 200_000  # a page shows at most this many characters of a text (its first)
MAX_ATTENTION_BYTES = 16 << 20  # a page's attention weights, a byte each: fewer characters shown where they need it


def script():
    """inspect.js, the renderer the pages and the server's page share."""
    with open(SCRIPT, encoding="utf-8") as f:
        return f.read()


def char_texts(vocab, codes):
    """Each code's text: a character, or for a byte model the byte's name as ``Vocab.symbol_text`` gives it."""
    if vocab.bytes_mode:
        return [vocab.symbol_text(int(c)) for c in codes]
    return list(codes_text(vocab, codes))


def page_limit(model, attention=False):
    """The characters a page shows: MAX_PAGE_CHARS, or with (gpt) attention as many as MAX_ATTENTION_BYTES hold
    at layers x heads x context weights each."""
    if not attention or model.context_length is None:  # a recurrent model has no attention to show
        return MAX_PAGE_CHARS
    cfg = model.config
    return max(1, min(MAX_PAGE_CHARS, MAX_ATTENTION_BYTES // (cfg.num_layers * cfg.num_heads * cfg.context_length)))


def symbol_texts(vocab):
    """Each id's symbol as text (``char_texts`` of the vocabulary)."""
    return [vocab.symbol_text(s) for s in vocab.symbols] if vocab.bytes_mode else list(vocab.symbols)


def top_lists(symbols, ids, probs, digits=None):
    """[[symbol, p], ...] for each row of (n, K) ids and probabilities (rounded to ``digits`` if given); None for
    a row without a prediction (ids -1). ``symbols``: ``symbol_texts(vocab)``."""
    keep = (lambda p: p) if digits is None else (lambda p: round(p, digits))
    return [None if row[0] < 0 else [[symbols[i], keep(p)] for i, p in zip(row, ps)]
            for row, ps in zip(ids.tolist(), probs.tolist())]


def unit_scale(values):
    """The magnitude a unit's colours span for ``values`` (n,): their largest |value|, at least 1."""
    return max(1.0, float(np.abs(values).max())) if len(values) else 1.0


class PageText:
    """What a page shows of a text, gathered piece by piece (inspect.py's Pieces): its first ``limit`` characters
    with their logprobs and top-K, and (gpt) attention weights quantised to bytes."""

    def __init__(self, vocab, limit=MAX_PAGE_CHARS):
        self.vocab, self.limit = vocab, limit
        self.symbols = symbol_texts(vocab)
        self.chars, self.logprob, self.top, self.units = [], [], [], []
        self.rows, self.positions, self.weights = [], [], []  # attention: per character, per character read
        self.total, self.scored, self.nats = 0, 0, 0.0  # characters seen (shown or not), scored, their -log p

    def add(self, piece):
        self.total += len(piece.codes)
        if piece.logprob is not None:
            known = ~np.isnan(piece.logprob)
            self.scored += int(known.sum())
            self.nats -= float(piece.logprob[known].sum())
        n = min(len(piece.codes), self.limit - len(self.chars))
        if n <= 0:
            return
        start, codes = len(self.chars), piece.codes[:n]
        self.chars.extend(char_texts(self.vocab, codes))
        if piece.logprob is not None:
            self.logprob.extend(None if math.isnan(v) else round(v, 5) for v in piece.logprob[:n].tolist())
            self.top.extend(top_lists(self.symbols, piece.top_ids[:n], piece.top_probs[:n], digits=5))
        if piece.attention is not None:
            known = self.vocab.ids_of_codes(codes) >= 0
            self.rows.extend((len(self.positions) + np.cumsum(known) - 1).tolist())
            self.positions.extend((start + np.flatnonzero(known)).tolist())
            self.weights.append(np.round(piece.attention[:n][known] * 255).astype(np.uint8))

    def add_units(self, units):
        """Units to colour the text by: (label, r or None, values (N,)) each, values of the whole text."""
        for label, r, values in units:
            shown = np.asarray(values[: len(self.chars)], np.float64)
            self.units.append({"label": label, "r": None if r is None or math.isnan(r) else round(r, 4),
                               "scale": unit_scale(shown), "values": np.round(shown, 3).tolist()})

    def summary(self):
        """The scored characters' count and mean surprise, as a line."""
        if not self.scored:
            return f"{self.total:,} characters, none scored"
        loss = self.nats / self.scored
        return f"{self.scored:,} characters scored, mean {loss / math.log(2):.4f} bits/char (loss {loss:.4f} nats/char)"

    def data(self, summary=""):
        """The page's data (inspect.js's ``data``)."""
        if self.total > len(self.chars):
            summary += f" \u00b7 the page shows the first {len(self.chars):,} of {self.total:,} characters"
        data = {"chars": self.chars, "summary": summary.strip(" \u00b7")}
        if self.logprob:
            data.update(logprob=self.logprob, top=self.top)
        if self.units:
            data.update(units=self.units, show="units")
        if self.weights:
            weights = np.concatenate(self.weights)  # (characters read, L, nh, P)
            data["attention"] = {"layers": weights.shape[1], "heads": weights.shape[2], "span": weights.shape[3],
                                 "row": self.rows, "pos": self.positions,
                                 "weights": base64.b64encode(weights.tobytes()).decode("ascii")}
        return data


def units_page(model, vocab, pieces, units, total, top_k=5, limit=MAX_PAGE_CHARS, check=None):
    """A PageText of the first ``limit`` characters of a text of ``total``, given as code ``pieces``, with its
    surprise and the ``units`` (neurons.py's UnitScores) to colour it by, read in one pass; ``check()``, if
    given, is called between passes (it may raise, to stop)."""
    traces = [UnitTrace(model, u.layer, u.unit, u.state) for u in units]
    page, row = PageText(vocab, limit), 0
    for piece in read_pieces(model, vocab, head(pieces, limit), top_k, scores=True, states=bool(units)):
        if check is not None:
            check()
        page.add(piece)
        for trace in traces:
            trace.add(piece, row)
        row += len(piece.codes)
    page.add_units([(u.label(), u.r, trace.values) for u, trace in zip(units, traces)])
    page.total = total
    return page


def text_page(model, vocab, text, top_k=5, feature=None, top=10, check=None):
    """The page data of a string (the server's inspect view): its surprise and top-K and, given a ``feature``
    (features.py; a recurrent model), its ``top`` units by |r| to colour it by. ``check()``, if given, is
    called between passes (it may raise, to stop). ValueError for a feature it cannot use."""
    pieces = text_codes(vocab, text)
    ranking = []
    if feature is not None:
        correlation = Correlation(model, vocab, FeatureStream(feature, codes_text(vocab, pieces[0])))
        scan(model, vocab, pieces, [correlation], check)
        ranking = correlation.ranking()[:top]
    page = units_page(model, vocab, pieces, ranking, len(pieces[0]), top_k, check=check)
    return page.data(page.summary())


def page_html(data, title, source=""):
    """The self-contained page for ``data``: template, data and script inline."""
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    values = {"title": _escape(title), "source": _escape(source),
              "data": json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c"),
              "script": script()}
    return re.sub(r"\{(title|source|data|script)\}", lambda m: values[m.group(1)], template)


def write_page(path, data, title, source=""):
    """Write ``page_html`` to ``path`` atomically."""
    html = page_html(data, title, source).encode("utf-8")
    write_atomically(path, ".html", lambda f: f.write(html))


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
