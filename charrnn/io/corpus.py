"""Corpora: a streaming vocabulary pass, an id cache on disk, and batches of contiguous streams.

Text is read in chunks and never held whole: each chunk becomes an array of code points (or raw
bytes with ``bytes_mode``), counted for the vocabulary, then mapped to ids by a sorted lookup. The ids
are cached beside the checkpoints as a ``.npy`` file (uint8/uint16/uint32 by vocabulary size) and
memory-mapped for training, so a corpus of any size costs only the pages in use.
"""

import codecs
import contextlib
import hashlib
import json
import os
import re
import shutil
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
            raise KeyError(", ".join(map(quoted, unknown)))
        return ids

    def without_unknown(self, text):
        """``text`` (str, or bytes in bytes_mode) without the symbols this vocabulary lacks."""
        known = set(self.symbols)
        if self.bytes_mode and isinstance(text, str):
            text = text.encode("utf-8")  # as encode reads it
        if isinstance(text, bytes):
            return bytes(b for b in text if b in known)
        return "".join(c for c in text if c in known)

    def newline_id(self):
        """The id of the newline character, or None if the vocabulary has none."""
        idx = int(self.ids_of_codes(np.array([ord("\n")], np.uint32))[0])
        return idx if idx >= 0 else None

    def symbol_text(self, code):
        """A symbol as text: the character, or a byte's name, \\xNN."""
        return f"\\x{code:02x}" if self.bytes_mode else chr(code)

    def preview(self, symbols, limit):
        """The first ``limit`` of ``symbols`` (some of this vocabulary's) as one quoted text, and how many more
        there are: "'abc' and 13 more"."""
        texts = [self.symbol_text(s) if self.bytes_mode else s for s in symbols[:limit]]
        more = f" and {len(symbols) - limit} more" if len(symbols) > limit else ""
        return f"{''.join(texts)!r}{more}"

    def extended(self, other):
        """This vocabulary plus the symbols of ``other`` it lacks, in the sorted order ids follow."""
        if other.bytes_mode != self.bytes_mode:
            raise CorpusError("a bytes vocabulary (--bytes) and a character vocabulary do not mix")
        return Vocab(tuple(sorted(set(self.symbols) | set(other.symbols))), self.bytes_mode, self.encoding)

    def to_json(self):
        return {"symbols": list(self.symbols), "bytes_mode": self.bytes_mode, "encoding": self.encoding}

    @classmethod
    def from_json(cls, obj):
        return cls(tuple(obj["symbols"]), obj.get("bytes_mode", False), obj.get("encoding", "utf-8"))


def quoted(symbol):
    """A symbol's text (``Vocab.symbol_text``) for a message: a character as repr shows it (whitespace and
    invisible characters escaped), a byte's name as it is, in quotes (repr would double its backslash)."""
    return repr(symbol) if len(symbol) == 1 else f"'{symbol}'"


def text_to_codes(text, bytes_mode):
    if bytes_mode:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        return np.frombuffer(data, np.uint8).astype(np.uint32)
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


TRAINING_HINT = "use --bytes to train on raw bytes, or --encoding to name its encoding"


def text_codec(encoding):
    """The codec that reads ``encoding`` text: for UTF-8, one that leaves out a byte-order mark."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


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
    decoder = codecs.getincrementaldecoder(text_codec(encoding))(errors="strict")
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


def file_codes(vocab, path):
    """The file's codes as the model reads them, in pieces (``read_codes``)."""
    hint = f"this model reads {vocab.encoding} text (a model trained with --bytes reads any file)"
    return read_codes(path, vocab.encoding, vocab.bytes_mode, hint=hint)


def text_codes(vocab, text):
    """A string's codes as the model reads them, as one piece (a byte model reads it in its encoding)."""
    if vocab.bytes_mode and isinstance(text, str):
        text = text.encode(vocab.encoding)
    return [text_to_codes(text, vocab.bytes_mode)]


def codes_text(vocab, codes):
    """The text of ``codes``, one character per code (a byte model's bytes as Latin-1)."""
    if vocab.bytes_mode:
        return np.asarray(codes, np.uint8).tobytes().decode("latin-1")
    return np.asarray(codes, "<u4").tobytes().decode("utf-32-le")


