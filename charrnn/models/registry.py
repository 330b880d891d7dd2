"""The models charrnn trains, behind one surface: the recurrent CharRNN (rnn.py) and the Transformer
CharGPT (gpt.py). Training, the engines, scoring, sampling and checkpoints call only what
``LanguageModel`` names, and build a model from its config with ``build_model``.

    config = model_config({"model": "gpt", "vocab_size": 65, "num_heads": 4, ...})   # a checkpoint's dict
    model = build_model(config, rng=numpy.random.default_rng(0))
"""

import math
from typing import Protocol

import numpy as np

from ..nn.cells import make_cell
from . import gpt, rnn
from .gpt import CharGPT, GPTConfig
from .rnn import RNN_KINDS, CharRNN, ModelConfig

MODEL_KINDS = (*RNN_KINDS, "gpt")


class LanguageModel(Protocol):
    """What every model offers. ids are (T, B) arrays; V is the vocabulary size."""

    config: object  # ModelConfig or GPTConfig: a dataclass, saved in checkpoints
    params: dict  # a Packed dict of named arrays (nn/packed.py)
    shapes: dict  # parameter name -> shape
    context_length: int | None  # the most characters a prediction can see; None: unbounded (recurrent state)
    min_streams_per_worker: int  # the fewest streams worth a worker process of their own (engines/pool.py)
    input_table: str  # the parameter the input ids read by row (a step's gradient has only their rows)

    def num_params(self) -> int: ...

    def initial_state(self, batch_size: int) -> tuple:
        """The state carried between chunks, as zeros: a tuple of arrays with the batch on axis 1; ``()``: none."""

    def forward(self, ids, state=None) -> tuple:
        """(logits (T, B, V), state after the chunk)."""

    def loss_and_grads(self, inputs, targets, state=None, dropout_rng=None, out=None, weight_drop_rng=None,
                       dropout=None) -> tuple:
        """(mean loss, Packed gradients, state after the chunk)."""

    def start_sampling(self, prime, batch_size=1) -> tuple:
        """(a sampler for ``batch_size`` streams whose ``step(ids (B,))`` returns the next logits (B, V), the
        logits (V,) after ``prime`` (n,) ids)."""


def model_config(fields):
    """The config dataclass for a dict of its fields (as a checkpoint stores it); raises TypeError/ValueError."""
    if fields.get("model") == "gpt":
        return GPTConfig(**fields)
    return ModelConfig(**fields)


def model_class(config):
    """CharGPT or CharRNN: the class of the model ``config`` describes."""
    return CharGPT if isinstance(config, GPTConfig) else CharRNN


def build_model(config, params=None, rng=None):
    """A CharGPT or CharRNN for ``config``, from ``params`` or freshly drawn from ``rng``."""
    return model_class(config)(config, params=params, rng=rng)


def param_shapes(config):
    """The shape of every parameter, by name, of the model ``config`` describes."""
    return (gpt if isinstance(config, GPTConfig) else rnn).param_shapes(config)


def training_memory(config, batch_size, seq_length, copies=4):
    """(bytes for ``copies`` of the parameters, bytes for one step's activations) that training ``config``
    at ``batch_size`` × ``seq_length`` needs at the least, from the shapes alone: a run that cannot fit is
    refused before anything is allocated. Four copies: the model, its gradient and Adam's two moments."""
    itemsize = np.dtype(config.dtype).itemsize
    n = sum(math.prod(shape) for shape in param_shapes(config).values())
    B, T, L, H, V = batch_size, seq_length, config.num_layers, config.hidden_size, config.vocab_size
    if isinstance(config, GPTConfig):  # per block: a dozen (B, T, C) arrays and the attention weights (B, nh, T, T)
        activations = L * (12 * B * T * H + 2 * B * config.num_heads * T * T)
    else:  # per layer: the gates and the states of every timestep
        activations = L * T * B * H * (make_cell(config.model).n_gates + 2)
    return copies * n * itemsize, (activations + 2 * B * T * V) * itemsize
