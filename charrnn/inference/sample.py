"""Generating text one character at a time, one sample or many side by side.

    for piece in generate(model, vocab, seed="Romeo.", length=500, temperature=0.8, random_seed=1):
        print(piece, end="")
    options = SamplingOptions(length=500, temperature=0.8, top_k=10)    # the options as one value
    for piece in generate(model, vocab, seed="Romeo.", options=options, random_seed=1): ...
    for pieces in generate_batch(model, vocab, 64, seed="Romeo.", length=500, random_seed=1):
        ...                                   # pieces: a list of 64 strings, one per sample

The seed primes the model (``model.start_sampling``): a recurrent model reads it in batched passes, so a
seed of any length costs time, not memory, and then each character costs one step of every layer
(models/rnn_steppers.py); gpt runs one position per block against a key/value cache
(models/gpt_sampler.py). ``generate_batch`` steps N samples as one batch:
one matrix product per layer per character for all of them, each sample drawing its noise from a
generator of its own (``sample_rngs``), so sample i is the same text whatever N is, and the same as
``generate`` gives with that generator.
"""

import codecs
import math
from dataclasses import dataclass, replace

import numpy as np

NOISE_BLOCK = 256  # characters of Gumbel noise each sample's generator draws at a time


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


def sample_rngs(random_seed, count, start=0):
    """The generators of samples start .. start+count-1: sample i draws from
    ``SeedSequence(random_seed, spawn_key=(i,))`` (what ``SeedSequence(random_seed).spawn(n)[i]`` is), so
    sample i is the same whatever the number of samples. ``random_seed`` None draws fresh entropy;
    a list of Generators is returned as it is."""
    if isinstance(random_seed, (list, tuple)):
        return list(random_seed)
    if not isinstance(random_seed, np.random.SeedSequence):
        random_seed = np.random.SeedSequence(random_seed)
    entropy = random_seed.entropy
    return [np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(i,))) for i in range(start, start + count)]


def _prime(model, vocab, seed, batch_size):
    """A sampler (``step(ids (B,)) -> logits (B, V)``) after reading the seed (or a newline), for
    ``batch_size`` streams, and the logits (V,) for the first generated character. Raises KeyError
    naming unknown seed characters."""
    prime = vocab.encode(seed) if seed else np.array([vocab.newline_id() or 0])
    return model.start_sampling(prime, batch_size)


class _Text:
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

    def pieces(self, ids):
        """ids (N,): each sample's newest character -> N pieces of text."""
        if not self.bytes_mode:
            return self.symbols[ids].tolist()
        return [decode(bytes((self.symbols[i],))) for decode, i in zip(self.decoders, ids)]


@dataclass(frozen=True)
class SamplingOptions:
    """How many characters a sample has and how each is drawn: what ``charrnn sample``, the server and the
    trainer's preview pass to ``generate``, ``generate_batch`` and ``stream_samples``."""

    length: int = 200  # characters generated after the seed
    temperature: float = 1.0  # logits / temperature; 0: always the likeliest character
    top_k: int | None = None  # sample among the k likeliest characters
    top_p: float | None = None  # sample within the smallest set of characters holding probability p

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
        return self


def sampling_options(options=None, **settings):
    """``options`` (a SamplingOptions, or the defaults) with the fields ``settings`` replaced, validated."""
    return replace(options or SamplingOptions(), **settings).validate()


def generate_batch(model, vocab, num_samples, seed="", *, options=None, random_seed=None, **settings):
    """Generate ``num_samples`` texts side by side, as one batch; yield one list of ``num_samples``
    strings per character (first the seed, if any, for every sample).

    Sample i draws from ``sample_rngs(random_seed, num_samples)[i]`` (``random_seed`` may also be a
    list of Generators, one per sample); the other arguments are ``generate``'s.
    """
    options = sampling_options(options, **settings)
    length, temperature, top_k, top_p = options.length, options.temperature, options.top_k, options.top_p
    rngs = sample_rngs(random_seed, num_samples)
    if len(rngs) != num_samples:
        raise ValueError(f"{len(rngs)} random generators for {num_samples} samples")
    stepper, first_logits = _prime(model, vocab, seed, num_samples)
    text = _Text(vocab, num_samples)
    if seed:
        yield text.seed(seed)
    logits = np.broadcast_to(first_logits, (num_samples, len(first_logits)))
    filtered = top_k is not None or top_p is not None
    z = np.empty((num_samples, len(vocab)))  # float64 scores: logits / temperature + Gumbel noise
    for t in range(length):
        if temperature == 0:
            ids = logits.argmax(axis=1)
        else:
            if t % NOISE_BLOCK == 0:  # Gumbel-max: argmax(z + g) ~ softmax(z); each sample's own noise
                block = min(NOISE_BLOCK, length - t)
                noise = np.stack([rng.gumbel(size=(block, len(vocab))) for rng in rngs], axis=1)  # (block, N, V)
            if filtered:
                z[...] = filter_logits(logits, temperature, top_k, top_p)
                z += noise[t % NOISE_BLOCK]
            elif temperature == 1:
                np.add(logits, noise[t % NOISE_BLOCK], out=z)
            else:
                np.multiply(logits, 1.0 / temperature, out=z)
                z += noise[t % NOISE_BLOCK]
            ids = z.argmax(axis=1)
        yield text.pieces(ids)
        if t + 1 < length:
            logits = stepper.step(ids)


def generate(model, vocab, seed="", *, options=None, random_seed=None, **settings):
    """Yield the seed text, then ``length`` generated characters, one piece at a time.

    ``seed`` (str, or bytes for a --bytes model; any length) primes the hidden state (an empty seed
    starts as if after a newline). ``options`` (SamplingOptions) or its fields as keywords (``length``,
    ``temperature``: 0 picks the most likely character every time, ``top_k``, ``top_p``) say how many
    characters and how each is drawn. ``random_seed`` is a seed or a numpy Generator; a seed
    gives the text ``charrnn sample --random-seed`` gives (its first sample: ``sample_rngs(seed, 1)[0]``).
    Raises KeyError naming seed characters that are not in the vocabulary.
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
    root = random_seed if isinstance(random_seed, np.random.SeedSequence) else np.random.SeedSequence(random_seed)
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