def corpus_files(paths, bytes_mode=False, skip_dir=None):
    """The files that make up a corpus given as files and directories, in order.

    A directory stands for its text files (every file in it and its subdirectories whose name does not
    start with a dot and, unless ``bytes_mode``, whose first 8 KiB hold no NUL byte), sorted by path;
    ``skip_dir`` (the id cache's directory) and checkpoint directories inside it are never read.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise CorpusError("no corpus given")
    skip = os.path.realpath(skip_dir) if skip_dir else None
    files = []
    for path in map(os.fspath, paths):
        if not os.path.exists(path):
            raise CorpusError(f"{path}: no such file or directory")
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".") and not _is_checkpoint_dir(os.path.join(root, d), skip)]
            found += [os.path.join(root, n) for n in names if not n.startswith(".")]
        found = sorted(f for f in found if os.path.isfile(f) and (bytes_mode or _looks_like_text(f)))
        if not found:
            raise CorpusError(f"{path}: no text files in this directory")
        files += found
    first = {}
    for i, f in enumerate(files):  # a file named twice (or also inside a directory given) would be read twice
        j = first.setdefault(os.path.realpath(f), i)
        if j != i:
            raise CorpusError(f"{f}: given twice (also as {files[j]}); name each file once")
    return files


def _is_checkpoint_dir(path, cache_dir):
    """The id cache's directory, or any directory a training run wrote its checkpoints and metrics to."""
    if os.path.realpath(path) == cache_dir:
        return True
    return any(os.path.exists(os.path.join(path, name)) for name in ("latest.npz", "best.npz", "metrics.jsonl"))


def _looks_like_text(path):
    with open(path, "rb") as f:
        return b"\0" not in f.read(8192)


def _corpus_name(files):
    return files[0] if len(files) == 1 else f"the corpus ({len(files)} files)"


def scan_vocab(paths, encoding="utf-8", bytes_mode=False):
    """One streaming pass over a file (or a list of files): the Vocab of distinct symbols (sorted) and
    their counts."""
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    counts = np.zeros(256 if bytes_mode else MAX_CODE_POINT + 1, np.int64)
    for path in files:
        for codes in read_codes(path, encoding, bytes_mode):
            counts += np.bincount(codes, minlength=len(counts))
    present = np.flatnonzero(counts)
    name = _corpus_name(files)
    if len(present) == 0:
        raise CorpusError(f"{name}: the corpus is empty")
    if len(present) == 1:
        raise CorpusError(f"{name}: the corpus has only one distinct character; a model needs at least two")
    symbols = tuple(int(c) for c in present) if bytes_mode else tuple(chr(c) for c in present)
    return Vocab(symbols, bytes_mode, encoding), counts[present]


def id_dtype(vocab_size):
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


@dataclass
class Corpus:
    """A corpus encoded as ids (memory-mapped) with its vocabulary and symbol counts.

    ``ids`` holds every file's training head, in the files' order, then every file's validation tail
    (the last ``val_frac`` of each file), so both parts are contiguous slices of the cache.
    """

    ids: np.ndarray
    vocab: Vocab
    counts: np.ndarray  # (V,) occurrences of each vocabulary symbol in the whole corpus
    files: tuple = ()  # (path, characters) for each file, in order
    n_val: int = 0  # characters in the validation tails
    val_frac: float = 0.0
    digests: tuple = ()  # each file's SHA-256 (hex), as sha256sum prints it: what tells its content

    @property
    def train_ids(self):
        return self.ids[: len(self.ids) - self.n_val]

    @property
    def val_ids(self):
        return self.ids[len(self.ids) - self.n_val :]

    def split(self, val_frac=None):
        """(train ids, validation ids): each file's tail, in proportion ``val_frac`` (the fraction the corpus
        was loaded with; for a single file, any fraction)."""
        if val_frac is None or val_frac == self.val_frac:
            return self.train_ids, self.val_ids
        if len(self.files) > 1:
            raise ValueError(f"this corpus of several files was laid out for val_frac {self.val_frac}")
        n_val = int(len(self.ids) * val_frac)
        return self.ids[: len(self.ids) - n_val], self.ids[len(self.ids) - n_val :]


