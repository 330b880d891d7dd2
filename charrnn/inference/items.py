"""Samples as items: each one whole, with its log-probability, none repeated or excluded, as ``charrnn sample
--stop --unique --exclude --json`` prints them.

    options = SamplingOptions(stop=("\\n",), temperature=0.8)
    for sample in draw_samples(model, vocab, 200, options=options, unique=True, exclude=lines_of("names.txt")):
        print(sample.text, sample.logprob)       # Sample(text, logprob, chars, stopped_by)

Samples are drawn as batches (``start_draw``, sample.py): the first has as many samples as are asked
for; a sample that is a repeat (``unique``), a line of ``exclude``, or empty though a stop text was given
is drawn again, all that are missing in the next batch, enlarged by the share that failed so far. Draw i
uses ``sample_rngs(random_seed, ...)[i]`` and the samples are kept in order of draw, so the result is the
same for the same random seed whatever the batch sizes. At most ``max_tries`` times as many samples as
are asked for are drawn; past that ``DrawLimitError`` says how many were found. With ``beam_width`` the
items are the beam's best texts, and excluded ones make way for the next best.
"""

import math
from dataclasses import asdict, dataclass

from ..io.corpus import text_codec
from .beam import BeamDraw
from .decoding import decode
from .sample import sample_rngs, sampling_options, seed_sequence, start_draw

MAX_TRIES = 20  # draws per sample asked for, at most, before giving up


@dataclass(frozen=True)
class Sample:
    """One sample, whole."""

    text: str  # the seed, then what was generated, without the stop text that ended it
    logprob: float  # ln P(generated characters, the stop text's included) under the model's own distribution
    chars: int  # the characters logprob covers
    stopped_by: str  # "stop": a stop text ended it; "length": the length cap did

    @classmethod
    def of(cls, text, draw, i):
        """Sample ``i`` of a SampleDraw or BeamDraw ``draw`` that has ended, its text ``text``."""
        return cls(text, float(draw.logprob[i]), int(draw.chars[i]), "stop" if draw.stopped[i] else "length")

    def to_json(self):
        return asdict(self)


class DrawLimitError(ValueError):
    """Fewer acceptable samples than were asked for within the draws allowed."""

    def __init__(self, found, wanted, drawn):
        super().__init__(f"found {found} of {wanted} samples in {drawn:,} draws; the others were repeats, "
                         "excluded or empty")
        self.found, self.wanted, self.drawn = found, wanted, drawn


def lines_of(path, encoding="utf-8"):
    """The set of lines of a text file, without their line endings (``exclude``'s form)."""
    with open(path, encoding=text_codec(encoding), newline="") as f:
        return {line.rstrip("\r\n") for line in f}


def draw_samples(model, vocab, num_samples, seed="", *, options=None, random_seed=None, unique=False,
                 exclude=(), max_tries=MAX_TRIES, batch_size=256, **settings):
    """Yield ``num_samples`` Samples in order of draw, each as soon as its batch ends; raise DrawLimitError
    once ``max_tries * num_samples`` draws have not found them all. ``options`` and ``settings`` are
    ``generate``'s; ``exclude`` is a set of texts no sample may equal."""
    options = sampling_options(options, **settings)
    accept = _Acceptance(unique, exclude, decode(vocab, seed, []) if options.stop else None)
    if options.beam_width is not None:
        yield from _beam_samples(model, vocab, num_samples, seed, options, accept)
        return
    root = seed_sequence(random_seed)
    found = drawn = 0
    while found < num_samples:
        budget = max_tries * num_samples - drawn
        if budget <= 0:
            raise DrawLimitError(found, num_samples, drawn)
        share = found / drawn if drawn else 1.0  # of the draws so far, the share kept
        n = min(batch_size, budget, math.ceil((num_samples - found) / max(share, 1 / max_tries)))
        draw = start_draw(model, vocab, n, seed, options=options, random_seed=sample_rngs(root, n, drawn), scores=True)
        texts = ["".join(pieces) for pieces in zip(*draw)]
        drawn += n
        for i, text in enumerate(texts):
            if accept(text):
                yield Sample.of(text, draw, i)
                found += 1
                if found == num_samples:
                    return


def _beam_samples(model, vocab, num_samples, seed, options, accept):
    draw = BeamDraw(model, vocab, num_samples, seed, options, reject=lambda text: not accept.allowed(text))
    texts = ["".join(pieces) for pieces in zip(*draw)]
    for i in range(draw.found):
        yield Sample.of(texts[i], draw, i)
    if draw.found < num_samples:
        raise DrawLimitError(draw.found, num_samples, options.beam_width)


class _Acceptance:
    """Which samples may be printed: none equal to an excluded text or (``unique``) to one printed before;
    none empty, its seed's text ``empty`` alone, where a stop text is given (else ``empty`` is None)."""

    def __init__(self, unique, exclude, empty):
        self.unique, self.exclude, self.empty, self.printed = unique, set(exclude), empty, set()

    def allowed(self, text):
        return text != self.empty and text not in self.exclude and not (self.unique and text in self.printed)

    def __call__(self, text):
        """Whether ``text`` may be printed next (if so, it counts as printed)."""
        if not self.allowed(text):
            return False
        self.printed.add(text)
        return True
