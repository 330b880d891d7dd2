"""Scoring text: mean loss (nats per character), bits per character and perplexity.

    result = evaluate_file(model, vocab, "held_out.txt")   # or evaluate_text(model, vocab, "some text")
    result = evaluate_codes(model, vocab, pieces)          # a file's code points as read_codes read them
    result.loss, result.bpc, result.perplexity, result.chars
"""

import itertools
import math
import queue
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..blas import available_cpus, blas_threads
from ..io.corpus import file_codes, text_codes
from ..models.registry import build_model
from ..models.scoring import chunk_nlls, window_nlls


@dataclass
class EvalResult:
    total_nll: float  # nats, summed over the scored characters
    chars: int  # characters scored
    oov: dict = field(default_factory=dict)  # characters outside the vocabulary -> count (left out)

    @property
    def loss(self):
        return self.total_nll / self.chars if self.chars else float("nan")

    @property
    def bpc(self):
        return self.loss / math.log(2)

    @property
    def perplexity(self):
        return math.exp(self.loss)

    def to_json(self, max_oov=None):
        """The figures as a JSON object; ``oov`` holds the ``max_oov`` most frequent characters (all with None),
        ``oov_chars`` counts every one."""
        return {
            "loss": self.loss,
            "bpc": self.bpc,
            "perplexity": self.perplexity,
            "chars": self.chars,
            "oov_chars": sum(self.oov.values()),
            "oov": dict(Counter(self.oov).most_common(max_oov)),
        }


class _Scorer:
    """Scores a text piece by piece as if after a newline: with one hidden state carried through, or for a
    model with a bounded context (gpt), with the sliding windows of ``window_nlls``."""

    def __init__(self, model, vocab, seq_length=512):
        self.model, self.vocab, self.seq_length = model, vocab, seq_length
        self.reset()

    def reset(self):
        self.prev, self.state = self.vocab.newline_id(), None
        self.history = np.zeros(0, np.intp) if self.prev is None else np.array([self.prev])  # the text so far,
        self.offset = 0  # from its character number offset (the last P characters are enough)

    def score(self, codes):
        """Per-character nats (N,) for the in-vocabulary characters of ``codes``, and the OOV counts."""
        ids = self.vocab.ids_of_codes(codes)
        unknown = ids < 0
        oov = Counter()
        if unknown.any():
            values, counts = np.unique(codes[unknown], return_counts=True)
            oov.update({self.vocab.symbol_text(int(v)): int(c) for v, c in zip(values, counts)})
            ids = ids[~unknown]
        if self.model.context_length is not None:
            return self._score_windows(ids), oov
        if self.prev is not None:
            ids = np.concatenate([[self.prev], ids])
        nlls = [np.zeros(0)]
        for j in range(0, len(ids) - 1, self.seq_length):
            window = ids[j : j + self.seq_length + 1, None].astype(np.intp)  # (t+1, 1)
            chunk, self.state = chunk_nlls(self.model, window[:-1], window[1:], self.state)
            nlls.append(chunk[:, 0])
        if len(ids):
            self.prev = int(ids[-1])
        return np.concatenate(nlls), oov

    def _score_windows(self, ids):
        text = np.concatenate([self.history, ids]).astype(np.intp)
        start = max(len(self.history), 1 - self.offset)  # the text's first character has no prediction
        nlls = window_nlls(self.model, text, start, self.offset)
        keep = min(len(text), self.model.context_length)
        self.offset += len(text) - keep
        self.history = text[len(text) - keep :]
        return nlls


def evaluate_file(model, vocab, path, seq_length=512):
    """Score a whole file with one hidden state carried from its first character to its last.

    Scoring starts as if after a newline (when the vocabulary has one). Characters outside the
    vocabulary are counted in ``oov`` and left out of the text the model reads.
    """
    return evaluate_codes(model, vocab, file_codes(vocab, path), seq_length)


def evaluate_codes(model, vocab, pieces, seq_length=512, check=None):
    """Score the code point (or byte) arrays ``pieces`` as one text, as ``evaluate_file`` scores the file they
    were read from (``pieces``: what io/corpus.py's ``read_codes`` yields for it). ``check()``, if given, is
    called after each piece: what it raises ends the scoring."""
    scorer = _Scorer(model, vocab, seq_length)
    total, count, oov = 0.0, 0, Counter()
    for codes in pieces:
        nlls, line_oov = scorer.score(codes)
        total += float(nlls.sum())
        count += len(nlls)
        oov.update(line_oov)
        if check is not None:
            check()
    return EvalResult(total, count, dict(oov))


def evaluate_text(model, vocab, text, seq_length=512, check=None, piece=2048):
    """Score a string (or bytes, for a byte model) as ``evaluate_file`` scores a file holding it.

    A byte model reads a string in its encoding; a string it cannot encode raises UnicodeEncodeError. The text is
    scored ``piece`` characters at a time, and ``check()`` (if given) is called after each piece: what it raises
    ends the scoring (a server's client that has hung up, say).
    """
    (codes,) = text_codes(vocab, text)  # (N,)
    pieces = (codes[i : i + piece] for i in range(0, len(codes), piece))
    return evaluate_codes(model, vocab, pieces, seq_length, check)


@dataclass
class LineScore:
    number: int  # 1-based
    text: str  # the line as in the file, its newline and any characters outside the vocabulary included
    result: EvalResult


