"""How a model scores ids: -log p of each target, a chunk at a time, over contiguous streams with the
state carried, or (a model with a bounded context, gpt) over sliding windows placed by position.

    nlls, state = chunk_nlls(model, inputs, targets, state)       # (T, B) each -> (T, B) nats
    total, n = streams_nll(model, val_ids, batch_size=32, seq_length=100, score_chunk=engine.chunk_nll)
    nlls = window_nlls(model, ids, start=1)                       # gpt: each character's nats
    logp, = window_scores(model, ids, 1, 0, 64, lambda w: (log_softmax(model.forward(w[:-1])[0]),))  # or more

Validation (training/loop.py) and the engines (engines/) call these with the chunk scorer they compute
with; files, texts and lines are inference/evaluate.py's.
"""

import numpy as np

from ..nn.numerics import target_nlls


def chunk_nlls(model, inputs, targets, state):
    """-log p(targets | inputs) per position, (T, B), for (T, B) arrays; and the state after them."""
    logits, state = model.forward(inputs, state)  # (T, B, V)
    return target_nlls(logits, np.asarray(targets)), state


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


def window_nlls(model, ids, start, offset=0, batch_size=64, score_chunk=None):
    """-log p of ids[start:] (N,), each given the characters before it that a model with a context of P
    characters sees: sliding windows of P characters, placed by position in the text, not by chunk.

    ``ids`` is the text from its character number ``offset`` on. With S = max(1, P // 2): characters
    1..P are predicted from all the characters before them (window 0..P-1); after that, windows start
    at S, 2S, 3S, ... and character t is predicted by the window starting at ((t - P - 1) // S + 1) S:
    from at least P - S + 1 and at most P characters before it. A character's score depends only on its
    position and the text, so any split of a text into pieces gives the same numbers. ``score_chunk``
    (an engine's ``chunk_nlls``), if given, computes the windows' scores; else the model in this process.
    """

    def nlls(window):  # (n+1, W) ids -> (-log p of window[1:] (n, W),)
        if score_chunk is not None:
            return (score_chunk(window[:-1], window[1:])[0],)
        return (chunk_nlls(model, window[:-1], window[1:], None)[0],)

    scores = window_scores(model, ids, start, offset, batch_size, nlls)
    return scores[0] if scores else np.zeros(0)


def window_scores(model, ids, start, offset, batch_size, score):
    """What ``score`` computes for each character of ids[start:] in the window ``window_nlls`` places it in:
    a tuple of (N, ...) arrays, row j for the character ids[start + j] (an empty tuple for none).

    ``score`` maps a window's ids (n+1, W) to a tuple of (n, W, ...) arrays, row i for the target window[i + 1]
    (W windows side by side). ``ids``, ``start``, ``offset`` and ``batch_size`` are ``window_nlls``'s.
    """
    P = model.context_length
    ids = np.asarray(ids, dtype=np.intp)
    windows = window_plan(P, start + offset, offset + len(ids))
    full = [w for w in windows if w[2] - w[0] == P + 1]
    by_window = {}  # (first input, first target, end) -> the tuple of its targets' rows
    for b in range(0, len(full), batch_size):
        group = full[b : b + batch_size]
        rows = np.array([a - offset for a, _, _ in group])[:, None] + np.arange(P + 1)  # (W, P+1)
        outputs = score(ids[rows].T)  # each (P, W, ...)
        for j, (a, t, stop) in enumerate(group):
            by_window[a, t, stop] = tuple(out[t - a - 1 :, j] for out in outputs)
    for a, t, stop in windows:
        if (a, t, stop) not in by_window:  # a window the text's end cuts short
            outputs = score(ids[a - offset : stop - offset, None])  # each (n, 1, ...)
            by_window[a, t, stop] = tuple(out[t - a - 1 :, 0] for out in outputs)
    return tuple(np.concatenate(parts) for parts in zip(*(by_window[w] for w in windows)))


def streams_nll(model, ids, batch_size, seq_length, score_chunk=None, score_windows=None):
    """Summed -log p over ids[1:] given what precedes each, in B contiguous streams, state carried.

    The streams cover ids[0 : B·L + 1]; the remainder continues the last stream, so every
    character after the first is scored once. ``score_chunk`` (an engine's ``chunk_nll``), if given,
    scores the B streams' chunks, and ``score_windows`` (its ``chunk_nlls``) a gpt model's windows: a model
    with a bounded context reads sliding windows instead (``window_nlls``).
    Returns (total nats, characters scored).
    """
    n = len(ids) - 1
    if n <= 0:
        return 0.0, 0
    if model.context_length is not None:
        return float(window_nlls(model, ids, 1, score_chunk=score_windows).sum()), n
    B = min(batch_size, n)
    L = n // B
    starts = np.arange(B) * L  # (B,)
    total, state = 0.0, None
    for j in range(0, L, seq_length):
        t = min(seq_length, L - j)
        window = np.asarray(ids[starts[:, None] + j + np.arange(t + 1)], dtype=np.intp).T  # (t+1, B)
        if score_chunk is None:
            nll, state = chunk_nll(model, window[:-1], window[1:], state)
        else:
            nll, state = score_chunk(window[:-1], window[1:], state)
        total += nll
    tail = np.asarray(ids[B * L :], dtype=np.intp)
    if len(tail) > 1:
        last_stream = tuple(s[:, B - 1 : B] for s in state)
        for j in range(0, len(tail) - 1, seq_length):
            window = tail[j : j + seq_length + 1, None]  # (t+1, 1)
            nll, last_stream = chunk_nll(model, window[:-1], window[1:], last_stream)
            total += nll
    return total, n
