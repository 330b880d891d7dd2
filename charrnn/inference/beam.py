"""Beam search: the likeliest continuations of a seed under the model's own distribution, K hypotheses
advancing as one batch.

    draw = BeamDraw(model, vocab, num_samples=3, seed="", options=SamplingOptions(beam_width=8, stop=("\\n",)))
    texts = ["".join(pieces) for pieces in zip(*draw)]     # the 3 best, best first
    draw.logprob, draw.chars, draw.stopped                   # (3,) each, as SampleDraw's

Each step scores every hypothesis's every next character, scores (K,) + log softmax(logits) (K, V), and
keeps the best of the K·V; the sampler's states are then copied by parent (``reorder``), so the K
hypotheses step as one batch, as K samples would. A hypothesis that generates a stop text is finished
(its total log-probability counts the stop's characters); those the length cap reaches finish too.
Finished hypotheses compete on their total log-probability (``beam_score="total"``; short texts are
favoured, as their probability is a product of fewer factors) or on its mean per character ("mean").
With "total" the search ends once the num_samples-th best finished one beats every open hypothesis
(which can only lose probability), so the result is exact for the beam; with "mean" it uses the same
test on the open ones' mean so far, as Hugging Face's beam search does. Width 1 is greedy decoding.
"""

import numpy as np

from ..nn.numerics import log_softmax
from .decoding import SampleText, decode, prime_sampler, stop_ids


class BeamDraw:
    """The ``num_samples`` best continuations a beam of ``options.beam_width`` finds, with ``SampleDraw``'s
    surface: iterating yields the seed's pieces (if any), then each result's generated text, whole;
    ``logprob``, ``chars``, ``stopped`` (num_samples,) describe them, ``found`` says how many there are
    (results past it are '' with logprob -inf) and ``steps`` how many characters the search went.
    ``reject(text)`` True drops a finished text (the seed's included) so that the search goes on for others;
    texts are never repeated."""

    def __init__(self, model, vocab, num_samples, seed, options, reject=None):
        if num_samples > options.beam_width:
            raise ValueError(f"a beam of width {options.beam_width} finds at most {options.beam_width} texts, "
                             f"not {num_samples}; widen it or ask for fewer")
        self.model, self.vocab, self.seed, self.options, self.reject = model, vocab, seed, options, reject
        self.num_samples, self.stops = num_samples, stop_ids(vocab, options.stop)  # KeyError: unknown symbols
        self.logprob = np.full(num_samples, -np.inf)
        self.chars, self.stopped, self.found = np.zeros(num_samples, np.intp), np.zeros(num_samples, bool), 0
        self.steps = 0  # characters the search has stepped its K hypotheses through
        self.finished = {}  # text -> (rank, logprob, ids without the stop, chars, stopped)

    def __iter__(self):
        text = SampleText(self.vocab, self.num_samples)
        if self.seed:
            yield text.seed(self.seed)
        self._search()
        best = sorted(self.finished.values(), key=lambda r: -r[0])[: self.num_samples]
        self.found = len(best)
        pieces = [""] * self.num_samples
        for i, (_, logprob, ids, chars, stopped) in enumerate(best):
            self.logprob[i], self.chars[i], self.stopped[i] = logprob, chars, stopped
            pieces[i] = text.piece(i, ids)
        yield [piece + rest for piece, rest in zip(pieces, text.end())]

    def _search(self):
        K, length, V = self.options.beam_width, self.options.length, len(self.vocab)
        stepper, first_logits = prime_sampler(self.model, self.vocab, self.seed, K)
        logits = np.broadcast_to(first_logits, (K, V))
        scores = np.full(K, -np.inf)  # (K,): each open hypothesis's total log-probability
        scores[0] = 0.0  # the K rows start alike: one hypothesis
        history = np.zeros((K, length), np.intp)  # (K, length): each hypothesis's ids
        for t in range(length):
            self.steps = t + 1
            candidates = scores[:, None] + log_softmax(np.asarray(logits, np.float64))  # (K, V)
            parents, ids, totals = self._extend(candidates, history[:, :t])
            if not parents or self._settled(totals, t + 1):
                return
            pad = K - len(parents)  # rows no hypothesis holds: a copy of the first, never extended
            parents, ids = np.array(parents + parents[:1] * pad), np.array(ids + ids[:1] * pad)
            stepper.reorder(parents)
            history = history[parents]
            history[:, t] = ids
            scores = np.array(totals + [-np.inf] * pad)
            if t + 1 < length:
                logits = stepper.step(ids)
        for k in np.flatnonzero(np.isfinite(scores)):  # the length cap ends the open ones
            self._finish(scores[k], history[k], 0)

    def _extend(self, candidates, history):
        """The best candidates (K, V) in order: those that end at a stop text finish; the first K others
        stay open, as (parents, ids, totals)."""
        K, V = candidates.shape
        parents, ids, totals = [], [], []
        for flat in np.argsort(-candidates, axis=None, kind="stable")[: 2 * K]:
            total = float(candidates.flat[flat])
            if total == -np.inf:
                break
            parent, c = divmod(int(flat), V)
            stop = self._stop_length(history[parent], c)
            if stop:
                self._finish(total, np.append(history[parent], c), stop)
            else:
                parents.append(parent), ids.append(c), totals.append(total)
                if len(parents) == K:
                    break
        return parents, ids, totals

    def _stop_length(self, ids, c):
        """The length of the stop text ``ids`` (n,) followed by ``c`` ends with, 0 for none."""
        for stop in self.stops:
            m = len(stop)
            if stop[-1] == c and len(ids) >= m - 1 and (m == 1 or (ids[len(ids) - m + 1 :] == stop[:-1]).all()):
                return m
        return 0

    def _finish(self, total, ids, stop):
        """A finished hypothesis: ids (n,), the last ``stop`` of them a stop text, total its log-probability."""
        kept = ids[: len(ids) - stop]
        text = decode(self.vocab, self.seed, kept)
        if self.reject is not None and self.reject(text):
            return
        rank = total / len(ids) if self.options.beam_score == "mean" and len(ids) else total
        if text not in self.finished or rank > self.finished[text][0]:
            self.finished[text] = (rank, total, kept, len(ids), stop > 0)

    def _settled(self, totals, chars):
        """Whether no open hypothesis (``totals``, each of ``chars`` characters) can beat the num_samples-th
        best finished one (see the module's docstring)."""
        if len(self.finished) < self.num_samples:
            return False
        nth = sorted((r[0] for r in self.finished.values()), reverse=True)[self.num_samples - 1]
        best_open = max(totals) / (chars if self.options.beam_score == "mean" else 1)
        return nth >= best_open
