"""Generating text one character at a time.

    for piece in generate(model, vocab, seed="ROMEO:", length=500, temperature=0.8, random_seed=1):
        print(piece, end="")

The seed primes the hidden state in batched passes of PRIME_CHUNK characters (``prime``); then each
character costs one step of every layer at batch 1, into preallocated buffers.
"""

import numpy as np

from .cells import Scratch

PRIME_CHUNK = 4096  # characters of the seed read in one forward pass


class Stepper:
    """Runs a model one character at a time (batch 1) from a given state."""

    def __init__(self, model, state):
        self.model = model
        cfg, cell = model.config, model.cell
        H, G, dtype = cfg.hidden_size, cell.n_gates * cfg.hidden_size, model.dtype
        self.step_weights = [model.step_weights(k, 1, backward=False) for k in range(cfg.num_layers)]
        self.gates = [np.empty((1, G), dtype) for _ in range(cfg.num_layers)]
        states = [
            [tuple(np.array(s[k], dtype) for s in state), tuple(np.empty((1, H), dtype) for _ in cell.state_names)]
            for k in range(cfg.num_layers)
        ]  # per layer: two state buffers, read and written in turn
        extra = tuple(np.empty((1, w * H), dtype) for w in cell.extra_widths)
        # per layer, the step's arrays in both directions (a -> b, b -> a), views made once
        self.caches = [
            [cell.step_views(self.gates[k], a, b, extra, self.gates[k]) for a, b in (pair, pair[::-1])]
            for k, pair in enumerate(states)
        ]
        self.outputs = [[pair[1][0], pair[0][0]] for pair in states]  # the h each direction writes
        self.parity = 0
        self.scratch = [Scratch.make(cell, 1, H, dtype) for _ in range(cfg.num_layers)]
        self.logits = np.empty((1, cfg.vocab_size), dtype)
        self.input_table = self.step_weights[0].W_xh + self.step_weights[0].b  # (V, G): lookup with bias
        self.W_hy, self.b_y = model.params["W_hy"], model.params["b_y"]

    def step(self, idx):
        """Feed character id ``idx``; return the logits (V,) for the next character."""
        step_forward, x, parity = self.model.cell.step_forward, None, self.parity
        for k, step_weights in enumerate(self.step_weights):
            gates = self.gates[k]
            if k == 0:
                gates[0] = self.input_table[idx]
            else:
                np.matmul(x, step_weights.W_xh, gates)
                np.add(gates, step_weights.b, gates)
            step_forward(self.caches[k][parity], step_weights, self.scratch[k])
            x = self.outputs[k][parity]
        self.parity = 1 - parity
        np.matmul(x, self.W_hy, self.logits)
        np.add(self.logits, self.b_y, self.logits)
        return self.logits[0]


def filter_logits(logits, temperature, top_k=None, top_p=None):
    """Scaled logits (V,) with everything outside top-k / the top-p nucleus set to -inf."""
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < len(z):
        z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-z)
        probs = np.exp(z[order] - z[order[0]])
        cumulative = np.cumsum(probs / probs.sum())
        keep = np.searchsorted(cumulative, top_p) + 1  # smallest prefix with mass >= top_p
        z[order[keep:]] = -np.inf
    return z


def prime(model, vocab, seed=""):
    """Read ``seed`` (str, or bytes for a --bytes model; any length; empty: as if after a newline) in
    passes of PRIME_CHUNK characters: the logits (V,) for the next character and the state there (batch 1).
    Raises KeyError naming seed characters that are not in the vocabulary."""
    ids = vocab.encode(seed) if seed else np.array([vocab.newline_id() or 0])
    state = model.initial_state(1)
    for j in range(0, len(ids), PRIME_CHUNK):
        logits, state = model.forward(ids[j : j + PRIME_CHUNK, None], state)  # (T, 1, V)
    return logits[-1, 0], state


def generate(model, vocab, seed="", length=200, temperature=1.0, top_k=None, top_p=None, random_seed=None,
             primed=None):
    """Yield the seed text, then ``length`` generated characters, one piece at a time.

    ``seed`` primes the hidden state (``prime``), or ``primed``, what ``prime`` returned for it, saves
    reading it again (several samples from one long prime); ``temperature`` 0 picks the most likely
    character every time. ``random_seed`` is a seed or a numpy Generator. Raises KeyError naming seed
    characters that are not in the vocabulary.
    """
    rng = random_seed if isinstance(random_seed, np.random.Generator) else np.random.default_rng(random_seed)
    next_logits, state = primed if primed is not None else prime(model, vocab, seed)
    stepper = Stepper(model, state)
    decode = vocab.decoder()
    if seed:
        yield seed if isinstance(seed, str) else seed.decode(vocab.encoding, errors="replace")
    noise_block = 1024
    filtered = top_k is not None or top_p is not None
    z = np.empty(len(vocab))  # float64 scores: logits / temperature + Gumbel noise
    for t in range(length):
        if temperature == 0:
            idx = int(next_logits.argmax())
        else:
            if t % noise_block == 0:
                gumbel = rng.gumbel(size=(noise_block, len(vocab)))  # Gumbel-max: argmax(z + g) ~ softmax(z)
            if filtered:
                z[...] = filter_logits(next_logits, temperature, top_k, top_p)
                z += gumbel[t % noise_block]
            elif temperature == 1:
                np.add(next_logits, gumbel[t % noise_block], out=z)
            else:
                np.multiply(next_logits, 1.0 / temperature, out=z)
                z += gumbel[t % noise_block]
            idx = int(z.argmax())
        yield decode(idx)
        if t + 1 < length:
            next_logits = stepper.step(idx)
