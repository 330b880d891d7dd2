"""Fine-tuning: --init-from carries a trained model to a new corpus, its vocabulary extended."""

import numpy as np
import pytest

from charrnn.io.checkpoint import load_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.models.gpt import CharGPT, GPTConfig
from charrnn.models.rnn import CharRNN, ModelConfig
from charrnn.training.finetune import check_same_shape, extend_vocab

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


def test_a_gpt_keeps_its_known_rows_and_its_logits_on_known_text():
    """gpt: the token embedding's rows (wte), not l0.W_xh, carry the known symbols; positions are kept."""
    config = GPTConfig(len(OLD), hidden_size=16, num_layers=2, num_heads=2, context_length=8, dtype="float64")
    trained = CharGPT(config, rng=np.random.default_rng(0))
    for value in trained.params.values():
        value += np.random.default_rng(1).normal(0, 0.3, value.shape)
    model = extend_vocab(trained, OLD, NEW, np.random.default_rng(7), np.ones(len(NEW), np.int64))
    new_pos = [NEW.symbols.index(s) for s in OLD.symbols]
    np.testing.assert_array_equal(model.params["wte"][new_pos], trained.params["wte"])
    np.testing.assert_array_equal(model.params["wpe"], trained.params["wpe"])
    ids = np.random.default_rng(2).integers(0, len(OLD), (8, 3))
    np.testing.assert_allclose(model.forward(np.array(new_pos)[ids])[0][..., new_pos], trained.forward(ids)[0],
                               rtol=1e-12, atol=1e-12)
    wanted = GPTConfig(0, hidden_size=16, num_layers=2, num_heads=2, context_length=16, dtype="float64")
    with pytest.raises(ValueError, match="cannot fine-tune with seq-length 16: the checkpoint's model has 8"):
        check_same_shape(trained.config, wanted)


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


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, shakespeare, cli, small_rnn):
    """A base text without brackets or digits with a model trained on it, and a new text (the next scenes)
    with them, both real."""
    tmp_path = tmp_path_factory.mktemp("corpora")
    with open(shakespeare, encoding="utf-8") as f:
        text = f.read(60_000)
    base_text = "".join(c for c in text[:30_000] if c not in "[]0123456789")
    base, new = tmp_path / "base.txt", tmp_path / "new.txt"
    base.write_text(base_text, encoding="utf-8")
    new.write_text(text[30_000:], encoding="utf-8")
    unseen = sorted(set(text[30_000:]) - set(base_text))
    assert "[" in unseen and "]" in unseen
    ck = tmp_path / "base"
    result = cli(["train", base, "--checkpoint-dir", ck, "--max-steps", "150", "--learning-rate", "1e-2", *small_rnn,
                  "--eval-every", "20"])
    assert result.exit_code == 0, result.output
    return base, new, ck, unseen


def test_init_from_starts_from_the_trained_weights_with_a_fresh_run(tmp_path, corpora, cli):
    base, new, ck, unseen = corpora
    trained = load_checkpoint(str(ck / "latest.npz"))
    tuned_dir = tmp_path / "tuned"
    # a vanishing learning rate: one step leaves every weight as it was, so the start itself is visible
    result = cli(["train", new, "--init-from", ck / "latest.npz", "--checkpoint-dir", tuned_dir, "--max-steps", "1",
                    "--learning-rate", "1e-30", "--sample-length", "0", "--random-seed", "3"])
    assert result.exit_code == 0, result.output
    assert f"{len(unseen)} characters new to the model" in result.stderr
    tuned = load_checkpoint(str(tuned_dir / "latest.npz"))
    vocab = tuned.vocab
    assert vocab.symbols == tuple(sorted(set(trained.vocab.symbols) | set(unseen)))
    assert tuned.meta["step"] == 1 and tuned.meta["epoch"] == 0  # a fresh step count
    assert tuned.meta["init_from"] == str(ck / "latest.npz")
    assert float(tuned.optimizer_state["steps"]) == 1  # a fresh optimizer: one update, not 41
    assert tuned.model.config.hidden_size == 32 and tuned.model.config.num_layers == 2  # the checkpoint's shape
    info = cli(["info", tuned_dir])
    assert info.exit_code == 0 and "fine-tuned from" in info.stdout and "time trained" in info.stdout
    known = [vocab.symbols.index(s) for s in trained.vocab.symbols]
    new_rows = [vocab.symbols.index(s) for s in unseen]
    for name, value in trained.model.params.items():
        got = tuned.model.params[name]
        if name == "l0.W_xh":
            np.testing.assert_array_equal(got[known], value)  # known characters keep their rows exactly
            assert np.abs(got[new_rows]).mean() > 0.5  # new ones: a new model's input rows (std 2)
        elif name == "W_hy":
            np.testing.assert_array_equal(got[:, known], value)
            assert np.all(got[:, new_rows].std(axis=0) > 0)
        elif name == "b_y":
            np.testing.assert_array_equal(got[known], value)
            assert np.all(np.isfinite(got[new_rows])) and np.all(got[new_rows] < np.median(value))  # rare ones
        else:
            np.testing.assert_array_equal(got, value)


