"""Checkpoints as PyTorch ``state_dict``s in safetensors files: export and import.

    export_checkpoint("checkpoints/best.npz", "model.safetensors")
    import_safetensors("model.safetensors", "imported.npz")

An export holds the ``state_dict`` of this PyTorch module (V symbols, H units, L layers):

    rnn = nn.LSTM | nn.GRU | nn.RNN(input_size=V, hidden_size=H, num_layers=L)   # input: one-hot (T, B, V)
    decoder = nn.Linear(H, V)                                                     # logits = decoder(output)

``TORCH_TABLE`` below is the whole translation, one row per tensor. charrnn keeps a layer's weights as
(input, G·H) with gates [i, f, o, g] for LSTM and [r, z, n] for GRU, and one bias (plus a GRU's
``b_hn``, the recurrent bias of n inside the reset gate, as PyTorch has it); PyTorch keeps (G·H, input)
with gates [i, f, g, o] and [r, z, n], and two biases. So a weight is reordered by gate and transposed;
``bias_ih`` is charrnn's bias reordered; ``bias_hh`` is zero but for a GRU's n slot, which holds
``b_hn``. Import reverses each row and folds a nonzero ``bias_hh`` (a model trained in PyTorch) into
the one bias, as both only ever appear summed (for GRU: for r and z).

A gpt model exports as nanoGPT's ``GPT`` (wte, wpe, blocks of ln_1, attn.c_attn, attn.c_proj, ln_2,
mlp.c_fc, mlp.c_proj, ln_f) with two differences charrnn's model has: the output layer ``lm_head`` has a
bias and is not tied to ``wte``, and the MLP's GELU is the tanh approximation (``approximate="tanh"``).
Every Linear weight is charrnn's transposed; embeddings, LayerNorms and biases are as they are.

The metadata holds the model config and the vocabulary as JSON: ``charrnn.model`` (ModelConfig's or
GPTConfig's fields; dtype, dropout and the rest may be left out) and ``charrnn.vocab`` ({"symbols":
[...], "bytes_mode": false, "encoding": "utf-8"}).
"""

import json
from dataclasses import asdict, fields

import numpy as np

from ..models.registry import GPTConfig, ModelConfig, build_model, model_config, param_shapes
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .corpus import Vocab
from .safetensors import SafetensorsError, read_safetensors, write_safetensors

