"""Corpora: a streaming vocabulary pass, an id cache on disk, and batches of contiguous streams.

Text is read in chunks and never held whole: each chunk becomes an array of code points (or raw
bytes with ``bytes_mode``), counted for the vocabulary, then mapped to ids by a sorted lookup. The ids
are cached beside the checkpoints as a ``.npy`` file (uint8/uint16/uint32 by vocabulary size) and
memory-mapped for training, so a corpus of any size costs only the pages in use.
"""

import codecs
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

CHUNK_BYTES = 1 << 22
MAX_CODE_POINT = 0x10FFFF


class CorpusError(Exception):
    """A corpus that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Vocab:
    """The model's symbols in id order: one-character strings, or byte values in ``bytes_mode``."""

    symbols: tuple
    bytes_mode: bool = False
    encoding: str = "utf-8"

    def __post_init__(self):
        codes = self.symbols if self.bytes_mode else [ord(s) for s in self.symbols]
        object.__setattr__(self, "_codes", np.array(codes, dtype=np.uint32))

    def __len__(self):
        return len(self.symbols)

    def ids_of_codes(self, codes):
        """Map code points (or byte values) to ids; unknown codes map to -1."""
        pos = np.searchsorted(self._codes, codes)
        pos = np.minimum(pos, len(self._codes) - 1)
        return np.where(self._codes[pos] == codes, pos, -1)

    def encode(self, text):
        """ids (N,) for ``text`` (str, or bytes in bytes_mode); raise KeyError naming unknown symbols."""
        codes = text_to_codes(text, self.bytes_mode)
        ids = self.ids_of_codes(codes)
        if (ids < 0).any():
            unknown = sorted({self.symbol_text(int(c)) for c in codes[ids < 0]})
            raise KeyError(", ".join(repr(u) for u in unknown))
        return ids

    def newline_id(self):
        """The id of the newline character, or None if the vocabulary has none."""
        idx = int(self.ids_of_codes(np.array([ord("\n")], np.uint32))[0])
        return idx if idx >= 0 else None

    def symbol_text(self, code):
        return f"\\x{code:02x}" if self.bytes_mode else chr(code)

    def decoder(self):
        """A function from one id to printable text (bytes are decoded incrementally)."""
        if not self.bytes_mode:
            return self.symbols.__getitem__
        decode = codecs.getincrementaldecoder(self.encoding)(errors="replace").decode
        return lambda i: decode(bytes((self.symbols[i],)))

    def to_json(self):
        return {"symbols": list(self.symbols), "bytes_mode": self.bytes_mode, "encoding": self.encoding}

    @classmethod
    def from_json(cls, obj):
        return cls(tuple(obj["symbols"]), obj["bytes_mode"], obj["encoding"])


def text_to_codes(text, bytes_mode):
    if bytes_mode:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        return np.frombuffer(data, np.uint8).astype(np.uint32)
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


TRAINING_HINT = "use --bytes to train on raw bytes, or --encoding to name its encoding"


def read_codes(path, encoding="utf-8", bytes_mode=False, chunk_bytes=CHUNK_BYTES, hint=TRAINING_HINT):
    """Yield the file's code points (or bytes) as uint32 arrays, a chunk at a time.

    A UTF-8 byte-order mark is not part of the text; line endings are kept as they are. Text that
    does not decode raises CorpusError naming the byte offset, followed by ``hint``.
    """
    if bytes_mode:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_bytes):
                yield np.frombuffer(chunk, np.uint8).astype(np.uint32)
        return
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                raise CorpusError(f"{path}: not valid {encoding} at byte {at}; {hint}") from None
            if text:
                yield np.frombuffer(text.encode("utf-32-le"), np.uint32)
            if not chunk:
                return
            offset += len(chunk)


def scan_vocab(path, encoding="utf-8", bytes_mode=False):
    """One streaming pass: the Vocab of distinct symbols (sorted) and their counts."""
    counts = np.zeros(256 if bytes_mode else MAX_CODE_POINT + 1, np.int64)
    for codes in read_codes(path, encoding, bytes_mode):
        counts += np.bincount(codes, minlength=len(counts))
    present = np.flatnonzero(counts)
    if len(present) == 0:
        raise CorpusError(f"{path}: the corpus is empty")
    if len(present) == 1:
        raise CorpusError(f"{path}: the corpus has only one distinct character; a model needs at least two")
    symbols = tuple(int(c) for c in present) if bytes_mode else tuple(chr(c) for c in present)
    return Vocab(symbols, bytes_mode, encoding), counts[present]


