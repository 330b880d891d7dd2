"""The safetensors file format, read and written with numpy alone.

    write_safetensors("model.safetensors", {"decoder.bias": np.zeros(65)}, metadata={"k": "v"})
    tensors, metadata = read_safetensors("model.safetensors")

Layout (https://github.com/huggingface/safetensors): 8 bytes, the header's length N as a little-endian
unsigned 64-bit integer; N bytes of UTF-8 JSON, ``{name: {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}``; then the data, every tensor
little-endian and C-ordered at ``[begin, end)`` counted from the end of the header.

Reading trusts nothing in the header: every tensor's byte range must match its dtype and shape, the
ranges must tile the data exactly (no gaps, no overlaps, nothing past the end, nothing left over),
and the file must end where the data does. A file that breaks any rule raises ``SafetensorsError``
with one line naming the rule. Nothing is unpickled or evaluated.
"""

import json
import math
import os

import numpy as np

from .atomic import write_atomically

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
METADATA_KEY = "__metadata__"
NUMPY_TYPES = {  # safetensors dtype name -> numpy dtype (little-endian)
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # numpy has no bfloat16: read as its 16 bits, returned as float32 (exact)
}
NAMES = {dtype.str: name for name, dtype in NUMPY_TYPES.items() if name != "BF16"}


class SafetensorsError(Exception):
    """A file that is not valid safetensors; the message is one line for the user."""


def write_safetensors(path, tensors, metadata=None):
    """Write ``tensors`` (name -> numpy array) and ``metadata`` (str -> str) to ``path`` atomically."""
    header, offset = {}, 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors metadata must map strings to strings")
        header[METADATA_KEY] = dict(metadata)
    arrays = {}
    for name, value in tensors.items():
        if name == METADATA_KEY:
            raise ValueError(f"{METADATA_KEY} cannot name a tensor")
        value = np.asarray(value)
        little = value.dtype.newbyteorder("<")
        if little.str not in NAMES:
            raise ValueError(f"tensor {name}: dtype {value.dtype} has no safetensors name")
        arrays[name] = np.ascontiguousarray(value, dtype=little)
        header[name] = {"dtype": NAMES[little.str], "shape": list(value.shape),
                        "data_offsets": [offset, offset + arrays[name].nbytes]}
        offset += arrays[name].nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as the reference writer leaves it

    def write(f):
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for value in arrays.values():
            f.write(value.tobytes())

    write_atomically(path, ".safetensors", write)


def read_safetensors(path):
    """The tensors (name -> numpy array, in header order; BF16 as float32) and the metadata of a
    safetensors file. Raises SafetensorsError (one line) for anything that breaks the format."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise SafetensorsError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            n = int.from_bytes(prefix, "little")
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise SafetensorsError(
                    f"{path}: not a safetensors file, or truncated (header length {n} bytes, file {size} bytes)"
                )
            header = _parse_header(path, f.read(n))
            data = f.read()
    except OSError as e:
        raise SafetensorsError(f"{path}: cannot read ({e.strerror or e})") from None
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path}: {METADATA_KEY} must map names to strings")
    entries = {name: _check_entry(path, name, info) for name, info in header.items()}
    _check_tiling(path, entries, len(data))
    tensors = {}
    for name, (dtype, shape, (begin, _)) in entries.items():
        value = np.frombuffer(data, NUMPY_TYPES[dtype], count=math.prod(shape), offset=begin).reshape(shape)
        if dtype == "BF16":  # bfloat16 is float32's top half: shift its bits into place
            value = (value.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = value.astype(value.dtype.newbyteorder("="))
    return tensors, metadata


def _parse_header(path, raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SafetensorsError(f"{path}: safetensors header is not UTF-8") from None
    if not text.startswith("{"):
        raise SafetensorsError(f"{path}: not a safetensors file (header is not a JSON object)")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as e:
        raise SafetensorsError(f"{path}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _check_entry(path, name, info):
    """(dtype, shape, (begin, end)) of one header entry, after checking that it describes itself truthfully."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"{path}: tensor {name}: header entry needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in NUMPY_TYPES:
        raise SafetensorsError(f"{path}: tensor {name}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise SafetensorsError(f"{path}: tensor {name}: shape must be a list of non-negative integers, not {shape}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise SafetensorsError(f"{path}: tensor {name}: data_offsets must be two non-negative integers")
    begin, end = offsets
    expected = math.prod(shape) * NUMPY_TYPES[dtype].itemsize
    if end < begin or end - begin != expected:
        raise SafetensorsError(
            f"{path}: tensor {name}: data_offsets [{begin}, {end}] hold {end - begin} bytes, but {dtype}{shape} "
            f"needs {expected}"
        )
    return dtype, tuple(shape), (begin, end)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_tiling(path, entries, data_bytes):
    """The tensors' byte ranges must cover the data exactly once: no overlap, no gap, nothing outside."""
    position = 0
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if begin < position:
            raise SafetensorsError(f"{path}: tensor {name}: data_offsets [{begin}, {end}] overlap another tensor")
        if begin > position:
            raise SafetensorsError(f"{path}: tensor {name}: a gap of {begin - position} bytes before its data")
        position = end
    if position > data_bytes:
        raise SafetensorsError(
            f"{path}: truncated: the header places data up to byte {position}, the file holds {data_bytes}"
        )
    if position < data_bytes:
        raise SafetensorsError(f"{path}: {data_bytes - position} bytes after the last tensor's data")
