"""Reading a text as ``charrnn eval`` scores it, keeping what the model thinks at every character: how likely
it found the character, the characters it found likeliest before reading it, and each unit's state after.

    for piece in inspect_file(model, vocab, "held_out.py", top_k=5, states=True):
        piece.codes        # (n,) the characters (code points; bytes for a byte model), every one of the text
        piece.logprob      # (n,) ln p(character | the text before it); nan where not scored (outside the vocabulary)
        piece.top_ids      # (n, K) the K likeliest next ids before the character is read, likeliest first
        piece.top_probs    # (n, K) their probabilities
        piece.units        # "layer1/h" -> (n, H): each layer's states and gates after reading each character
        piece.attention    # gpt: (n, L, nh, P) each head's weights after reading it, d characters back at [..., d]

The text is read as ``evaluate_file`` reads it: from a fresh state as if after a newline (when the
vocabulary has one), characters outside the vocabulary left out of what the model reads, the state carried
through, a recurrent model in passes of ``SEQ_LENGTH`` characters (one batched forward pass each, its
states and gates kept), gpt in ``window_nlls``'s sliding windows. So ``-mean(logprob)`` over the scored
characters is eval's loss. A character the model does not read keeps the row before it: its top-K is the
distribution the next character is drawn from, its states those after the last character read.
"""

from dataclasses import dataclass

import numpy as np

from ..io.corpus import file_codes, text_codes
from ..models.scoring import window_scores
from ..nn.numerics import log_softmax

SEQ_LENGTH = 512  # characters per forward pass, as evaluate.py's


@dataclass
class Piece:
    """What the model made of n consecutive characters of a text; see the module docstring."""

    codes: np.ndarray  # (n,) uint32
    logprob: np.ndarray | None  # (n,) float64
    top_ids: np.ndarray | None  # (n, K) int; -1 where there is no prediction (the first character, no newline)
    top_probs: np.ndarray | None  # (n, K) float64
    units: dict | None  # "layer{L}/{name}" -> (n, H), layers from 1, names as CharRNN.forward_states's
    attention: np.ndarray | None  # (n, L, nh, P)


def inspect_file(model, vocab, path, top_k=5, scores=True, states=False, attention=False):
    """``Piece``s covering the file at ``path``, in order (see the module docstring): with ``scores`` the
    logprobs and top-K, with ``states`` every layer's states and gates (recurrent models), with
    ``attention`` the attention weights (gpt)."""
    return read_pieces(model, vocab, file_codes(vocab, path), top_k, scores, states, attention)


def inspect_text(model, vocab, text, top_k=5, scores=True, states=False, attention=False):
    """As ``inspect_file``, for a string (or bytes, for a byte model, which reads a string in its encoding)."""
    return read_pieces(model, vocab, text_codes(vocab, text), top_k, scores, states, attention)


def read_pieces(model, vocab, pieces, top_k=5, scores=True, states=False, attention=False):
    """``Piece``s for a text given as arrays of codes, one per ``SEQ_LENGTH`` characters; see ``inspect_file``."""
    if states and model.context_length is not None:
        raise ValueError("a gpt model has no recurrent states to show; its attention is (--attention)")
    if attention and model.context_length is None:
        raise ValueError("attention is a gpt model's; a recurrent model shows its states")
    if model.context_length is None:
        reader = _RecurrentReader(model, vocab.newline_id(), scores, states)
    else:
        reader = _WindowReader(model, vocab.newline_id(), attention)
    for codes in pieces:
        for s in range(0, len(codes), SEQ_LENGTH):
            yield _piece(reader.read, vocab, codes[s : s + SEQ_LENGTH], top_k if scores else None)


def _piece(read, vocab, codes, top_k):
    """The Piece for ``codes``: the reader's rows, spread over every character (see the module docstring)."""
    ids = vocab.ids_of_codes(codes)
    known = ids >= 0
    rows = read(ids[known])  # name -> (m+1, ...): row 0 before the first character read, row j after the j-th
    through = np.cumsum(known)  # the row after the last character read, up to and including each
    logprob = top_ids = top_probs = None
    if top_k is not None:
        logp = rows["logp"][through - known]  # (n, V): the distribution each character is drawn from
        logprob = np.where(known, logp[np.arange(len(ids)), np.maximum(ids, 0)], np.nan).astype(np.float64)
        top_ids, top_probs = top_of(logp, top_k)
    units = {name: a[through] for name, a in rows.items() if name.startswith("layer")} or None
    attention = rows["attention"][through] if "attention" in rows else None
    return Piece(codes, logprob, top_ids, top_probs, units, attention)


