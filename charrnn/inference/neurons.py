"""A recurrent model's units, read over a text: which track a feature of it, how often the gates saturate, and
every activation written out for a notebook.

    ranking = correlate(model, vocab, "held_out.py", "bracket-depth")  # [UnitScore(layer, state, unit, r)], |r| first
    gates = saturation(model, vocab, "held_out.py")      # [GateSaturation(layer, gate, left (H,), right (H,))]
    scan(model, vocab, file_codes(vocab, path), [Correlation(...), Saturation(model), ActivationDump(...)])

``scan`` reads a text once (inspect.py's ``read_pieces``: the passes and state of ``charrnn eval``) and hands
each piece to several readers; each keeps running sums (a ``Correlation``, a ``Saturation``), writes as it goes
(an ``ActivationDump``) or keeps one unit's values (a ``UnitTrace``), so memory does not grow with the text
(a regex feature is matched once against the whole text: features.py). Units are h (and c for an LSTM) of
every layer, layers numbered from 1, units from 0; the rows of a text are the states after each of its
characters (a character outside the vocabulary, which the model does not read, repeats the row before it).
Saturation follows Karpathy, Johnson and Fei-Fei (2015, figure 3): a logistic gate is left-saturated below
0.1 and right-saturated above 0.9.
"""

import os
import shutil
import tempfile
import zipfile
from typing import NamedTuple

import numpy as np

from ..io.atomic import write_atomically
from ..io.corpus import codes_text, file_codes
from .features import FeatureStream, check_feature
from .inspect import read_pieces

LEFT, RIGHT = 0.1, 0.9  # a logistic gate's saturation thresholds


def feature_stream(feature, vocab, path):
    """A FeatureStream of ``feature`` for the file at ``path`` (a regex reads the whole text once, to match it)."""
    if check_feature(feature) is None:
        return FeatureStream(feature)
    stream = FeatureStream(feature, "".join(codes_text(vocab, codes) for codes in file_codes(vocab, path)))
    if not len(stream.spans):
        raise ValueError(f"{feature} matches nothing in {path}: nothing to correlate with")
    return stream


def count_chars(vocab, path):
    """The characters (rows) of the file at ``path``: a pass of decoding, nothing kept."""
    return sum(len(codes) for codes in file_codes(vocab, path))


def head(pieces, n):
    """The first ``n`` characters of code ``pieces``, as pieces."""
    for codes in pieces:
        if n <= 0:
            return
        yield codes[:n]
        n -= len(codes)


class UnitScore(NamedTuple):
    layer: int  # from 1
    state: str  # "h" or "c"
    unit: int  # from 0
    r: float  # Pearson correlation with the feature; nan for a unit that never changes

    def to_json(self):
        return {"layer": self.layer, "state": self.state, "unit": self.unit,
                "r": None if np.isnan(self.r) else float(self.r)}

    def label(self):
        return f"layer {self.layer} {self.state} {self.unit}"


class GateSaturation(NamedTuple):
    layer: int  # from 1
    gate: str  # "i", "f", "o" (lstm) or "r", "z" (gru)
    left: np.ndarray  # (H,): the fraction of characters after which each unit's gate is below 0.1
    right: np.ndarray  # (H,): above 0.9

    def to_json(self):
        return {"layer": self.layer, "gate": self.gate, "left": self.left.tolist(), "right": self.right.tolist()}


def unit_blocks(model):
    """The ranked states, (layer, state) from ("1", "h"), in the order their units are numbered across."""
    return [(k, s) for k in range(1, model.config.num_layers + 1) for s in model.cell.state_names]


def check_recurrent(model, what):
    """ValueError unless ``model`` is recurrent (``what`` names what needs it)."""
    if model.context_length is not None:
        raise ValueError(f"{what} reads a recurrent model's units; a gpt model has none (inspect --attention "
                         "shows its attention)")