def score_lines(model, vocab, path, reset_per_line=False, batch_size=256):
    """Yield a LineScore for each line of the file (its newline included).

    The hidden state is carried from line to line, so the lines' totals add up to the whole file's;
    with ``reset_per_line`` each line is read as if it followed a newline, from a fresh state, and
    the lines are scored ``batch_size`` at a time (``score_line_batch``): the same figures. (A model with a
    bounded context, gpt, scores its lines one at a time, through ``window_nlls``.)
    """
    lines = enumerate(iter_lines(path, vocab), start=1)
    if reset_per_line and model.context_length is None:
        yield from _score_lines_batched(model, vocab, lines, batch_size)
        return
    scorer = _Scorer(model, vocab)
    for number, codes in lines:
        if reset_per_line:
            scorer.reset()
        nlls, oov = scorer.score(codes)
        yield LineScore(number, line_text(vocab, codes), EvalResult(float(nlls.sum()), len(nlls), dict(oov)))


def line_text(vocab, codes):
    """The text of a line's code points (or bytes, decoded as a whole), every character shown: those outside
    the vocabulary too."""
    if vocab.bytes_mode:
        return bytes(codes.astype(np.uint8)).decode(vocab.encoding, errors="replace")
    return "".join(map(chr, codes.tolist()))


def _score_lines_batched(model, vocab, numbered_lines, batch_size, block_lines=8192):
    """LineScores of (number, codes) lines, each from a fresh state, ``block_lines`` lines scored at once."""
    start = vocab.newline_id()
    while True:
        block = list(itertools.islice(numbered_lines, block_lines))
        if not block:
            return
        seqs, oovs, texts = [], [], []
        for _, codes in block:
            texts.append(line_text(vocab, codes))
            ids = vocab.ids_of_codes(codes)
            unknown = ids < 0
            oov = Counter()
            if unknown.any():
                values, counts = np.unique(codes[unknown], return_counts=True)
                oov.update({vocab.symbol_text(int(v)): int(c) for v, c in zip(values, counts)})
                ids = ids[~unknown]
            seqs.append(ids)
            oovs.append(dict(oov))
        totals, counts = score_line_batch(model, [ids if start is None else np.concatenate([[start], ids])
                                                  for ids in seqs], batch_size)
        for (number, _), text, total, count, oov in zip(block, texts, totals, counts, oovs):
            yield LineScore(number, text, EvalResult(float(total), int(count), oov))


def score_line_batch(model, sequences, batch_size=256, max_tokens=8192, threads=None):
    """Summed -log p of each id sequence's characters after its first, each read from a fresh state.

    The sequences are sorted by length and run ``batch_size`` at a time as one (T, B) batch, padded
    at the end and masked (a padded position never reaches an earlier one), in windows of at most
    ``max_tokens`` // B steps with the state carried. The batches are independent: ``threads`` of them
    (default: one per CPU) run at once, each on its own copy of the model with one BLAS thread (numpy
    lets go of the GIL inside products and element-wise operations on arrays this size). Returns (totals
    (N,) float64, counts (N,)).
    """
    lengths = np.array([max(len(s) - 1, 0) for s in sequences])  # characters scored per sequence
    totals = np.zeros(len(sequences))
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]
    groups = [order[g : g + batch_size] for g in range(0, len(order), batch_size)]
    B = batch_size if len(order) >= batch_size else len(order)  # one batch size per file: one set of buffers
    threads = min(threads or available_cpus(), len(groups))
    if threads <= 1:
        for group in groups:
            totals[group] = _score_group(model, sequences, lengths, group, B, max_tokens)
        return totals, lengths
    free = queue.SimpleQueue()  # the model and its copies: one per running batch
    for replica in [model] + [build_model(model.config, params=model.params) for _ in range(threads - 1)]:
        free.put(replica)

    def score(group):
        replica = free.get()
        try:
            return _score_group(replica, sequences, lengths, group, B, max_tokens)
        finally:
            free.put(replica)

    with blas_threads(1), ThreadPoolExecutor(threads) as pool:
        for group, group_totals in zip(groups, pool.map(score, groups)):
            totals[group] = group_totals
    return totals, lengths


def _score_group(model, sequences, lengths, group, B, max_tokens):
    """Summed -log p of each sequence of ``group`` (indices, sorted by length, at most B) from a fresh state."""
    T = int(lengths[group[-1]])  # the longest, last in sorted order
    padded = np.zeros((T + 1, B), np.intp)  # (T+1, B) ids, zeros after each sequence's end
    for j, row in enumerate(group):
        padded[: lengths[row] + 1, j] = sequences[row]
    scored = np.arange(T)[:, None] < lengths[group]  # (T, len(group)) true where a character is scored
    totals = np.zeros(len(group))
    state, window = None, max(1, max_tokens // B)
    for t in range(0, T, window):
        end = min(t + window, T)
        nlls, state = chunk_nlls(model, padded[t:end], padded[t + 1 : end + 1], state)  # (end - t, B)
        totals += np.where(scored[t:end], nlls[:, : len(group)], 0).sum(axis=0, dtype=np.float64)
    return totals


def iter_lines(path, vocab):
    """The file's lines as code point (or byte) arrays, each with its newline."""
    pending = []
    for codes in file_codes(vocab, path):
        ends = np.flatnonzero(codes == ord("\n")) + 1
        start = 0
        for end in ends:
            yield np.concatenate([*pending, codes[start:end]])
            pending, start = [], end
        if start < len(codes):
            pending.append(codes[start:])
    if pending:
        yield np.concatenate(pending)