def top_of(logp, k):
    """The k likeliest ids of each row of ``logp`` (n, V), likeliest first, and their probabilities:
    (n, k) ids (-1 for a row of nan: no prediction) and (n, k) float64 probabilities."""
    k = min(k, logp.shape[1])
    part = np.argpartition(-logp, k - 1, axis=1)[:, :k]  # (n, k), unordered
    order = np.argsort(-np.take_along_axis(logp, part, axis=1), axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1)
    probs = np.exp(np.take_along_axis(logp, ids, axis=1).astype(np.float64))
    ids[np.isnan(logp[:, 0])] = -1
    return ids, probs


class _RecurrentReader:
    """Reads ids through a recurrent model in one batched pass per call, the state carried between calls."""

    def __init__(self, model, start, scores, states):
        self.model, self.scores, self.states, self.state = model, scores, states, None
        cfg, dtype = model.config, model.dtype
        self.last = {}  # name -> (1, ...): the row after the last character read
        if scores:
            self.last["logp"] = np.full((1, cfg.vocab_size), np.nan, dtype)  # before any: no prediction
        if states:
            self.last.update({f"layer{k}/{name}": np.zeros((1, cfg.hidden_size), dtype)
                              for k in range(1, cfg.num_layers + 1) for name in model.state_names()})
        if start is not None:  # begin as if after a newline
            self.read(np.array([start]))

    def read(self, ids):
        """name -> (m+1, ...) for ``ids`` (m,): row 0 carried from the previous call, row j after ids[j-1]."""
        new = self._forward(ids.astype(np.intp)[:, None]) if len(ids) else {k: a[:0] for k, a in self.last.items()}
        rows = {name: np.concatenate([before, new[name]]) for name, before in self.last.items()}
        self.last = {name: a[-1:] for name, a in rows.items()}
        return rows

    def _forward(self, ids):
        """name -> (m, ...) for ids (m, 1): one forward pass, from the carried state."""
        if not self.states:
            logits, self.state = self.model.forward(ids, self.state)  # (m, 1, V)
            return {"logp": log_softmax(logits[:, 0])}
        layers, self.state = self.model.forward_states(ids, self.state)  # each (m, 1, H)
        rows = {f"layer{k}/{name}": a[:, 0] for k, layer in enumerate(layers, 1) for name, a in layer.items()}
        if self.scores:
            rows["logp"] = log_softmax(self.model.output(layers[-1]["h"][:, 0]))  # (m, V)
        return rows


class _WindowReader:
    """Reads ids through a model with a bounded context (gpt) in ``window_nlls``'s sliding windows, keeping the
    last P characters read as history, as evaluate.py's scorer does."""

    def __init__(self, model, start, attention):
        self.model, self.attention = model, attention
        self.history = np.zeros(0, np.intp) if start is None else np.array([start], np.intp)
        self.offset = 0  # the history starts at this character of the text read so far

    def read(self, ids):
        """name -> (m+1, ...) for ``ids`` (m,): row j from the window that predicts ids[j], row m after the last."""
        text = np.concatenate([self.history, ids, [0]]).astype(np.intp)  # a placeholder after them: row m
        start = max(len(self.history), 1 - self.offset)  # the text's first character has no prediction
        outputs = window_scores(self.model, text, start, self.offset, 64, self._score)
        missing = len(ids) + 1 - (len(outputs[0]) if outputs else 0)  # that first character's row: none
        cfg = self.model.config
        logp = np.concatenate([np.full((missing, cfg.vocab_size), np.nan), *outputs[:1]])
        attention = None
        if self.attention:
            shape = (missing, cfg.num_layers, cfg.num_heads, cfg.context_length)
            attention = np.concatenate([np.zeros(shape), *outputs[1:]])
        read = text[:-1]
        keep = min(len(read), cfg.context_length)
        self.offset += len(read) - keep
        self.history = read[len(read) - keep :]
        return {"logp": logp} if attention is None else {"logp": logp, "attention": attention}

    def _score(self, window):
        """(n+1, W) ids -> (log-probabilities (n, W, V),) and, with attention, (n, W, L, nh, P) weights."""
        if not self.attention:
            return (log_softmax(self.model.forward(window[:-1])[0]),)
        logits, weights = self.model.forward_attention(window[:-1])
        return log_softmax(logits), _aligned(weights, self.model.context_length)


def _aligned(weights, P):
    """Blocks' attention weights, a list of (W, nh, n, n), as (n, W, L, nh, P): for each query i, its weight on
    the key d positions back at [..., d] (0 where the window has none)."""
    stacked = np.stack(weights, axis=1)  # (W, L, nh, n, n)
    n = stacked.shape[-1]
    back = np.arange(n)[:, None] - np.arange(P)[None, :]  # (n, P): the key d back from query i
    rows = stacked[..., np.arange(n)[:, None], np.maximum(back, 0)]  # (W, L, nh, n, P)
    rows = np.where(back >= 0, rows, 0)
    return rows.transpose(3, 0, 1, 2, 4)