def scan(model, vocab, pieces, readers, check=None):
    """Read a text, as code ``pieces`` (io/corpus.py's ``file_codes``, ``text_codes``), once through ``model``,
    handing each inspect.py Piece (its codes and units) and its first row's number to each reader's
    ``add(piece, row)``; return the number of rows (characters) read. A reader's results are read from it
    afterwards. ``check()``, if given, is called between passes (it may raise, to stop)."""
    check_recurrent(model, "neurons")
    row = 0
    for piece in read_pieces(model, vocab, pieces, scores=False, states=True):
        if check is not None:
            check()
        for reader in readers:
            reader.add(piece, row)
        row += len(piece.codes)
    return row


def correlate(model, vocab, path, feature):
    """Every unit's ``UnitScore`` for ``feature`` (features.py) over the file at ``path``, the largest |r| first."""
    correlation = Correlation(model, vocab, feature_stream(feature, vocab, path))
    scan(model, vocab, file_codes(vocab, path), [correlation])
    return correlation.ranking()


def saturation(model, vocab, path):
    """A ``GateSaturation`` for each layer and logistic gate, over the file at ``path``."""
    counter = Saturation(model)
    scan(model, vocab, file_codes(vocab, path), [counter])
    return counter.fractions()


class Correlation:
    """Pearson's r of every unit with a feature (a features.FeatureStream), from running means, sums of squares
    and co-moments (Chan, Golub and LeVeque's pairwise update, in float64): O(units) memory for any text."""

    def __init__(self, model, vocab, feature):
        check_recurrent(model, "a feature's correlation")
        self.vocab, self.feature, self.blocks = vocab, feature, unit_blocks(model)
        self.hidden_size = H = model.config.hidden_size
        self.n, self.mean_f, self.m2_f = 0, 0.0, 0.0
        self.mean_x, self.m2_x, self.co = (np.zeros(len(self.blocks) * H) for _ in range(3))  # (U,) each

    def add(self, piece, row):
        x = np.concatenate([piece.units[f"layer{k}/{s}"] for k, s in self.blocks], axis=1).astype(np.float64)  # (n, U)
        f = self.feature.values(codes_text(self.vocab, piece.codes))  # (n,)
        nb = len(f)
        mean_x, mean_f = x.mean(axis=0), f.mean()
        dx, df = x - mean_x, f - mean_f
        n = self.n + nb
        delta_x, delta_f, weight = mean_x - self.mean_x, mean_f - self.mean_f, self.n * nb / n
        self.mean_x += delta_x * (nb / n)
        self.mean_f += delta_f * (nb / n)
        self.m2_x += np.einsum("nu,nu->u", dx, dx) + delta_x**2 * weight
        self.m2_f += df @ df + delta_f**2 * weight
        self.co += df @ dx + delta_x * delta_f * weight
        self.n = n

    def r(self):
        """(U,) Pearson r of each unit, numbered across ``unit_blocks``; nan for a unit that never changes."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.co / np.sqrt(self.m2_x * self.m2_f)

    def ranking(self):
        """Every unit's UnitScore, the largest |r| first (units that never change last); ValueError if the
        feature was the same for every character (nothing to correlate with)."""
        if self.m2_f == 0:
            raise ValueError(f"the feature {self.feature.name} is the same for every character of this text "
                             f"({self.mean_f:g}): nothing to correlate with")
        r, H = self.r(), self.hidden_size
        order = np.argsort(-np.nan_to_num(np.abs(r), nan=-1.0), kind="stable")
        return [UnitScore(*self.blocks[u // H], int(u % H), float(r[u])) for u in order]


class Saturation:
    """Counts, for each layer's logistic gates, the characters after which each unit is below 0.1 or above 0.9."""

    def __init__(self, model):
        check_recurrent(model, "saturation")
        cell = model.cell
        if not cell.logistic_gates:
            raise ValueError(f"saturation is measured on gates, and an {model.config.model} has none (lstm and gru "
                             "have)")
        H = model.config.hidden_size
        self.gates = [(k, g) for k in range(1, model.config.num_layers + 1)
                      for g in cell.gate_names[: cell.logistic_gates]]
        self.left = {key: np.zeros(H, np.int64) for key in self.gates}
        self.right = {key: np.zeros(H, np.int64) for key in self.gates}
        self.n = 0

    def add(self, piece, row):
        for k, g in self.gates:
            values = piece.units[f"layer{k}/gate_{g}"]  # (n, H)
            self.left[k, g] += (values < LEFT).sum(axis=0)
            self.right[k, g] += (values > RIGHT).sum(axis=0)
        self.n += len(piece.codes)

    def fractions(self):
        """A GateSaturation for each layer and gate, in order."""
        return [GateSaturation(k, g, self.left[k, g] / self.n, self.right[k, g] / self.n) for k, g in self.gates]


