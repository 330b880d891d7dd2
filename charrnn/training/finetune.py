"""Fine-tuning: a trained model carried over to a new corpus, its vocabulary extended.

    model = extend_vocab(ckpt.model, ckpt.vocab, corpus.vocab, rng, unigram_counts)

Only three parameters depend on the vocabulary (``VOCAB_PARAMS``): the input rows (V, ·) — a
recurrent model's layer-0 ``l0.W_xh``, gpt's token embedding ``wte`` —, the output columns ``W_hy``
(·, V) and the output bias ``b_y`` (V,). A symbol the model knows keeps its row, column and bias
exactly; a symbol it never saw gets them freshly initialised, as a new model's (``build_model``), its
bias at the log of its frequency in the new training text, shifted by the offset the known symbols'
trained biases have from their own log frequencies. Every other weight is the trained model's (gpt's
position embeddings included: the context length is part of the shape).
"""

from dataclasses import fields, replace

import numpy as np

from ..models.registry import build_model

# the fields that fix the parameters' shapes, by model kind (a field either config lacks is skipped)
SHAPE_FIELDS = ("model", "hidden_size", "num_layers", "activation", "num_heads", "context_length", "dtype")
VOCAB_PARAMS = {"input rows": ("l0.W_xh", "wte"), "output columns": ("W_hy",), "output bias": ("b_y",)}


def check_same_shape(saved, wanted):
    """Raise ValueError naming the first shape field in which config ``wanted`` differs from ``saved``."""
    names = {f.name for f in fields(saved)} & {f.name for f in fields(wanted)}
    for name in SHAPE_FIELDS:
        if name in names and getattr(wanted, name) != getattr(saved, name):
            option = {"context_length": "seq_length"}.get(name, name)  # gpt's context is --seq-length
            raise ValueError(
                f"cannot fine-tune with {option.replace('_', '-')} {getattr(wanted, name)}: the checkpoint's model has "
                f"{getattr(saved, name)} (--init-from keeps the model's shape)"
            )


def extend_vocab(model, vocab, new_vocab, rng, counts, config=None):
    """A model over ``new_vocab`` (a superset of ``vocab``) with ``model``'s weights, as the module says.

    ``counts`` (V_new,): each new-vocabulary symbol's occurrences in the new training text. ``config``:
    the model config to build (dropout and weight drop may differ; the shape may not), else ``model``'s.
    """
    config = replace(config or model.config, vocab_size=len(new_vocab))
    check_same_shape(model.config, config)
    fresh = build_model(config, rng=rng)
    old_index = {symbol: i for i, symbol in enumerate(vocab.symbols)}
    known = np.array([j for j, s in enumerate(new_vocab.symbols) if s in old_index], np.intp)  # rows in the new
    old = np.array([old_index[new_vocab.symbols[j]] for j in known], np.intp)  # the same symbols' rows in the old
    unseen = np.setdiff1d(np.arange(len(new_vocab)), known)
    for name, value in model.params.items():
        target = fresh.params[name]
        if name in VOCAB_PARAMS["input rows"]:
            target[known] = value[old]
        elif name in VOCAB_PARAMS["output columns"]:
            target[:, known] = value[:, old]
        elif name in VOCAB_PARAMS["output bias"]:
            log_freq = np.log((counts + 1.0) / (counts + 1.0).sum())  # add-one smoothed, as a new model's
            offset = float(np.mean(value[old] - log_freq[known])) if len(known) else 0.0
            target[unseen] = log_freq[unseen] + offset
            target[known] = value[old]
        else:
            target[...] = value
    return fresh
