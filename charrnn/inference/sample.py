"""Generating text one character at a time, one sample or many side by side.

    for piece in generate(model, vocab, seed="Romeo.", length=500, temperature=0.8, random_seed=1):
        print(piece, end="")
    options = SamplingOptions(length=500, temperature=0.8, top_k=10)    # the options as one value
    for piece in generate(model, vocab, seed="Romeo.", options=options, random_seed=1): ...
    for pieces in generate_batch(model, vocab, 64, seed="Romeo.", length=500, random_seed=1):
        ...                                   # pieces: a list of 64 strings, one per sample
    draw = start_draw(model, vocab, 64, stop="\n", random_seed=1, scores=True)   # ends at a newline
    texts = ["".join(pieces) for pieces in zip(*draw)]
    draw.logprob, draw.chars, draw.stopped   # (64,) each: ln P under the model, its characters, ended by a stop

The seed primes the model (``model.start_sampling``): a recurrent model reads it in batched passes, so a
seed of any length costs time, not memory, and then each character costs one step of every layer
(models/rnn_steppers.py); gpt runs one position per block against a key/value cache
(models/gpt_sampler.py). ``generate_batch`` steps N samples as one batch:
one matrix product per layer per character for all of them, each sample drawing its noise from a
generator of its own (``sample_rngs``), so sample i is the same text whatever N is, and the same as
``generate`` gives with that generator. Stop texts (decoding.py) end a sample early, the repetition
penalty (penalty.py) reshapes its scores, and with ``beam_width`` a beam search (beam.py) takes the
place of sampling.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from ..nn.numerics import log_softmax
from .beam import BeamDraw
from .decoding import SampleText, StopTexts, prime_sampler
from .penalty import RepetitionPenalty

NOISE_BLOCK = 256  # characters of Gumbel noise each sample's generator draws at a time, at most
FIRST_NOISE_BLOCK = 16  # ... and first: a sample a stop text ends early draws little it does not use


def filter_logits(logits, temperature, top_k=None, top_p=None):
    """Scaled logits (..., V), float64, with everything outside top-k / the top-p nucleus set to -inf
    (row by row)."""
    z = np.asarray(logits, np.float64) / temperature
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(z, -top_k, axis=-1)[..., -top_k, None]
        z[z < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-z, axis=-1, kind="stable")
        ranked = np.take_along_axis(z, order, axis=-1)
        probs = np.exp(ranked - ranked[..., :1])
        cumulative = np.cumsum(probs / probs.sum(axis=-1, keepdims=True), axis=-1)
        keep = (cumulative < top_p).sum(axis=-1, keepdims=True) + 1  # smallest prefix with mass >= top_p
        dropped = np.arange(V) >= keep  # (..., V), in ranked order
        np.put_along_axis(z, order, np.where(dropped, -np.inf, ranked), axis=-1)
    return z


def seed_sequence(random_seed):
    """``random_seed`` (an int, None: fresh entropy, or a SeedSequence) as a SeedSequence: the one root of
    batches that ``sample_rngs`` numbers by their first sample."""
    return random_seed if isinstance(random_seed, np.random.SeedSequence) else np.random.SeedSequence(random_seed)


def sample_rngs(random_seed, count, start=0):
    """The generators of samples start .. start+count-1: sample i draws from
    ``SeedSequence(random_seed, spawn_key=(i,))`` (what ``SeedSequence(random_seed).spawn(n)[i]`` is), so
    sample i is the same whatever the number of samples. ``random_seed`` None draws fresh entropy;
    a list of Generators is returned as it is."""
    if isinstance(random_seed, (list, tuple)):
        return list(random_seed)
    entropy = seed_sequence(random_seed).entropy
    return [np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(i,))) for i in range(start, start + count)]


BEAM_SCORES = ("total", "mean")  # how finished beam hypotheses compete: total log-probability, or per character


@dataclass(frozen=True)
class SamplingOptions:
    """How many characters a sample has and how each is drawn: what ``charrnn sample``, the server and the
    trainer's preview pass to ``generate``, ``generate_batch`` and ``stream_samples``."""

    length: int = 200  # characters generated after the seed (at most, with stop texts)
    temperature: float = 1.0  # logits / temperature; 0: always the likeliest character
    top_k: int | None = None  # sample among the k likeliest characters
    top_p: float | None = None  # sample within the smallest set of characters holding probability p
    stop: tuple = ()  # texts a sample ends at, when it first generates one (left out of its text)
    repetition_penalty: float = 1.0  # CTRL's: a character seen in the last repetition_window is less likely
    repetition_window: int = 20  # characters (the seed's, then the sample's) the penalty looks back over
    beam_width: int | None = None  # search for the likeliest continuations, this many at a time, instead
    beam_score: str = "total"  # how finished hypotheses compete (BEAM_SCORES)

    def __post_init__(self):
        stop = (self.stop,) if isinstance(self.stop, (str, bytes)) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)

    def validate(self):
        """Raise ValueError with a one-line reason for a field out of range."""
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number, 0 or more, not {self.temperature}")
        if self.length < 0:
            raise ValueError(f"length cannot be negative, not {self.length}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top-k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], not {self.top_p}")
        if not all(isinstance(t, (str, bytes)) and t for t in self.stop):
            raise ValueError(f"a stop text must be a text of one character or more, not {self.stop}")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty < 1:
            raise ValueError(f"repetition penalty must be a finite number, 1 or more, not {self.repetition_penalty}")
        if self.repetition_window < 1:
            raise ValueError(f"repetition window must be at least 1, not {self.repetition_window}")
        return self._validate_beam()

    def _validate_beam(self):
        if self.beam_score not in BEAM_SCORES:
            raise ValueError(f"beam score must be one of {', '.join(BEAM_SCORES)}, not {self.beam_score!r}")
        if self.beam_width is None:
            return self
        if self.beam_width < 1:
            raise ValueError(f"beam width must be at least 1, not {self.beam_width}")
        if self.temperature != 1 or self.top_k is not None or self.top_p is not None or self.repetition_penalty != 1:
            raise ValueError("beam search follows the model's own probabilities: it takes no temperature, top-k, "
                             "top-p or repetition penalty")
        return self