class UnitTrace:
    """Keeps one unit's value after every character (for colouring a text by it): ``values`` (N,)."""

    def __init__(self, model, layer, unit, state="h"):
        cfg = model.config
        if not 1 <= layer <= cfg.num_layers:
            raise ValueError(f"layer {layer} is out of range: this model's layers are 1 to {cfg.num_layers}")
        if not 0 <= unit < cfg.hidden_size:
            raise ValueError(f"unit {unit} is out of range: this model's units are 0 to {cfg.hidden_size - 1}")
        names = model.state_names()
        if state not in names:
            raise ValueError(f"{cfg.model} has no state {state!r}; it has {', '.join(names)}")
        self.name, self.unit, self.parts = f"layer{layer}/{state}", unit, []

    def add(self, piece, row):
        self.parts.append(piece.units[self.name][:, self.unit].astype(np.float64))

    @property
    def values(self):
        return np.concatenate(self.parts) if self.parts else np.zeros(0)


class ActivationDump:
    """Writes every activation of a text to an ``.npz`` as it is read: arrays ``layer{L}/{name}`` (N, H), row i
    the state after character i (names as ``CharRNN.forward_states``'s). Each array's rows are appended to a
    ``.npy`` file beside ``path`` as they come (nothing held in memory); ``close`` stores the files in the
    ``.npz`` (uncompressed) atomically, deleting each as it goes. Refuses, before writing, a dump larger than
    the free space on the disk holding ``path`` (it needs its size and one array's more)."""

    def __init__(self, model, path, rows):
        cfg = model.config
        self.names = [f"layer{k}/{name}" for k in range(1, cfg.num_layers + 1) for name in model.state_names()]
        self.path, self.dtype = path, model.dtype
        size = len(self.names) * rows * cfg.hidden_size * self.dtype.itemsize
        directory = os.path.dirname(os.path.abspath(path))
        free = shutil.disk_usage(directory).free
        if size * (1 + 1 / len(self.names)) > free:
            raise ValueError(f"{path}: the activations of {rows:,} characters take {_size(size)} and the disk has "
                             f"{_size(free)} free; dump a shorter text")
        self.tmp = tempfile.mkdtemp(prefix=".tmp-dump-", dir=directory)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (rows, cfg.hidden_size)}
        self.files = {}
        for name in self.names:
            self.files[name] = open(self._file(name), "wb")
            np.lib.format.write_array_header_1_0(self.files[name], header)

    def _file(self, name):
        return os.path.join(self.tmp, name.replace("/", "-") + ".npy")

    def add(self, piece, row):
        for name in self.names:
            self.files[name].write(np.ascontiguousarray(piece.units[name], self.dtype).tobytes())

    def close(self):
        """Write the ``.npz`` (when every row is in) and remove the temporary files."""
        try:
            for f in self.files.values():
                f.close()

            def write(f):
                with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                    for name in self.names:
                        archive.write(self._file(name), name + ".npy")
                        os.unlink(self._file(name))

            write_atomically(self.path, ".npz", write)
        finally:
            self.discard()

    def discard(self):
        """Close and remove the temporary files (the ``.npz`` is not written)."""
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _size(nbytes):
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
