"""Fine-tuning: --init-from carries a trained model to a new corpus, its vocabulary extended."""

import numpy as np
import pytest

from charrnn.data import Vocab
from charrnn.finetune import check_same_shape, extend_vocab
from charrnn.model import CharRNN, ModelConfig

OLD = Vocab(tuple("\n !,.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
NEW = OLD.extended(Vocab(tuple(sorted("[]{}0123456789é"))))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_known_characters_keep_their_weights_and_new_ones_are_fresh(cell):
    config = ModelConfig(len(OLD), cell, 24, 2)
    trained = CharRNN(config, rng=np.random.default_rng(0))
    for value in trained.params.values():  # "trained": weights no fresh model would have
        value += np.random.default_rng(1).normal(0, 0.3, value.shape).astype(value.dtype)
    counts = np.arange(len(NEW), dtype=np.int64)
    model = extend_vocab(trained, OLD, NEW, np.random.default_rng(7), counts)
    fresh = CharRNN(ModelConfig(len(NEW), cell, 24, 2), rng=np.random.default_rng(7))  # what a new model draws
    new_pos = [NEW.symbols.index(s) for s in OLD.symbols]
    unseen = [j for j, s in enumerate(NEW.symbols) if s not in OLD.symbols]
    assert len(unseen) == 15 and model.config.vocab_size == len(NEW)
    for name, value in trained.params.items():
        if name == "l0.W_xh":
            np.testing.assert_array_equal(model.params[name][new_pos], value)  # each known symbol's own row
            np.testing.assert_array_equal(model.params[name][unseen], fresh.params[name][unseen])
        elif name == "W_hy":
            np.testing.assert_array_equal(model.params[name][:, new_pos], value)
            np.testing.assert_array_equal(model.params[name][:, unseen], fresh.params[name][:, unseen])
        elif name == "b_y":
            np.testing.assert_array_equal(model.params[name][new_pos], value)
            log_freq = np.log((counts + 1.0) / (counts + 1.0).sum())
            offset = np.mean(value - log_freq[new_pos])
            np.testing.assert_allclose(model.params[name][unseen], log_freq[unseen] + offset, rtol=1e-6)
        else:
            np.testing.assert_array_equal(model.params[name], value)
    # so on text of known characters the known symbols' logits are the trained model's (to float32 rounding:
    # the output product has more columns)
    ids = np.random.default_rng(2).integers(0, len(OLD), (30, 3))
    old_logits, _ = trained.forward(ids)
    new_logits, _ = model.forward(np.array(new_pos)[ids])
    np.testing.assert_allclose(new_logits[..., new_pos], old_logits, rtol=1e-5, atol=1e-5)


def test_the_shape_cannot_change_but_dropout_can():
    trained = CharRNN(ModelConfig(len(OLD), "gru", 16, 1, dropout=0.2), rng=np.random.default_rng(0))
    counts = np.ones(len(NEW), np.int64)
    model = extend_vocab(trained, OLD, NEW, np.random.default_rng(0), counts,
                         config=ModelConfig(0, "gru", 16, 1, dropout=0.5, weight_drop=0.1))
    assert (model.config.dropout, model.config.weight_drop) == (0.5, 0.1)
    for name, value in {"model": "lstm", "hidden_size": 32, "num_layers": 2, "dtype": "float64"}.items():
        wanted = ModelConfig(0, **{"model": "gru", "hidden_size": 16, "num_layers": 1, name: value})
        with pytest.raises(ValueError, match=f"cannot fine-tune with {name.replace('_', '-')} {value}: the checkpoint"):
            check_same_shape(trained.config, wanted)