def id_dtype(vocab_size):
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


@dataclass
class Corpus:
    """A corpus encoded as ids (memory-mapped) with its vocabulary and symbol counts."""

    ids: np.ndarray
    vocab: Vocab
    counts: np.ndarray

    def split(self, val_frac):
        """(train ids, validation ids): the validation part is the tail of the corpus."""
        n_val = int(len(self.ids) * val_frac)
        return self.ids[: len(self.ids) - n_val], self.ids[len(self.ids) - n_val :]


def load_corpus(path, cache_dir, encoding="utf-8", bytes_mode=False, vocab=None):
    """Encode ``path`` into an id cache in ``cache_dir`` (reused while the file is unchanged).

    With ``vocab`` given (resuming), the corpus must use exactly that vocabulary.
    """
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CorpusError(f"{path}: is a directory, not a text file")
    os.makedirs(cache_dir, exist_ok=True)
    stat = os.stat(path)
    key = {
        "path": os.path.abspath(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "encoding": encoding,
        "bytes_mode": bytes_mode,
    }
    stem = os.path.join(cache_dir, "corpus-" + hashlib.sha1(key["path"].encode()).hexdigest()[:12])
    ids_path, meta_path = stem + ".ids.npy", stem + ".json"
    cached = _read_cache_meta(meta_path)
    if cached is not None and cached["key"] == key and os.path.exists(ids_path):
        found = Vocab.from_json(cached["vocab"])
        counts = np.array(cached["counts"], np.int64)
    else:
        found, counts = scan_vocab(path, encoding, bytes_mode)
        _write_id_cache(path, found, ids_path, encoding, bytes_mode)
        _write_json_atomic(meta_path, {"key": key, "vocab": found.to_json(), "counts": counts.tolist()})
    if vocab is not None and found.symbols != vocab.symbols:
        extra = sorted(set(found.symbols) - set(vocab.symbols))
        shown = ", ".join(repr(found.symbol_text(s) if bytes_mode else s) for s in extra[:10])
        detail = f" (new: {shown})" if extra else ""
        raise CorpusError(f"{path}: its vocabulary differs from the checkpoint's{detail}; cannot resume on it")
    ids = np.load(ids_path, mmap_mode="r")
    return Corpus(ids, found, counts)


def _read_cache_meta(meta_path):
    try:
        with open(meta_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_id_cache(path, vocab, ids_path, encoding, bytes_mode):
    total = 0
    tmp = ids_path + ".tmp"
    dtype = id_dtype(len(vocab))
    with open(tmp, "wb") as out:
        _write_npy_header(out, dtype, 0)  # rewritten once the length is known
        for codes in read_codes(path, encoding, bytes_mode):
            out.write(vocab.ids_of_codes(codes).astype(dtype).tobytes())
            total += len(codes)
        out.seek(0)
        _write_npy_header(out, dtype, total)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, ids_path)


def _write_npy_header(f, dtype, length):
    """Write a .npy v1 header padded to a fixed 128 bytes, so it can be rewritten in place."""
    header = repr({"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (length,)})
    header = header.ljust(128 - 10 - 1) + "\n"
    f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"))


def _write_json_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StreamBatches:
    """The ids cut into B contiguous streams; chunk j of an epoch is the next T characters of each.

    ``chunk(j)`` returns (inputs, targets), both (T, B) int arrays, targets shifted by one.
    """

    def __init__(self, ids, batch_size, seq_length):
        self.ids = ids
        self.batch_size, self.seq_length = batch_size, seq_length
        self.stream_length = (len(ids) - 1) // batch_size
        self.chunks_per_epoch = self.stream_length // seq_length
        self.starts = np.arange(batch_size) * self.stream_length  # (B,)

    def chunk(self, j):
        offsets = self.starts[:, None] + j * self.seq_length + np.arange(self.seq_length + 1)  # (B, T+1)
        window = np.asarray(self.ids[offsets], dtype=np.intp).T  # (T+1, B)
        return window[:-1], window[1:]