def sampling_options(options=None, **settings):
    """``options`` (a SamplingOptions, or the defaults) with the fields ``settings`` replaced, validated."""
    return replace(options or SamplingOptions(), **settings).validate()


class _Picker:
    """Picks each sample's next character from its scores (N, V): the likeliest at temperature 0, else a draw
    of softmax(scores / temperature) within top-k / top-p by Gumbel-max, argmax(z + g), with each sample's
    noise from its own generator, drawn in blocks of ``FIRST_NOISE_BLOCK`` characters, then doubling up to
    ``NOISE_BLOCK`` (the blocks read the generator's one stream, so the noise does not depend on them)."""

    def __init__(self, options, rngs, vocab_size):
        self.options, self.rngs, self.V = options, rngs, vocab_size
        self.filtered = options.top_k is not None or options.top_p is not None
        self.z = np.empty((len(rngs), vocab_size))  # float64 scores: logits / temperature + Gumbel noise
        self.noise_start = self.noise_end = 0  # the steps the noise drawn last covers

    def __call__(self, logits, t):
        """ids (N,) of the characters drawn at step t from logits (N, V)."""
        temperature, z = self.options.temperature, self.z
        if temperature == 0:
            return logits.argmax(axis=1)
        if t == self.noise_end:
            block = min(NOISE_BLOCK, max(FIRST_NOISE_BLOCK, t), self.options.length - t)
            self.noise = np.stack([rng.gumbel(size=(block, self.V)) for rng in self.rngs], axis=1)  # (block, N, V)
            self.noise_start, self.noise_end = t, t + block
        noise = self.noise[t - self.noise_start]
        if self.filtered:
            z[...] = filter_logits(logits, temperature, self.options.top_k, self.options.top_p)
            z += noise
        elif temperature == 1:
            np.add(logits, noise, out=z)
        else:
            np.multiply(logits, 1.0 / temperature, out=z)
            z += noise
        return z.argmax(axis=1)


class SampleDraw:
    """N samples drawn side by side, as one batch. Iterating yields one list of N text pieces per character
    (first the seed, if any, for every sample; '' for a sample that has ended at a stop text); meanwhile and
    after, ``logprob`` (N,), ``chars`` (N,) and ``stopped`` (N,) say, for each sample, the natural log of
    the probability of the characters it has generated (those of a stop text included) under the model's
    own distribution (temperature 1, no top-k, top-p or penalty), how many they are, and whether a stop
    text ended it. ``scores=False`` leaves ``logprob`` at 0 (a few calls per character saved)."""

    def __init__(self, model, vocab, num_samples, seed, options, rngs, scores=False):
        if len(rngs) != num_samples:
            raise ValueError(f"{len(rngs)} random generators for {num_samples} samples")
        self.model, self.vocab, self.seed, self.options, self.rngs = model, vocab, seed, options, rngs
        self.stops = StopTexts(vocab, options.stop, num_samples) if options.stop else None  # KeyError: unknown
        self.scores, self.steps = scores, 0
        self.logprob, self.stopped = np.zeros(num_samples), np.zeros(num_samples, bool)
        self.lengths = np.zeros(num_samples, np.intp)  # characters generated by each sample a stop text ended

    @property
    def chars(self):
        return np.where(self.stopped, self.lengths, self.steps)

    def __iter__(self):
        text = SampleText(self.vocab, len(self.rngs))
        yield from self._draw(text)
        rest = text.end()
        if any(rest):
            yield rest

    def _draw(self, text):
        model, vocab, options, N = self.model, self.vocab, self.options, len(self.rngs)
        stepper, first_logits = prime_sampler(model, vocab, self.seed, N)
        stops, pick = self.stops, _Picker(options, self.rngs, len(vocab))
        if self.seed:
            yield text.seed(self.seed)
        penalty = None
        if options.repetition_penalty != 1:
            prime = vocab.encode(self.seed) if self.seed else np.zeros(0, np.intp)
            window = max(1, min(options.repetition_window, len(prime) + options.length))  # more sees no more
            penalty = RepetitionPenalty(options.repetition_penalty, window, prime, N, len(vocab))
        logits, rows = np.broadcast_to(first_logits, (N, len(vocab))), np.arange(N)
        for t in range(options.length):
            ids = pick(logits if penalty is None else penalty.apply(logits), t)
            if self.scores:
                self.logprob += np.where(self.stopped, 0.0, log_softmax(np.asarray(logits, np.float64))[rows, ids])
            if penalty is not None:
                penalty.push(ids)
            self.steps = t + 1
            if stops is None:
                yield text.pieces(ids)
            else:
                pieces = stops.pieces(ids, text)
                self.lengths[stops.ended & ~self.stopped] = t + 1
                self.stopped = stops.ended.copy()
                yield pieces
                if self.stopped.all():
                    return
            if t + 1 < options.length:
                logits = stepper.step(ids)
        rest = stops.flush(text) if stops is not None else None
        if rest is not None:
            yield rest