MODEL_KEY, VOCAB_KEY = "charrnn.model", "charrnn.vocab"
TORCH_MODULES = {"rnn": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU", "gpt": "nanoGPT's GPT"}
TORCH_GATES = {"rnn": (0,), "lstm": (0, 1, 3, 2), "gru": (0, 1, 2)}  # PyTorch's gate j is charrnn's gate [j]
EXACT_FLOATS = {"float32": ("F16", "F32"), "float64": ("F16", "F32", "F64")}  # exact upcasts (BF16 is read as F32)


class ExportError(Exception):
    """A model that cannot be exported, or a file that cannot be imported; the message is one line."""


def torch_table(config):
    """The translation table: (PyTorch name, charrnn name or None, rule), in ``state_dict`` order.

    Rules: "weight": reorder the gate columns, transpose; "bias": reorder the gates; "recurrent bias":
    zeros, with a GRU's b_hn in the n slot; "transpose"; "same".
    """
    if config.model == "gpt":
        return _gpt_table(config)
    rows = []
    for k in range(config.num_layers):
        rows += [
            (f"rnn.weight_ih_l{k}", f"l{k}.W_xh", "weight"),
            (f"rnn.weight_hh_l{k}", f"l{k}.W_hh", "weight"),
            (f"rnn.bias_ih_l{k}", f"l{k}.b", "bias"),
            (f"rnn.bias_hh_l{k}", f"l{k}.b_hn" if config.model == "gru" else None, "recurrent bias"),
        ]
    return rows + [("decoder.weight", "W_hy", "transpose"), ("decoder.bias", "b_y", "same")]


GPT_BLOCK = (  # (nanoGPT's module in a block, charrnn's name in h{k}, kind): a Linear's weight is transposed
    ("ln_1", "ln1", "layernorm"), ("attn.c_attn", "attn.W_qkv", "linear"), ("attn.c_proj", "attn.W_proj", "linear"),
    ("ln_2", "ln2", "layernorm"), ("mlp.c_fc", "mlp.W_fc", "linear"), ("mlp.c_proj", "mlp.W_proj", "linear"),
)


def _gpt_table(config):
    """nanoGPT's names for charrnn's gpt parameters (see the module docstring)."""
    rows = [("transformer.wte.weight", "wte", "same"), ("transformer.wpe.weight", "wpe", "same")]

    def module(torch_name, name, kind, bias=None):
        if kind == "layernorm":  # gain and bias: ln1.g, ln1.b
            return [(torch_name + ".weight", name + ".g", "same"), (torch_name + ".bias", name + ".b", "same")]
        bias = bias or name.replace(".W_", ".b_")  # attn.W_qkv -> attn.b_qkv
        return [(torch_name + ".weight", name, "transpose"), (torch_name + ".bias", bias, "same")]

    for k in range(config.num_layers):
        for torch_name, name, kind in GPT_BLOCK:
            rows += module(f"transformer.h.{k}.{torch_name}", f"h{k}.{name}", kind)
    return rows + module("transformer.ln_f", "ln_f", "layernorm") + module("lm_head", "W_hy", "linear", "b_y")


def reorder_gates(a, order):
    """``a`` (..., G·H) with its G column blocks taken in ``order``; works on numpy arrays and torch tensors."""
    G = len(order)
    blocks = a.reshape(*a.shape[:-1], G, a.shape[-1] // G)
    return blocks[..., list(order), :].reshape(a.shape)


class NumpyOps:
    """How ``to_torch_names`` makes arrays; the torch engine passes torch's own, so autograd follows the table."""

    concat = staticmethod(np.concatenate)

    @staticmethod
    def zeros(n, like):
        return np.zeros(n, like.dtype)

    @staticmethod
    def transpose(a):
        return np.ascontiguousarray(a.T)


def to_torch_names(params, config, ops=NumpyOps):
    """charrnn parameters (name -> array) as the PyTorch module's state_dict (name -> array), by ``torch_table``."""
    _check_exportable(config)
    order, H = TORCH_GATES.get(config.model, ()), config.hidden_size
    out = {}
    for torch_name, name, rule in torch_table(config):
        value = params[name] if name is not None else None
        if rule == "weight":
            value = ops.transpose(reorder_gates(value, order))
        elif rule == "bias":
            value = reorder_gates(value, order)
        elif rule == "recurrent bias":
            zeros = ops.zeros(len(order) * H, like=params["b_y"])
            value = zeros if value is None else ops.concat([zeros[: 2 * H], value])
        elif rule == "transpose":
            value = ops.transpose(value)
        out[torch_name] = value
    return out


def from_torch_names(tensors, config):
    """The reverse of ``to_torch_names``: charrnn parameters from state_dict arrays (names and shapes checked)."""
    order, H = TORCH_GATES.get(config.model, ()), config.hidden_size
    inverse = tuple(int(j) for j in np.argsort(order))
    params = {}
    for torch_name, name, rule in torch_table(config):
        value = tensors[torch_name]
        if rule == "weight":
            params[name] = np.ascontiguousarray(reorder_gates(value.T, inverse))
        elif rule == "bias":
            params[name] = reorder_gates(value, inverse)
        elif rule == "recurrent bias":
            layer = torch_name.rsplit("_l", 1)[1]
            b = params[f"l{layer}.b"]
            into_b = reorder_gates(value, inverse)
            if name is not None:  # GRU: the n slot is b_hn; r and z add to the one bias
                params[name] = value[2 * H :].copy()
                into_b = np.concatenate([into_b[: 2 * H], np.zeros(H, into_b.dtype)])
            params[f"l{layer}.b"] = np.where(into_b == 0, b, b + into_b)  # adding zeros keeps every bit (-0.0)
        elif rule == "transpose":
            params[name] = np.ascontiguousarray(value.T)
        else:
            params[name] = value
    return params


def _check_exportable(config):
    if config.model not in TORCH_MODULES:
        raise ExportError(f"export writes rnn, lstm, gru and gpt models, not {config.model}")
    if config.model == "rnn" and config.activation not in ("tanh", "relu"):
        raise ExportError(
            f"PyTorch's nn.RNN has no {config.activation} nonlinearity (only tanh and relu): this model cannot "
            "be exported"
        )


def export_checkpoint(checkpoint_path, out_path):
    """Write the checkpoint's model as a PyTorch state_dict in safetensors; return the Checkpoint."""
    ckpt = load_checkpoint(checkpoint_path)
    config = ckpt.model.config
    tensors = to_torch_names(ckpt.model.params, config)
    metadata = {"format": "pt", MODEL_KEY: json.dumps(asdict(config)), VOCAB_KEY: json.dumps(ckpt.vocab.to_json())}
    try:
        write_safetensors(out_path, tensors, metadata)
    except OSError as e:
        raise ExportError(f"{out_path}: cannot write ({e.strerror or e})") from None
    return ckpt


def read_export(path):
    """A Checkpoint (model and vocabulary, no training state) from a safetensors export; ExportError if the
    file is not safetensors, lacks charrnn's metadata, or its tensors do not match that metadata."""
    try:
        tensors, metadata = read_safetensors(path)
    except SafetensorsError as e:
        raise ExportError(str(e)) from None
    vocab, model_fields = _read_metadata(path, metadata)
    config = _model_config(path, model_fields, tensors)
    table = torch_table(config)
    expected = _torch_shapes(config)
    missing = [name for name, _, _ in table if name not in tensors]
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        which = f"missing {', '.join(missing)}" if missing else f"unexpected {', '.join(extra)}"
        raise ExportError(f"{path}: tensors do not match the metadata's {config.model} model ({which})")
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise ExportError(
                f"{path}: tensor {name} is {list(tensors[name].shape)}, but the metadata's model needs {list(shape)}"
            )
    floats = {name: _as_float(path, name, value, config.dtype) for name, value in tensors.items()}
    try:
        model = build_model(config, params=from_torch_names(floats, config))
    except ValueError as e:
        raise ExportError(f"{path}: {e}") from None
    return Checkpoint(model, vocab, {"imported_from": str(path)})


def import_safetensors(in_path, out_path):
    """Write a charrnn checkpoint (``.npz``) from a safetensors export; return the Checkpoint."""
    ckpt = read_export(in_path)
    try:
        save_checkpoint(out_path, ckpt)
    except OSError as e:
        raise CheckpointError(f"{out_path}: cannot write ({e.strerror or e})") from None
    return ckpt


def _read_metadata(path, metadata):
    values = {}
    for key in (MODEL_KEY, VOCAB_KEY):
        if key not in metadata:
            raise ExportError(f"{path}: no {key} in the safetensors metadata (see docs/scaling.md, Export to PyTorch)")
        try:
            values[key] = json.loads(metadata[key])
        except ValueError:
            raise ExportError(f"{path}: {key} in the metadata is not valid JSON") from None
        if not isinstance(values[key], dict):
            raise ExportError(f"{path}: {key} in the metadata must be a JSON object")
    if "symbols" not in values[VOCAB_KEY]:
        raise ExportError(f'{path}: {VOCAB_KEY} in the metadata has no "symbols" (the characters, in id order)')
    try:
        vocab = Vocab.from_json(values[VOCAB_KEY])
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{path}: {VOCAB_KEY} is not a vocabulary ({type(e).__name__}: {e})") from None
    return vocab, values[MODEL_KEY]


def _model_config(path, model_fields, tensors):
    known = {f.name for f in fields(GPTConfig if model_fields.get("model") == "gpt" else ModelConfig)}
    unknown = sorted(set(model_fields) - known)
    if unknown:
        raise ExportError(f"{path}: {MODEL_KEY} has unknown fields: {', '.join(unknown)}")
    if "dtype" not in model_fields:  # a model trained in PyTorch: float64 if its weights are, else float32
        f64 = any(len(t.shape) and t.dtype == np.float64 for t in tensors.values())
        model_fields = dict(model_fields, dtype="float64" if f64 else "float32")
    try:
        config = model_config(model_fields)
        config.validate()
    except (TypeError, ValueError) as e:
        raise ExportError(f"{path}: {MODEL_KEY} is not a model config ({e})") from None
    _check_exportable(config)
    return config


def _torch_shapes(config):
    """The shape of every PyTorch tensor, from charrnn's shapes through the table."""
    shapes = param_shapes(config)
    G = len(TORCH_GATES.get(config.model, ())) * config.hidden_size
    out = {}
    for torch_name, name, rule in torch_table(config):
        if rule == "recurrent bias":
            out[torch_name] = (G,)
        elif rule in ("weight", "transpose"):
            out[torch_name] = shapes[name][::-1]
        else:
            out[torch_name] = shapes[name]
    return out


def _as_float(path, name, value, dtype):
    """The tensor in the model's dtype, where that is exact (a half-precision tensor into float32, say)."""
    kind = {np.dtype("<f2"): "F16", np.dtype("<f4"): "F32", np.dtype("<f8"): "F64"}.get(value.dtype)
    if kind not in EXACT_FLOATS[dtype]:
        raise ExportError(f"{path}: tensor {name} is {kind or value.dtype}, which does not fit a {dtype} model")
    return value.astype(dtype)
