"""Scoring text: mean loss (nats per character), bits per character and perplexity.

    result = evaluate_file(model, vocab, "held_out.txt")
    result.loss, result.bpc, result.perplexity, result.chars
"""

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .data import read_codes
from .model import log_softmax


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


def chunk_nll(model, inputs, targets, state):
    """Summed -log p(targets | inputs) for (T, B) arrays, and the state after them."""
    logits, state = model.forward(inputs, state)
    logp = log_softmax(logits)  # (T, B, V)
    return -float(np.take_along_axis(logp, targets[..., None], axis=2).sum()), state


def streams_nll(model, ids, batch_size, seq_length):
    """Summed -log p over ids[1:] given what precedes each, in B contiguous streams, state carried.

    The streams cover ids[0 : B·L + 1]; the remainder continues the last stream, so every
    character after the first is scored once. Returns (total nats, characters scored).
    """
    n = len(ids) - 1
    if n <= 0:
        return 0.0, 0
    B = min(batch_size, n)
    L = n // B
    starts = np.arange(B) * L  # (B,)
    total, state = 0.0, None
    for j in range(0, L, seq_length):
        t = min(seq_length, L - j)
        window = np.asarray(ids[starts[:, None] + j + np.arange(t + 1)], dtype=np.intp).T  # (t+1, B)
        nll, state = chunk_nll(model, window[:-1], window[1:], state)
        total += nll
    tail = np.asarray(ids[B * L :], dtype=np.intp)
    if len(tail) > 1:
        last_stream = tuple(s[:, B - 1 : B] for s in state)
        for j in range(0, len(tail) - 1, seq_length):
            window = tail[j : j + seq_length + 1, None]  # (t+1, 1)
            nll, last_stream = chunk_nll(model, window[:-1], window[1:], last_stream)
            total += nll
    return total, n


def start_id(vocab):
    """The id a text is read after, as if after a newline, or None if the vocabulary has none."""
    code = ord("\n")
    ids = vocab.ids_of_codes(np.array([code], np.uint32))
    return int(ids[0]) if ids[0] >= 0 else None


def evaluate_file(model, vocab, path, seq_length=512):
    """Score a whole file with one hidden state carried from its first character to its last.

    Scoring starts as if after a newline (when the vocabulary has one). Characters outside the
    vocabulary are counted in ``oov`` and left out of the text the model reads.
    """
    oov = Counter()
    prev = start_id(vocab)
    total, count, state = 0.0, 0, None
    for codes in read_codes(path, vocab.encoding, vocab.bytes_mode):
        ids = vocab.ids_of_codes(codes)
        unknown = ids < 0
        if unknown.any():
            values, counts = np.unique(codes[unknown], return_counts=True)
            oov.update({vocab.symbol_text(int(v)): int(c) for v, c in zip(values, counts)})
            ids = ids[~unknown]
        if prev is not None:
            ids = np.concatenate([[prev], ids])
        if len(ids) < 2:
            prev = int(ids[-1]) if len(ids) else prev
            continue
        for j in range(0, len(ids) - 1, seq_length):
            window = ids[j : j + seq_length + 1, None].astype(np.intp)  # (t+1, 1)
            nll, state = chunk_nll(model, window[:-1], window[1:], state)
            total += nll
            count += len(window) - 1
        prev = int(ids[-1])
    return EvalResult(total, count, dict(oov))