def start_draw(model, vocab, num_samples, seed="", *, options=None, random_seed=None, scores=False, **settings):
    """The draw of ``num_samples`` samples as ``options`` says: a ``SampleDraw`` (sample i from
    ``sample_rngs(random_seed, num_samples)[i]``), or with ``beam_width`` a ``BeamDraw`` of the
    ``num_samples`` likeliest continuations (beam.py). Iterate it for the text; see ``SampleDraw``."""
    options = sampling_options(options, **settings)
    if options.beam_width is not None:
        return BeamDraw(model, vocab, num_samples, seed, options)
    return SampleDraw(model, vocab, num_samples, seed, options, sample_rngs(random_seed, num_samples), scores)


def generate_batch(model, vocab, num_samples, seed="", *, options=None, random_seed=None, **settings):
    """Generate ``num_samples`` texts side by side, as one batch; yield one list of ``num_samples``
    strings per character (first the seed, if any, for every sample; '' for a sample a stop text ended).

    Sample i draws from ``sample_rngs(random_seed, num_samples)[i]`` (``random_seed`` may also be a
    list of Generators, one per sample); the other arguments are ``generate``'s.
    """
    yield from start_draw(model, vocab, num_samples, seed, options=options, random_seed=random_seed, **settings)


def generate(model, vocab, seed="", *, options=None, random_seed=None, **settings):
    """Yield the seed text, then ``length`` generated characters, one piece at a time.

    ``seed`` (str, or bytes for a --bytes model; any length) primes the hidden state (an empty seed
    starts as if after a newline). ``options`` (SamplingOptions) or its fields as keywords say how many
    characters and how each is drawn: ``length``, ``temperature`` (0 picks the most likely character
    every time), ``top_k``, ``top_p``, ``stop`` (texts that end the sample where it first generates one;
    they are not yielded), ``repetition_penalty`` and ``repetition_window``, ``beam_width`` (the likeliest
    continuation a beam search finds, yielded whole). ``random_seed`` is a seed or a numpy Generator; a
    seed gives the text ``charrnn sample --random-seed`` gives (its first sample: ``sample_rngs(seed, 1)[0]``).
    Raises KeyError naming seed or stop characters that are not in the vocabulary.
    """
    rng = random_seed if isinstance(random_seed, np.random.Generator) else sample_rngs(random_seed, 1)[0]
    for pieces in generate_batch(model, vocab, 1, seed, options=options, random_seed=[rng], **settings):
        yield pieces[0]


def stream_samples(model, vocab, num_samples, seed="", *, options=None, random_seed=None, batch_size=256, **settings):
    """Yield ``(i, piece)`` for samples i = 0 .. num_samples-1 in order, generated ``batch_size`` at a time.

    Within a batch, its first sample's characters are yielded as they are generated; the others are
    held until the batch ends, then yielded whole. Sample i draws from
    ``sample_rngs(random_seed, num_samples)[i]``, so the texts do not depend on ``batch_size``.
    """
    options = sampling_options(options, **settings)
    root = seed_sequence(random_seed)
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        rngs = sample_rngs(root, n, start)
        held = [[] for _ in range(n - 1)]
        for pieces in generate_batch(model, vocab, n, seed, options=options, random_seed=rngs):
            yield start, pieces[0]
            for text, piece in zip(held, pieces[1:]):
                text.append(piece)
        for j, text in enumerate(held, start=start + 1):
            yield j, "".join(text)
