"""What a sample's ids become: the sampler primed with its seed, the ids as text, and where a stop text ends it.

    stepper, logits = prime_sampler(model, vocab, "Ma", batch_size=N)    # logits (V,) after the seed
    text = SampleText(vocab, N)
    stops = StopTexts(vocab, ["\\n"], N)
    pieces = stops.pieces(ids, text)        # ids (N,): each sample's newest character -> N pieces of text
    stops.ended                             # (N,) bool: which samples have generated a stop text

A stop text is matched on ids, so a bytes model matches the stop's bytes. Its characters are never
shown: a sample's characters that could still begin a stop text are held back until the next one says
whether they do (only where some stop text is longer than one character).
"""

import codecs

import numpy as np


def prime_sampler(model, vocab, seed, batch_size):
    """A sampler (``step(ids (B,)) -> logits (B, V)``) after reading the seed (or a newline), for
    ``batch_size`` streams, and the logits (V,) for the first generated character. Raises KeyError
    naming unknown seed characters."""
    prime = vocab.encode(seed) if seed else np.array([vocab.newline_id() or 0])
    return model.start_sampling(prime, batch_size)


def stop_ids(vocab, texts):
    """The stop texts as id arrays, the longest first; KeyError naming symbols the vocabulary lacks."""
    return sorted((vocab.encode(model_text(vocab, t)) for t in texts), key=len, reverse=True)


def decode(vocab, seed, ids):
    """The text of a sample: its seed, then its ids (n,), as ``SampleText`` shows them one by one."""
    if not vocab.bytes_mode:
        return seed + "".join(vocab.symbols[i] for i in ids)
    return (model_text(vocab, seed) + bytes(vocab.symbols[i] for i in ids)).decode(vocab.encoding, errors="replace")


def model_text(vocab, text):
    """``text`` as the model reads it: a bytes model's str in its encoding (UnicodeEncodeError if it cannot be)."""
    return text.encode(vocab.encoding) if vocab.bytes_mode and isinstance(text, str) else text


class SampleText:
    """The text of the samples' seed and of each character they draw. A bytes model decodes each sample's
    bytes as one stream, its seed first: a character of several bytes comes out whole with its last byte
    ('' before it), and bytes that are no text in the model's encoding come out as U+FFFD."""

    def __init__(self, vocab, num_samples):
        self.num_samples, self.bytes_mode = num_samples, vocab.bytes_mode
        self.symbols = vocab.symbols if vocab.bytes_mode else np.array(vocab.symbols, dtype=object)
        new_decoder = codecs.getincrementaldecoder(vocab.encoding)
        self.decoders = [new_decoder(errors="replace").decode for _ in range(num_samples)] if vocab.bytes_mode else []

    def seed(self, seed):
        """The seed's text (str, or bytes for a bytes model), once per sample."""
        if isinstance(seed, str):
            return [seed] * self.num_samples
        return [decode(seed) for decode in self.decoders]

    def pieces(self, ids, skip=None):
        """ids (N,): each sample's newest character -> N pieces of text; '' for the samples ``skip`` (N,) marks,
        whose characters are not read (a stop text's: a bytes model's decoder keeps what came before)."""
        if not self.bytes_mode:
            return (self.symbols[ids] if skip is None else np.where(skip, "", self.symbols[ids])).tolist()
        skip = np.zeros(len(ids), bool) if skip is None else skip
        return ["" if s else decode(bytes((self.symbols[i],))) for decode, i, s in zip(self.decoders, ids, skip)]

    def end(self):
        """Once the samples end: the N pieces each sample's decoder still holds (bytes that began a character
        the sample did not finish, as U+FFFD); '' each for a model of characters."""
        return [decode(b"", final=True) for decode in self.decoders] or [""] * self.num_samples

    def piece(self, i, ids):
        """Sample i's characters ``ids`` (n,) as one piece of text."""
        if not self.bytes_mode:
            return "".join(self.symbols[ids])
        return self.decoders[i](bytes(self.symbols[j] for j in ids))


class StopTexts:
    """Where each of N samples first generates one of the stop texts, and the text it shows until then."""

    def __init__(self, vocab, texts, num_samples):
        self.stops = stop_ids(vocab, texts)
        self.longest = len(self.stops[0])
        self.tail = np.full((num_samples, self.longest), -1, np.intp)  # (N, M): the newest ids, last column newest
        self.ended = np.zeros(num_samples, bool)  # (N,)
        self.held = [[] for _ in range(num_samples)]  # per sample, ids not shown yet: a stop text may begin there

    def match(self, ids):
        """Feed each sample's newest id (N,); the length of the stop text each now ends with (N,), 0 for none
        (the longest, where several end at once)."""
        self.tail[:, :-1] = self.tail[:, 1:]
        self.tail[:, -1] = ids
        found = np.zeros(len(ids), np.intp)
        for stop in self.stops:
            hit = (self.tail[:, self.longest - len(stop):] == stop).all(axis=1) & (found == 0)
            found[hit] = len(stop)
        return found

    def pieces(self, ids, text):
        """Feed each sample's newest id (N,); the N pieces of text to show now ('' for a sample that has
        ended, or whose newest characters may begin a stop text)."""
        alive = ~self.ended
        found = self.match(ids)
        self.ended |= found > 0
        if self.longest == 1:  # nothing is ever held back
            return text.pieces(ids, skip=~alive | (found > 0))
        shown = [""] * len(ids)
        for i in np.flatnonzero(alive):
            held = self.held[i]
            held.append(ids[i])
            keep = len(held) - found[i] if found[i] else len(held) - self._prefix(i)
            shown[i] = text.piece(i, held[:keep]) if keep > 0 else ""
            self.held[i] = [] if found[i] else held[keep:]
        return shown

    def _prefix(self, i):
        """The most newest ids of sample i that are a stop text's first ids (and not the whole of it)."""
        tail = self.tail[i]
        return max((k for stop in self.stops for k in range(1, len(stop))
                    if (tail[self.longest - k :] == stop[:k]).all()), default=0)

    def flush(self, text):
        """The held text of every sample that has not ended, once generation stops: N pieces, or None if
        nothing is held."""
        if not any(self.held):
            return None
        shown = [text.piece(i, held) if held and not self.ended[i] else "" for i, held in enumerate(self.held)]
        self.held = [[] for _ in self.held]
        return shown
