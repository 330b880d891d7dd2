"""Generating text one character at a time.

    for piece in generate(model, vocab, seed="ROMEO:", length=500, temperature=0.8, random_seed=1):
        print(piece, end="")

The seed primes the hidden state in one batched pass; then each character costs one step of every
layer at batch 1, into preallocated buffers.
"""

import numpy as np

from .cells import scratch_buffers


TRANSPOSED_PRODUCTS_FROM = 256  # hidden size from which W^T @ h beats h @ W at batch 1 (numpy's OpenBLAS, 2 cores)


class Stepper:
    """Runs a model one character at a time (batch 1) from a given state.

    At batch 1 every product is a matrix-vector product that reads the whole weight matrix; from
    ``TRANSPOSED_PRODUCTS_FROM`` units on it runs as W^T @ h over weights kept transposed (about a
    fifth faster at 512: 30 against 38 microseconds for 512 x 2048), below it as h @ W.
    """

    def __init__(self, model, state):
        self.model = model
        cfg, cell = model.config, model.cell
        H, G, dtype = cfg.hidden_size, cell.n_gates * cfg.hidden_size, model.dtype
        self.layer_params = [model.step_weights(k) for k in range(cfg.num_layers)]
        self.transposed = H >= TRANSPOSED_PRODUCTS_FROM
        # the products' matrices (W_xh, W_hh) per layer, gate scale folded in: (H, G), or (G, H) transposed
        self.matrices = [
            tuple(np.ascontiguousarray(p[name].T) if self.transposed else p[name] for name in ("W_xh", "W_hh"))
            for p in self.layer_params
        ]
        self.gates = [np.empty((1, G), dtype) for _ in range(cfg.num_layers)]
        states = [[tuple(np.array(s[k], dtype) for s in state), tuple(np.empty((1, H), dtype) for _ in cell.state_names)]
                  for k in range(cfg.num_layers)]  # per layer: two state buffers, read and written in turn
        extra = tuple(np.empty((1, w * H), dtype) for w in cell.extra_widths)
        # per layer, the step's arrays in both directions (a -> b, b -> a), views made once
        self.caches = [
            [cell.step_views(self.gates[k], a, b, extra, self.gates[k]) for a, b in (pair, pair[::-1])]
            for k, pair in enumerate(states)
        ]
        self.inputs = [[pair[0][0][0], pair[1][0][0]] for pair in states]  # h_prev (H,) each direction reads
        self.outputs = [[pair[1][0][0], pair[0][0][0]] for pair in states]  # the h (H,) each direction writes
        self.parity = 0
        self.scratch = [scratch_buffers(cell, 1, H, dtype) for _ in range(cfg.num_layers)]
        self.logits = np.empty((1, cfg.vocab_size), dtype)
        self.input_table = self.layer_params[0]["W_xh"] + self.layer_params[0]["b"]  # (V, G): lookup with bias
        self.W_hy, self.b_y = model.params["W_hy"], model.params["b_y"]

    def step(self, idx):
        """Feed character id ``idx``; return the logits (V,) for the next character."""
        activate, product, x, parity = self.model.cell.activate, self._product, None, self.parity
        for k, p in enumerate(self.layer_params):
            gates, (W_xh, W_hh) = self.gates[k][0], self.matrices[k]  # gates (G,)
            if k == 0:
                gates[...] = self.input_table[idx]
            else:
                product(x, W_xh, gates)
                np.add(gates, p["b"], gates)
            product(self.inputs[k][parity], W_hh, self.scratch[k]["hproj"][0])
            activate(self.caches[k][parity], p, self.scratch[k])
            x = self.outputs[k][parity]
        self.parity = 1 - parity
        np.matmul(x, self.W_hy, self.logits[0])
        np.add(self.logits, self.b_y, self.logits)
        return self.logits[0]

    def _product(self, vector, matrix, out):
        """out (G,) = vector (H,) @ W, with W kept as (H, G) or transposed as (G, H)."""
        if self.transposed:
            np.matmul(matrix, vector, out)
        else:
            np.matmul(vector, matrix, out)


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


def generate(model, vocab, seed="", length=200, temperature=1.0, top_k=None, top_p=None, random_seed=None):
    """Yield the seed text, then ``length`` generated characters, one piece at a time.

    ``seed`` primes the hidden state (an empty seed starts as if after a newline); ``temperature``
    0 picks the most likely character every time. ``random_seed`` is a seed or a numpy Generator. Raises KeyError naming seed characters that are
    not in the vocabulary.
    """
    rng = random_seed if isinstance(random_seed, np.random.Generator) else np.random.default_rng(random_seed)
    prime = vocab.encode(seed) if seed else np.array([vocab.newline_id() or 0])
    logits, state = model.forward(prime[:, None], model.initial_state(1))  # (T, 1, V)
    stepper = Stepper(model, state)
    decode = vocab.decoder()
    if seed:
        yield seed if isinstance(seed, str) else seed.decode(vocab.encoding, errors="replace")
    next_logits = logits[-1, 0]
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
