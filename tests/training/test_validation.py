"""Validation files (training/validation.py) through the Python API: scored beside a tail held out as well, and a
resumed run's validation file with characters outside its vocabulary (left out, as charrnn eval leaves them)."""

import pytest

from charrnn import ModelConfig, TrainConfig, load_checkpoint, train
from charrnn.inference.evaluate import evaluate_file
from charrnn.models.scoring import streams_nll
from charrnn.training.lifecycle import Reporter

MODEL = ModelConfig(0, model="lstm", hidden_size=16, num_layers=1)


class Messages(Reporter):
    def __init__(self):
        self.messages = []

    def message(self, text):
        self.messages.append(text)


def config(tmp_path, valid, **options):
    options = {"max_steps": 6, **options}
    return TrainConfig(val_files=(valid,), batch_size=4, seq_length=16, eval_every=3, sample_length=0, random_seed=0,
                       checkpoint_dir=str(tmp_path / "ck"), **options)


def test_val_file_and_tail_together_are_one_mean(tmp_path, small_text):
    """With a validation fraction as well, the loss is the tail's nats (streams, as training reads them) and the
    file's (as eval reads it) over their characters together."""
    valid = tmp_path / "valid.txt"
    text = open(small_text, encoding="utf-8").read()
    valid.write_text(text[:3000], encoding="utf-8")
    result = train(small_text, MODEL, config(tmp_path, str(valid), val_frac=0.1))
    ckpt = load_checkpoint(str(tmp_path / "ck" / "latest.npz"))
    tail = ckpt.vocab.encode(text[len(text) - int(len(text) * 0.1) :])
    tail_nll, tail_chars = streams_nll(ckpt.model, tail, 4, 16)
    file = evaluate_file(ckpt.model, ckpt.vocab, str(valid))
    assert result.last_val_loss == pytest.approx((tail_nll + file.total_nll) / (tail_chars + file.chars), rel=1e-6)
    assert abs(result.last_val_loss - file.loss) > 1e-4  # not the file's alone


def test_resumed_run_leaves_out_new_validation_characters_as_eval_does(tmp_path, small_text):
    valid = tmp_path / "valid.txt"
    valid.write_text("To be, or not to be\n", encoding="utf-8")
    train(small_text, MODEL, config(tmp_path, str(valid), val_frac=0.0))
    valid.write_text("To be, or not to be: ΩΩ\n", encoding="utf-8")
    messages = Messages()
    result = train(small_text, None, config(tmp_path, str(valid), val_frac=0.0, max_steps=9),
                   resume=str(tmp_path / "ck" / "latest.npz"), reporter=messages)
    assert any("1 character outside the model's vocabulary" in m and "Ω" in m for m in messages.messages)
    ckpt = load_checkpoint(str(tmp_path / "ck" / "latest.npz"))
    file = evaluate_file(ckpt.model, ckpt.vocab, str(valid))
    assert file.oov == {"Ω": 2} and result.last_val_loss == file.loss
