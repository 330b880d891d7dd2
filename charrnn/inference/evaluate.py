"""Scoring text: mean loss (nats per character), bits per character and perplexity.

    result = evaluate_file(model, vocab, "held_out.txt")   # or evaluate_text(model, vocab, "some text")
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
from ..io.corpus import read_codes, text_to_codes
from ..models.registry import build_model
from ..nn.numerics import log_softmax


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

    def to_json(self):
        return {
            "loss": self.loss,
            "bpc": self.bpc,
            "perplexity": self.perplexity,
            "chars": self.chars,
            "oov_chars": sum(self.oov.values()),
            "oov": self.oov,
        }


def chunk_nlls(model, inputs, targets, state):
    """-log p(targets | inputs) per position, (T, B), for (T, B) arrays; and the state after them."""
    logits, state = model.forward(inputs, state)
    logp = log_softmax(logits)  # (T, B, V)
    return -np.take_along_axis(logp, targets[..., None], axis=2)[..., 0], state


def chunk_nll(model, inputs, targets, state):
    """Summed -log p(targets | inputs) for (T, B) arrays, and the state after them."""
    nlls, state = chunk_nlls(model, inputs, targets, state)
    return float(nlls.sum()), state


def window_plan(P, first, end):
    """``window_nlls``'s windows for the characters at positions first..end-1 of a text, by a model with a
    context of P: (first input, first target, last target + 1) of each, positions in the text."""
    S = max(1, P // 2)
    windows, t = [], first
    while t < end:
        a = 0 if t <= P else ((t - P - 1) // S + 1) * S
        stop = min(end, a + P + 1)
        windows.append((a, t, stop))
        t = stop
    return windows


def window_nlls(model, ids, start, offset=0, batch_size=64, engine=None):
    """-log p of ids[start:] (N,), each given the characters before it that a model with a context of P
    characters sees: sliding windows of P characters, placed by position in the text, not by chunk.

    ``ids`` is the text from its character number ``offset`` on. With S = max(1, P // 2): characters
    1..P are predicted from all the characters before them (window 0..P-1); after that, windows start
    at S, 2S, 3S, ... and character t is predicted by the window starting at ((t - P - 1) // S + 1) S:
    from at least P - S + 1 and at most P characters before it. A character's score depends only on its
    position and the text, so any split of a text into pieces gives the same numbers. ``engine``
    (engines/), if given, computes the windows' scores.
    """
    P = model.context_length

    def score(window):  # (n+1, W) ids -> -log p of window[1:] (n, W)
        if engine is not None:
            return engine.chunk_nlls(window[:-1], window[1:])[0]
        return chunk_nlls(model, window[:-1], window[1:], None)[0]

    ids = np.asarray(ids, dtype=np.intp)
    windows = window_plan(P, start + offset, offset + len(ids))
    pieces = []
    full = [w for w in windows if w[2] - w[0] == P + 1]
    for b in range(0, len(full), batch_size):
        group = full[b : b + batch_size]
        rows = np.array([a - offset for a, _, _ in group])[:, None] + np.arange(P + 1)  # (W, P+1)
        window = ids[rows].T  # (P+1, W)
        nlls = score(window)  # (P, W)
        pieces.extend(nlls[t - a - 1 :, j] for j, (a, t, _) in enumerate(group))
    by_start = dict(zip(full, pieces))
    nlls = []
    for a, t, stop in windows:
        if (a, t, stop) not in by_start:  # a window the text's end cuts short
            window = ids[a - offset : stop - offset, None]  # (n+1, 1)
            by_start[a, t, stop] = score(window)[t - a - 1 :, 0]
        nlls.append(by_start[a, t, stop])
    return np.concatenate(nlls) if nlls else np.zeros(0)


def streams_nll(model, ids, batch_size, seq_length, engine=None):
    """Summed -log p over ids[1:] given what precedes each, in B contiguous streams, state carried.

    The streams cover ids[0 : B·L + 1]; the remainder continues the last stream, so every
    character after the first is scored once. ``engine`` (engines/) scores the B
    streams. A model with a bounded context (gpt) reads sliding windows instead (``window_nlls``).
    Returns (total nats, characters scored).
    """
    n = len(ids) - 1
    if n <= 0:
        return 0.0, 0
    if model.context_length is not None:
        return float(window_nlls(model, ids, 1, engine=engine).sum()), n
    B = min(batch_size, n)
    L = n // B
    starts = np.arange(B) * L  # (B,)
    total, state = 0.0, None
    for j in range(0, L, seq_length):
        t = min(seq_length, L - j)
        window = np.asarray(ids[starts[:, None] + j + np.arange(t + 1)], dtype=np.intp).T  # (t+1, B)
        if engine is None:
            nll, state = chunk_nll(model, window[:-1], window[1:], state)
        else:
            nll, state = engine.chunk_nll(window[:-1], window[1:], state)
        total += nll
    tail = np.asarray(ids[B * L :], dtype=np.intp)
    if len(tail) > 1:
        last_stream = tuple(s[:, B - 1 : B] for s in state)
        for j in range(0, len(tail) - 1, seq_length):
            window = tail[j : j + seq_length + 1, None]  # (t+1, 1)
            nll, last_stream = chunk_nll(model, window[:-1], window[1:], last_stream)
            total += nll
    return total, n


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
    scorer = _Scorer(model, vocab, seq_length)
    total, count, oov = 0.0, 0, Counter()
    for codes in read_codes(path, vocab.encoding, vocab.bytes_mode, hint=_decode_hint(vocab)):
        nlls, line_oov = scorer.score(codes)
        total += float(nlls.sum())
        count += len(nlls)
        oov.update(line_oov)
    return EvalResult(total, count, dict(oov))


def evaluate_text(model, vocab, text, seq_length=512):
    """Score a string (or bytes, for a byte model) as ``evaluate_file`` scores a file holding it.

    A byte model reads a string in its encoding; a string it cannot encode raises UnicodeEncodeError.
    """
    if vocab.bytes_mode and isinstance(text, str):
        text = text.encode(vocab.encoding)
    nlls, oov = _Scorer(model, vocab, seq_length).score(text_to_codes(text, vocab.bytes_mode))
    return EvalResult(float(nlls.sum()), len(nlls), dict(oov))


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
    for codes in read_codes(path, vocab.encoding, vocab.bytes_mode, hint=_decode_hint(vocab)):
        ends = np.flatnonzero(codes == ord("\n")) + 1
        start = 0
        for end in ends:
            yield np.concatenate([*pending, codes[start:end]])
            pending, start = [], end
        if start < len(codes):
            pending.append(codes[start:])
    if pending:
        yield np.concatenate(pending)


def _decode_hint(vocab):
    return f"this model reads {vocab.encoding} text (a model trained with --bytes reads any file)"
