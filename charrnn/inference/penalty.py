"""The repetition penalty of CTRL (Keskar et al., 2019), as Hugging Face's ``repetition_penalty`` applies it,
over each sample's last ``window`` characters.

    penalty = RepetitionPenalty(1.3, window=64, prime=seed_ids, num_samples=N, vocab_size=V)
    z = penalty.apply(logits)          # logits (N, V) -> float64 (N, V): a seen character's logit divided
                                       # by 1.3 if positive, multiplied by 1.3 if negative
    penalty.push(ids)                  # ids (N,): each sample's newest character enters its window

The window holds the seed's last characters, then what the sample generates. Each sample counts how often
each character is in its window (``counts`` (N, V+1), the last column for window slots still empty), so a
step costs one pass over (N, V) whatever the window.
"""

import numpy as np


class RepetitionPenalty:
    def __init__(self, penalty, window, prime, num_samples, vocab_size):
        self.penalty, self.window, self.vocab_size = penalty, window, vocab_size
        recent = np.full(window, vocab_size, np.intp)  # the empty slot's id: the extra column
        prime = np.asarray(prime, np.intp)[-window:]
        recent[window - len(prime) :] = prime
        self.recent = np.repeat(recent[None], num_samples, axis=0)  # (N, W): a ring, the oldest at self.next
        self.next = 0
        self.counts = np.zeros((num_samples, vocab_size + 1), np.intp)  # (N, V+1)
        np.add.at(self.counts, (np.arange(num_samples)[:, None], self.recent), 1)
        self.rows = np.arange(num_samples)

    def apply(self, logits):
        """The penalised logits (N, V), float64."""
        z = np.array(logits, np.float64)
        seen = self.counts[:, : self.vocab_size] > 0
        z_seen = z[seen]
        z[seen] = np.where(z_seen > 0, z_seen / self.penalty, z_seen * self.penalty)
        return z

    def push(self, ids):
        """Each sample's newest character (N,) enters its window; its oldest leaves."""
        self.counts[self.rows, self.recent[:, self.next]] -= 1  # one index per row: no repeats to accumulate
        self.recent[:, self.next] = ids
        self.counts[self.rows, ids] += 1
        self.next = (self.next + 1) % self.window