def test_a_fine_tuned_run_learns_faster_and_resumes(tmp_path, corpora, cli, small_rnn):
    base, new, ck, unseen = corpora
    runs = {}
    for name, extra in (("tuned", ["--init-from", ck]), ("scratch", [])):
        out = tmp_path / name
        result = cli(["train", new, "--checkpoint-dir", out, "--max-steps", "20", *small_rnn, "--eval-every", "20",
                      *extra])
        assert result.exit_code == 0, result.output
        runs[name] = load_checkpoint(str(out / "latest.npz")).meta["last_val_loss"]
    assert runs["tuned"] < runs["scratch"] - 0.2  # what the base learned of English carries over
    resumed = cli(["train", new, "--checkpoint-dir", tmp_path / "tuned", "--max-steps", "30", "--resume"])
    assert resumed.exit_code == 0, resumed.output  # the extended vocabulary resumes on the new text
    assert load_checkpoint(str(tmp_path / "tuned" / "latest.npz")).meta["step"] == 30


@pytest.mark.parametrize("args,message", [
    (["--resume"], "give one of them"),
    (["--hidden-size", "64"], "cannot fine-tune with hidden-size 64: the checkpoint's model has 32"),
    (["--model", "lstm"], "cannot fine-tune with model lstm: the checkpoint's model has gru"),
    (["--bytes"], "that model reads characters; fine-tune it with the same --bytes setting"),
])
def test_init_from_errors(tmp_path, corpora, args, message, cli):
    base, new, ck, _ = corpora
    result = cli(["train", new, "--init-from", ck, "--checkpoint-dir", tmp_path / "out", "--max-steps", "2", *args])
    assert result.exit_code in (1, 2), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "Usage:" not in result.stderr and "Try " not in result.stderr, result.stderr  # one line, not click's three
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "out" / "latest.npz").exists()


def test_init_from_fine_tunes_a_gpt_with_its_context(tmp_path, corpora, cli):
    """A gpt checkpoint fine-tunes with the gpt recipe and its own shape and context length; new characters
    get fresh embedding rows."""
    base, new, _, unseen = corpora
    ck = tmp_path / "gpt"
    shape = ["--hidden-size", "16", "--num-layers", "1", "--num-heads", "2", "--seq-length", "24"]
    result = cli(["train", base, "--model", "gpt", *shape, "--checkpoint-dir", ck, "--max-steps", "30",
                    "--batch-size", "8", "--sample-length", "0", "--eval-every", "30"])
    assert result.exit_code == 0, result.output
    trained = load_checkpoint(str(ck / "latest.npz"))
    result = cli(["train", new, "--init-from", ck, "--checkpoint-dir", tmp_path / "tuned", "--max-steps", "1",
                    "--learning-rate", "1e-30", "--batch-size", "8", "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    tuned = load_checkpoint(str(tmp_path / "tuned" / "latest.npz"))
    assert (tuned.model.config.model, tuned.model.config.context_length, tuned.meta["train"]["seq_length"]) == (
        "gpt", 24, 24)
    known = [tuned.vocab.symbols.index(s) for s in trained.vocab.symbols]
    np.testing.assert_array_equal(tuned.model.params["wte"][known], trained.model.params["wte"])
    assert len(tuned.vocab) == len(trained.vocab) + len(unseen)
    refused = cli(["train", new, "--init-from", ck, "--checkpoint-dir", tmp_path / "out", "--seq-length", "32"])
    assert refused.exit_code == 1 and "cannot fine-tune with seq-length 32" in refused.stderr
