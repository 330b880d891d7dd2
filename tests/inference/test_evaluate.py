"""Scoring (inference/evaluate.py, models/scoring.py): many lines scored at once give the figures of one by one, windows
and groups, bytes models' lines decoded whole, a gpt's per-line scores adding up to the file's."""


import numpy as np
import pytest

from charrnn import load_checkpoint
from charrnn.inference.evaluate import _Scorer, evaluate_file, evaluate_text, iter_lines, score_line_batch, score_lines
from charrnn.io.corpus import Vocab
from charrnn.models.rnn import CharRNN, ModelConfig
from charrnn.models.scoring import chunk_nlls

VOCAB = Vocab(tuple("\n !,.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def make_model(model="lstm", dtype="float64", hidden=24):  # float64: batch sizes round alike
    config = ModelConfig(len(VOCAB), model, hidden, 2, dtype=dtype)
    return CharRNN(config, rng=np.random.default_rng(0))


def one_by_one(net, vocab, path):
    """The reference: each line scored alone, at batch 1, from a fresh state (as eval did before batching)."""
    scorer = _Scorer(net, vocab)
    results = []
    for codes in iter_lines(path, vocab):
        scorer.reset()
        nlls, oov = scorer.score(codes)
        results.append((float(nlls.sum()), len(nlls), dict(oov)))
    return results


LINES = ["To be, or not to be: that is the question.", "", "Whether 'tis nobler #in the mind~ to suffer",
         "###", "A", "The slings and arrows of outrageous fortune, " * 6, "", "Or to take arms", "ends here"]


@pytest.mark.parametrize("model,dtype,rtol", [("lstm", "float64", 1e-10), ("gru", "float64", 1e-10),
                                              ("lstm", "float32", 2e-5)])
def test_reset_per_line_batched_gives_the_one_by_one_figures(tmp_path, model, dtype, rtol):
    """Lines of every length, empty lines, OOV characters, a line of OOV alone, no final newline."""
    net = make_model(model, dtype)
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(LINES * 7), encoding="utf-8")  # the last line has no newline
    expected = one_by_one(net, VOCAB, str(path))
    for batch_size in (1, 4, 256):
        got = list(score_lines(net, VOCAB, str(path), reset_per_line=True, batch_size=batch_size))
        assert [line.number for line in got] == list(range(1, len(expected) + 1))
        for line, (nll, chars, oov) in zip(got, expected):
            assert (line.result.chars, line.result.oov) == (chars, oov)
            assert line.result.total_nll == pytest.approx(nll, rel=rtol, abs=1e-12)
    assert [line.text for line in got][:5] == [line + "\n" for line in LINES[:5]]  # as written, OOV included
    assert got[3].result.oov == {"#": 3} and got[-1].result.chars == len("ends here")


@pytest.mark.parametrize("threads", [1, 3])
def test_line_batch_in_windows_and_groups_and_without_a_newline_symbol(threads):
    """Windows shorter than the lines (state carried), groups of 3 (one after another, or three at once on
    threads, each with its own copy of the model), and a vocabulary with no newline: each sequence's first
    character is then context only."""
    vocab = Vocab(tuple("abcdefgh"))
    net = CharRNN(ModelConfig(len(vocab), "lstm", 12, 2, dtype="float64"), rng=np.random.default_rng(4))
    rng = np.random.default_rng(5)
    sequences = [rng.integers(0, 8, n) for n in (0, 1, 2, 17, 5, 30, 9, 2, 64, 40, 3, 22, 7)]
    totals, counts = score_line_batch(net, sequences, batch_size=3, max_tokens=12, threads=threads)
    for seq, total, count in zip(sequences, totals, counts):
        assert count == max(len(seq) - 1, 0)
        if count:
            nlls, _ = chunk_nlls(net, seq[:-1, None], seq[1:, None], None)
            assert total == pytest.approx(nlls.sum(), rel=1e-10)
        else:
            assert total == 0


def test_per_line_text_of_a_bytes_model_is_decoded_whole(tmp_path):
    """A bytes model's line is decoded as a whole (a UTF-8 character spans several ids)."""
    from charrnn.inference.evaluate import score_lines

    vocab = Vocab(tuple(range(256)), bytes_mode=True)
    model = CharRNN(ModelConfig(256, "gru", 8, 1), rng=np.random.default_rng(0))
    path = tmp_path / "utf8.txt"
    path.write_text("naïve café ✓\n", encoding="utf-8")
    for reset in (False, True):
        (line,) = score_lines(model, vocab, str(path), reset_per_line=reset)
        assert line.text == "naïve café ✓\n" and line.result.chars == len("naïve café ✓\n".encode())


def test_per_line_scores_add_up_to_the_file(tmp_path, small_text, cli, tiny_gpt):
    """Windows are placed by position in the text, so scoring line by line gives the whole file's numbers."""
    ck = str(tmp_path / "ck")
    assert cli(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "5", *tiny_gpt]).exit_code == 0
    ckpt = load_checkpoint(ck)
    short = tmp_path / "short.txt"
    short.write_text(open(small_text).read()[:3000])
    whole = evaluate_file(ckpt.model, ckpt.vocab, str(short))
    lines = list(score_lines(ckpt.model, ckpt.vocab, str(short)))
    assert sum(line.result.chars for line in lines) == whole.chars == 3000
    assert sum(line.result.total_nll for line in lines) == pytest.approx(whole.total_nll, rel=1e-6)  # float32
    reset = list(score_lines(ckpt.model, ckpt.vocab, str(short), reset_per_line=True))
    assert sum(line.result.total_nll for line in reset) != pytest.approx(whole.total_nll, rel=1e-6)


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_one_stream_scores_as_a_batch_of_streams(model):
    """One stream (eval, batch 1: its recurrent products one (H, G) product, not one a gate: other sums) scores a
    text as that text read by every stream of a batch of 8 (the training side's products), to 1e-9 in float64;
    with a vocabulary of 400, its first chunk reads the whole input table and its last gathers rows."""
    vocab = Vocab(("\n", *(chr(0x4E00 + i) for i in range(399))))
    net = CharRNN(ModelConfig(len(vocab), model, 24, 2, dtype="float64"), rng=np.random.default_rng(1))
    text = "".join(np.random.default_rng(2).choice(list(vocab.symbols), 700))
    result = evaluate_text(net, vocab, text)
    ids = np.concatenate([[vocab.newline_id()], vocab.encode(text)])
    batch = np.repeat(ids[:, None], 8, axis=1)  # (701, 8)
    nlls, _ = chunk_nlls(net, batch[:-1], batch[1:], None)
    assert result.chars == 700
    assert result.total_nll == pytest.approx(float(nlls[:, 3].sum()), rel=1e-9)