def load_corpus(paths, cache_dir, encoding="utf-8", bytes_mode=False, vocab=None, val_frac=0.0, extend_vocab=False):
    """Encode the corpus (a file, a directory, or a list of them) into an id cache in ``cache_dir``.

    The cache is reused while every file, the encoding, the vocabulary and the split stay as they were,
    and rebuilt when any of them changes. Without ``vocab`` the vocabulary is the corpus's own symbols.
    With ``vocab`` (resuming) the corpus may use only its symbols; with ``extend_vocab`` too
    (fine-tuning) the vocabulary is ``vocab`` plus the corpus's new symbols (``vocab.extended``).
    """
    files = corpus_files(paths, bytes_mode, skip_dir=cache_dir)
    key = {
        "files": [file_key(f) for f in files],
        "encoding": encoding,
        "bytes_mode": bytes_mode,
        "val_frac": val_frac if len(files) > 1 else None,  # a single file's layout does not depend on it
    }
    name = os.path.abspath(files[0]) if len(files) == 1 else "\n".join(os.path.abspath(f) for f in files)
    stem = os.path.join(cache_dir, "corpus-" + hashlib.sha1(name.encode()).hexdigest()[:12])
    ids_path, meta_path = stem + ".ids.npy", stem + ".json"
    cached = _read_cache_meta(meta_path)
    fresh = cached is not None and cached.get("key") == key and os.path.exists(ids_path)
    if fresh:
        found = Vocab.from_json(cached["found"])
        found_counts = np.array(cached["counts"], np.int64)
        lengths, digests = cached["lengths"], cached.get("sha256") or [file_digest(f) for f in files]
    else:
        found, found_counts = scan_vocab(files, encoding, bytes_mode)
        lengths, digests = None, [file_digest(f) for f in files]
    if vocab is None:
        target = found
    elif extend_vocab:
        target = vocab.extended(found)
    else:
        target = vocab
        extra = sorted(set(found.symbols) - set(vocab.symbols))
        if extra:
            shown = ", ".join(repr(found.symbol_text(s) if bytes_mode else s) for s in extra[:10])
            raise CorpusError(
                f"{_corpus_name(files)}: its vocabulary differs from the checkpoint's (new: {shown}); cannot "
                "resume on it (--init-from fine-tunes a model on a new corpus)"
            )
    if not fresh or cached.get("vocab") != target.to_json():
        os.makedirs(cache_dir, exist_ok=True)  # only now: a corpus that cannot be used leaves no directory behind
        lengths = _write_id_cache(files, target, ids_path, encoding, bytes_mode, val_frac)
        meta = {"key": key, "found": found.to_json(), "counts": found_counts.tolist(), "lengths": lengths,
                "vocab": target.to_json(), "sha256": digests}
        _write_json_atomic(meta_path, meta)
        _remove_other_caches(cache_dir, stem)
    elif "sha256" not in cached:  # a cache written before it kept the digests: kept now, so hashed this once
        _write_json_atomic(meta_path, {**cached, "sha256": digests})
    index = {symbol: i for i, symbol in enumerate(target.symbols)}
    counts = np.zeros(len(target), np.int64)
    counts[[index[symbol] for symbol in found.symbols]] = found_counts
    ids = np.load(ids_path, mmap_mode="r")
    n_val = sum(_val_length(n, val_frac) for n in lengths)
    return Corpus(ids, target, counts, tuple(zip(files, lengths)), n_val, val_frac, tuple(digests))


def file_digest(path):
    """The SHA-256 of the file's bytes, in hex (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_held_out(paths, out, val_frac, encoding="utf-8", bytes_mode=False):
    """Write to file ``out`` (binary) the validation tails training holds out of the corpus ``paths`` (the last
    ``val_frac`` of each file's characters, in order; ``load_corpus``'s ``val_ids`` as text), encoded as the
    corpus is; return the characters written."""
    written, encoder = 0, codecs.getincrementalencoder(encoding)()
    for path in paths:
        n = sum(len(codes) for codes in read_codes(path, encoding, bytes_mode))
        skip = n - _val_length(n, val_frac)
        for codes in read_codes(path, encoding, bytes_mode):
            codes, skip = codes[skip:], max(skip - len(codes), 0)
            if len(codes):
                out.write(codes.astype(np.uint8).tobytes() if bytes_mode
                          else encoder.encode(codes.tobytes().decode("utf-32-le")))
                written += len(codes)
    return written


def _remove_other_caches(cache_dir, stem):
    """Delete the id caches of other corpora from ``cache_dir``: one run, one corpus (they would pile up)."""
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        if re.fullmatch(r"corpus-[0-9a-f]{12}\.(ids\.npy|json)", name) and not path.startswith(stem + "."):
            with contextlib.suppress(OSError):
                os.remove(path)


def file_key(path):
    """What tells a file's version apart: its absolute path, size and modification time."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _val_length(n, val_frac):
    return int(n * val_frac)


