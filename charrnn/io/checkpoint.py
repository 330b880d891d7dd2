"""Checkpoints: one ``.npz`` holding arrays and a JSON metadata string, written atomically.

Arrays: ``param/<name>`` (the model), ``opt/<key>`` (optimizer state), ``state/<i>`` (the hidden
state carried between chunks). ``meta`` is a JSON string: format and version, the model config, the
training config, the vocabulary, and the training position (step, epoch, chunk, RNG state, ...).
Loading never unpickles: ``np.load(..., allow_pickle=False)``.
"""

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field

import numpy as np

from ..models.registry import LanguageModel, build_model, model_config
from .atomic import write_atomically
from .corpus import Vocab

FORMAT = "charrnn-checkpoint"
VERSION = 1
LANGUAGE_MODEL = "language-model"  # the kind of model a checkpoint holds (meta "kind"; the classifier's: "classifier")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line for the user."""


@dataclass
class Checkpoint:
    model: LanguageModel  # CharRNN or CharGPT
    vocab: Vocab
    meta: dict = field(default_factory=dict)  # training position and config; see module docstring
    optimizer_state: dict = field(default_factory=dict)
    hidden_state: tuple = ()


def save_checkpoint(path, ckpt):
    """Write ``ckpt`` to ``path`` atomically: a crash at any moment leaves the old file intact.

    The file gets the permissions the umask gives a new file (0644 under umask 022), as ``open`` would.
    """
    arrays = {f"param/{k}": v for k, v in ckpt.model.params.items()}
    arrays.update({f"opt/{k}": v for k, v in ckpt.optimizer_state.items()})
    arrays.update({f"state/{i}": s for i, s in enumerate(ckpt.hidden_state)})
    meta = dict(ckpt.meta, model=asdict(ckpt.model.config), vocab=ckpt.vocab.to_json())
    write_archive(path, arrays, meta)


def write_archive(path, arrays, meta):
    """Write named ``arrays`` and the JSON-able ``meta`` (format and version added) to ``path`` atomically."""
    arrays = dict(arrays, meta=np.array(json.dumps(dict(meta, format=FORMAT, version=VERSION))))
    write_atomically(path, ".npz", lambda f: np.savez(f, **arrays))
    directory = os.path.dirname(os.path.abspath(path))
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def resolve_checkpoint(path):
    """A checkpoint file for ``path``: the file itself, or a directory's best.npz, else latest.npz."""
    if os.path.isdir(path):
        for name in ("best.npz", "latest.npz"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise CheckpointError(f"{path}: no best.npz or latest.npz in this directory")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or directory")
    return path


def read_archive(path):
    """The (meta, arrays) of a checkpoint file, format and version checked; CheckpointError otherwise."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise CheckpointError(f"{path}: not a charrnn checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"{path}: holds pickled object arrays, which charrnn refuses to load") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: not a charrnn checkpoint, or truncated/corrupt ({type(e).__name__})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a charrnn checkpoint (no metadata)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a charrnn checkpoint")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('version')} is newer than this charrnn reads "
            f"({VERSION}); upgrade charrnn"
        )
    return meta, arrays


def checkpoint_kind(path):
    """The kind of model the checkpoint file ``path`` holds (LANGUAGE_MODEL, "classifier"), read from its
    metadata alone; None for a file that is not a charrnn checkpoint."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    return meta.get("kind", LANGUAGE_MODEL)


def load_checkpoint(path):
    """Load and check a checkpoint (file or directory); raise CheckpointError with a one-line reason."""
    path = resolve_checkpoint(path)
    meta, arrays = read_archive(path)
    if meta.get("kind", LANGUAGE_MODEL) != LANGUAGE_MODEL:
        raise CheckpointError(f"{path}: a {meta['kind']} checkpoint, not a language model (see charrnn classify)")
    try:
        config = model_config(meta["model"])
        vocab = Vocab.from_json(meta["vocab"])
        params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
        model = build_model(config, params=params)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({e})") from None
    if len(vocab) != config.vocab_size:
        raise CheckpointError(f"{path}: inconsistent checkpoint (vocabulary size)")
    optimizer_state = {k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")}
    n_states = sum(k.startswith("state/") for k in arrays)
    hidden_state = tuple(arrays[f"state/{i}"] for i in range(n_states))
    return Checkpoint(model, vocab, meta, optimizer_state, hidden_state)

