"""Labelled lines for the classifier: fastText's format (or TSV), the label set, and padded batches.

    data = read_labelled("train.txt")                 # fastText: "__label__de __label__at Müller"
    data = read_labelled("train.tsv", fmt="tsv")      # "de<TAB>Müller"
    vocab = build_vocab(data.texts)                   # the characters of the training texts
    labels = LabelSet.from_lines(data.labels)
    batch = pad_batch(ids, offsets, lengths, rows)    # (T, B) ids, texts longest first

Blank lines are skipped (as fastText does). A line with labels and no text, text and no label, a file
with no lines, or with one label in all, raises ``LabelledDataError`` with a one-line message that
names the file and line.

Texts become ids through the charrnn ``Vocab``: a character outside it maps to one extra id,
``len(vocab)`` (unknown), which is also what padding holds.
"""

import re
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..io.corpus import Vocab

LABEL_PREFIX = "__label__"
_LABEL_TOKEN = re.compile(r"__label__(\S*)\s*")
FORMATS = ("fasttext", "tsv")
MAX_BATCH_CHARS = 1 << 14  # a batch's texts x its longest text, at most (one text longer than this goes alone)


class LabelledDataError(Exception):
    """A labelled file that cannot be used; the message is one line for the user."""


@dataclass
class LabelledLines:
    """The usable lines of a file: each text with its labels (a tuple of names, without the prefix)."""

    path: str
    texts: list
    labels: list  # tuple of label names per line
    line_numbers: list  # 1-based, in the file


def split_labels(line, fmt="fasttext"):
    """(labels, text) of one line (no newline): fastText's leading ``__label__NAME`` tokens, or TSV's
    ``LABEL<TAB>TEXT`` (several labels comma-separated). Labels () when there are none."""
    if fmt == "tsv":
        if "\t" not in line:
            return (), line
        head, text = line.split("\t", 1)
        return tuple(name for name in (s.strip() for s in head.split(",")) if name), text
    labels = []
    rest = line.lstrip()
    while rest.startswith(LABEL_PREFIX):
        token = _LABEL_TOKEN.match(rest)  # fastText splits tokens at spaces and tabs
        if token.group(1):
            labels.append(token.group(1))
        rest = rest[token.end() :]
    return tuple(labels), rest


def read_lines(path):
    """The file's lines as text (UTF-8, a byte-order mark dropped, "\n" or "\r\n" stripped); ``-``: standard
    input's. Raise LabelledDataError for a missing file, a directory or invalid UTF-8 (naming the line)."""
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except IsADirectoryError:
        raise LabelledDataError(f"{path}: is a directory, not a text file") from None
    except OSError as e:
        raise LabelledDataError(f"{path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise LabelledDataError(f"{path}: line {line}: not valid UTF-8 (byte {e.start})") from None
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]  # as fastText: \n ends a line


def read_labelled(path, fmt="fasttext", require_labels=True):
    """Parse a labelled file; see the module docstring for what is refused. With ``require_labels``
    False (predicting) a line's labels are optional and ignored by the caller."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    texts, labels, numbers = [], [], []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        names, text = split_labels(line, fmt)
        if require_labels and not names:
            expected = "LABEL<TAB>TEXT" if fmt == "tsv" else f"{LABEL_PREFIX}NAME at the start"
            raise LabelledDataError(f"{path}: line {number}: no label (expected {expected}): {line[:40]!r}")
        if not text.strip():
            raise LabelledDataError(f"{path}: line {number}: a label but no text: {line[:40]!r}")
        texts.append(text)
        labels.append(names)
        numbers.append(number)
    if not texts:
        raise LabelledDataError(f"{path}: no labelled lines (the file is empty)")
    return LabelledLines(path, texts, labels, numbers)


@dataclass(frozen=True)
class LabelSet:
    """The classes in id order (label names without the prefix), most frequent first as fastText lists them."""

    names: tuple

    def __len__(self):
        return len(self.names)

    @classmethod
    def from_lines(cls, line_labels, path="the training file"):
        counts = Counter(name for names in line_labels for name in names)
        if len(counts) < 2:
            only = f" ({next(iter(counts))!r})" if counts else ""
            raise LabelledDataError(f"{path}: only one label in the whole file{only}; a classifier needs at least two")
        return cls(tuple(sorted(counts, key=lambda n: (-counts[n], n))))

    def index(self):
        return {name: i for i, name in enumerate(self.names)}

    def targets(self, line_labels):
        """(N, C) target distribution: each line's known labels, equally weighted; rows of unknown labels only
        are all zero. Also the (N,) count of each line's labels the set does not hold."""
        index = self.index()
        Y = np.zeros((len(line_labels), len(self.names)))
        unknown = np.zeros(len(line_labels), np.int64)
        for i, names in enumerate(line_labels):
            known = [index[n] for n in names if n in index]
            unknown[i] = len(names) - len(known)
            if known:
                Y[i, known] = 1.0 / len(known)
        return Y, unknown

    def to_json(self):
        return list(self.names)


def build_vocab(texts):
    """The charrnn Vocab of every character in ``texts`` (sorted by code point)."""
    codes = np.unique(np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32))
    return Vocab(tuple(chr(c) for c in codes))


@dataclass
class EncodedTexts:
    """Texts as one id vector: text i is ``ids[offsets[i] : offsets[i] + lengths[i]]``."""

    ids: np.ndarray  # (total,) intp
    offsets: np.ndarray  # (N,)
    lengths: np.ndarray  # (N,)

    def __len__(self):
        return len(self.lengths)


def encode_texts(texts, vocab):
    """EncodedTexts for ``texts`` (strs); characters outside ``vocab`` get the unknown id, len(vocab)."""
    lengths = np.fromiter((len(t) for t in texts), np.int64, len(texts))
    offsets = np.zeros(len(texts), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
    ids = vocab.ids_of_codes(codes)
    ids[ids < 0] = len(vocab)
    return EncodedTexts(ids.astype(np.intp), offsets, lengths)


@dataclass
class Batch:
    """Padded texts, longest first: ``ids`` (T, B), ``lengths`` (B,) descending, ``rows``: which texts."""

    ids: np.ndarray
    lengths: np.ndarray
    rows: np.ndarray


def pad_batch(encoded, rows, pad_id):
    """The texts ``rows`` of ``encoded`` as a Batch, sorted longest first, padded with ``pad_id``."""
    rows = np.asarray(rows)
    lengths = encoded.lengths[rows]
    order = np.argsort(-lengths, kind="stable")
    rows, lengths = rows[order], lengths[order]
    T = int(lengths[0])
    t = np.arange(T)[:, None]  # (T, 1)
    valid = t < lengths[None, :]  # (T, B)
    positions = np.where(valid, encoded.offsets[rows][None, :] + t, 0)
    ids = np.where(valid, encoded.ids[positions] if len(encoded.ids) else pad_id, pad_id)
    return Batch(ids, lengths, rows)


def length_buckets(lengths, batch_size, rng=None, max_chars=MAX_BATCH_CHARS):
    """Index arrays of batches of texts of similar length: sorted by length (ties in random order with
    ``rng``), cut into ``batch_size`` texts (fewer where B x the longest would pass ``max_chars``, so long
    texts never cost batch_size x their length in memory), the batches in random order with ``rng``
    (else longest first)."""
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(-lengths, kind="stable")
    else:
        order = np.lexsort((rng.random(len(lengths)), -lengths))
    batches, i = [], 0
    while i < len(order):
        size = min(batch_size, max(1, max_chars // max(1, int(lengths[order[i]]))))
        batches.append(order[i : i + size])
        i += size
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
