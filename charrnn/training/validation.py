"""Validation files (``charrnn train --val-file``): read and checked before a run touches its checkpoint
directory, their symbols for a new model's vocabulary, and scored at each evaluation as ``charrnn eval``
scores a file.

    files = ValidationFiles.read(["valid.txt"])      # CorpusError, one line: an empty or unreadable file
    files.vocab                                      # their symbols: a new model's vocabulary takes them in
    result = files.evaluate(model, vocab)            # an EvalResult over all the files: nats summed, chars counted

Each file is one text, read from its start as if after a newline with one hidden state carried to its end
(gpt: sliding windows placed by position), characters outside the vocabulary counted and left out: the rules
of inference/evaluate.py's ``evaluate_file``, applied to the file's code points as ``read_codes`` decoded
them, once, when the run started (``pieces``: P_i code points each). So the validation loss a run logs for a
file alone is what ``charrnn eval`` prints for the checkpoint it saved there.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..inference.evaluate import EvalResult, evaluate_codes
from ..io.corpus import CorpusError, Vocab, read_codes


@dataclass
class ValidationFiles:
    """The validation files' texts, in the order given."""

    paths: tuple
    pieces: tuple  # per file: a tuple of code point (or byte) arrays (P_i,), as read_codes yields them
    vocab: Vocab  # the symbols they hold, sorted

    @classmethod
    def read(cls, paths, encoding="utf-8", bytes_mode=False):
        """Read every file whole; CorpusError naming the file if one is missing, unreadable, not valid text in
        ``encoding`` (unless ``bytes_mode``) or empty."""
        pieces = []
        for path in paths:
            try:
                pieces.append(tuple(read_codes(path, encoding, bytes_mode)))
            except OSError as e:
                raise CorpusError(f"{path}: cannot read this validation file: {e.strerror}") from None
            if not sum(map(len, pieces[-1])):
                raise CorpusError(f"{path}: the validation file is empty")
        codes = np.unique(np.concatenate([codes for file in pieces for codes in file]))  # (S,) symbols
        symbols = tuple(int(c) for c in codes) if bytes_mode else tuple(map(chr, codes.tolist()))
        return cls(tuple(paths), tuple(pieces), Vocab(symbols, bytes_mode, encoding))

    @property
    def chars(self):
        """Characters (bytes) in all the files."""
        return sum(len(codes) for file in self.pieces for codes in file)

    def evaluate(self, model, vocab):
        """Every file scored by ``model`` reading ``vocab`` (``evaluate_codes``), the results summed."""
        results = [evaluate_codes(model, vocab, file) for file in self.pieces]
        oov = sum((Counter(r.oov) for r in results), Counter())
        return EvalResult(sum(r.total_nll for r in results), sum(r.chars for r in results), dict(oov))