def _read_cache_meta(meta_path):
    try:
        with open(meta_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_id_cache(files, vocab, ids_path, encoding, bytes_mode, val_frac):
    """Write the ids of every file's head, then of every file's tail; return each file's length."""
    dtype = id_dtype(len(vocab))
    size = np.dtype(dtype).itemsize
    tmp, tails_tmp = ids_path + ".tmp", ids_path + ".tails.tmp"
    lengths = []
    with open(tmp, "w+b") as out, open(tails_tmp, "w+b") as tails:
        _write_npy_header(out, dtype, 0)  # rewritten once the length is known
        for path in files:
            n = 0
            for codes in read_codes(path, encoding, bytes_mode):
                out.write(vocab.ids_of_codes(codes).astype(dtype).tobytes())
                n += len(codes)
            lengths.append(n)
            n_val = _val_length(n, val_frac) if len(files) > 1 else 0
            if n_val:  # move this file's validation tail to the tails file
                out.seek(-n_val * size, os.SEEK_END)
                tail_start = out.tell()
                shutil.copyfileobj(out, tails, CHUNK_BYTES)
                out.seek(tail_start)
                out.truncate()
        tails.seek(0)
        shutil.copyfileobj(tails, out, CHUNK_BYTES)
        out.seek(0)
        _write_npy_header(out, dtype, sum(lengths))
        out.flush()
        os.fsync(out.fileno())
    os.unlink(tails_tmp)
    os.replace(tmp, ids_path)
    return lengths


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
    """The ids cut into B contiguous streams; chunk j of an epoch is the next T characters of each (what a
    recurrent model needs: each stream's state carries from one chunk to the next).

    ``chunk(j, epoch)`` returns (inputs, targets), both (T, B) int arrays, targets shifted by one; every
    epoch cuts the same chunks.
    """

    def __init__(self, ids, batch_size, seq_length):
        self.ids = ids
        self.batch_size, self.seq_length = batch_size, seq_length
        self.stream_length = (len(ids) - 1) // batch_size
        self.chunks_per_epoch = _chunks_per_epoch(ids, batch_size, seq_length)
        self.starts = np.arange(batch_size) * self.stream_length  # (B,)

    def chunk(self, j, epoch=0):
        return _windows(self.ids, self.starts + j * self.seq_length, self.seq_length)


class WindowBatches:
    """B windows of T + 1 characters at random places in the ids per chunk, for a model that carries no
    state between chunks (gpt), as nanoGPT samples its batches: no two steps read neighbouring text.

    Chunk j of epoch e takes its B starts from a generator seeded with (seed, e, j), so a resumed run
    reads what the uninterrupted one would. An epoch has as many chunks as ``StreamBatches`` cuts (B·T
    characters each: about one pass over the text's characters, each read by chance).
    """

    def __init__(self, ids, batch_size, seq_length, seed):
        self.ids, self.seed = ids, seed
        self.batch_size, self.seq_length = batch_size, seq_length
        self.chunks_per_epoch = _chunks_per_epoch(ids, batch_size, seq_length)

    def chunk(self, j, epoch=0):
        return _windows(self.ids, self.starts_of(j, epoch), self.seq_length)

    def starts_of(self, j, epoch=0):
        """The B windows' first positions in chunk j of epoch ``epoch``."""
        return np.random.default_rng([self.seed, epoch, j]).integers(0, len(self.ids) - self.seq_length,
                                                                     self.batch_size)  # (B,)


def batches_for(model, ids, batch_size, seq_length, seed):
    """How training reads the ids: contiguous streams for a recurrent model, random windows for a model
    with a bounded context (gpt)."""
    if model.context_length is None:
        return StreamBatches(ids, batch_size, seq_length)
    return WindowBatches(ids, batch_size, seq_length, seed)


def _chunks_per_epoch(ids, batch_size, seq_length):
    """Chunks of B·T characters in an epoch: the T-long pieces of each of B streams over the ids."""
    return (len(ids) - 1) // batch_size // seq_length


def _windows(ids, starts, seq_length):
    """(inputs, targets), (T, B) each, from the T + 1 characters at each of the B ``starts``."""
    offsets = starts[:, None] + np.arange(seq_length + 1)  # (B, T+1)
    window = np.asarray(ids[offsets], dtype=np.intp).T  # (T+1, B)
    return window[:-1], window[1:]
