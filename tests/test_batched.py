"""Many samples side by side and many lines scored at once: the same text and figures as one by one."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import main
from charrnn.evaluate import _Scorer, chunk_nlls, iter_lines, score_line_batch, score_lines
from charrnn.io.checkpoint import Checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.rnn import CharRNN, ModelConfig
from charrnn.sample import Stepper, filter_logits, generate, generate_batch, sample_rngs, stream_samples

VOCAB = Vocab(tuple("\n !,.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def make_model(model="lstm", dtype="float64", hidden=24):  # float64: batch sizes round alike
    config = ModelConfig(len(VOCAB), model, hidden, 2, dtype=dtype)
    return CharRNN(config, rng=np.random.default_rng(0))


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_batched_stepper_matches_forward_stream_by_stream(model):
    """B streams stepped together give, stream by stream, the batched forward's logits."""
    net = make_model(model)
    ids = np.random.default_rng(1).integers(0, len(VOCAB), (10, 3))  # (T, B)
    start = tuple(np.random.default_rng(2).normal(size=s.shape) for s in net.initial_state(3))
    logits, _ = net.forward(ids, start)
    stepper = Stepper(net, start)
    for t in range(len(ids)):
        np.testing.assert_allclose(stepper.step(ids[t]), logits[t], rtol=1e-10, atol=1e-12)


def test_filter_logits_row_by_row_is_the_single_row_filter():
    rows = np.random.default_rng(3).normal(size=(5, 12)) * 3
    for kwargs in ({"top_k": 3}, {"top_p": 0.6}, {"top_k": 5, "top_p": 0.9}):
        batched = filter_logits(rows, 0.7, **kwargs)
        for row, out in zip(rows, batched):
            np.testing.assert_array_equal(filter_logits(row, 0.7, **kwargs), out)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(filter_logits(logits, 1.0, top_p=0.5)).sum() == 1  # the likeliest alone holds 0.5


@pytest.mark.parametrize("options", [
    {"temperature": 1.0}, {"temperature": 0.7}, {"temperature": 1.2, "top_k": 5}, {"temperature": 0.9, "top_p": 0.8},
])
def test_sample_i_is_the_same_whatever_the_number_of_samples(options):
    """Sample i of a batch is what generate() gives with sample i's generator, for N = 1, 3 and 6."""
    net = make_model()
    alone = ["".join(generate(net, VOCAB, "The ", 300, random_seed=rng, **options)) for rng in sample_rngs(7, 6)]
    assert len(set(alone)) == 6 and all(len(text) == 304 for text in alone)
    for n in (1, 3, 6):
        texts = ["".join(pieces) for pieces in zip(*generate_batch(net, VOCAB, n, "The ", 300, random_seed=7,
                                                                   **options))]
        assert texts == alone[:n]


def test_greedy_batch_repeats_one_text():
    net = make_model()
    texts = ["".join(p) for p in zip(*generate_batch(net, VOCAB, 4, "", 50, temperature=0))]
    assert len(set(texts)) == 1 and texts[0] == "".join(generate(net, VOCAB, "", 50, temperature=0))


def test_stream_samples_in_order_whatever_the_batch_size():
    net = make_model("gru")
    runs = []
    for batch_size in (1, 2, 5, 256):
        pieces = list(stream_samples(net, VOCAB, 5, "A", 40, random_seed=11, batch_size=batch_size))
        indices = [i for i, _ in pieces]
        assert indices == sorted(indices)  # each sample complete before the next
        runs.append(["".join(p for i, p in pieces if i == k) for k in range(5)])
    assert all(run == runs[0] for run in runs)
    assert runs[0] == ["".join(generate(net, VOCAB, "A", 40, random_seed=rng)) for rng in sample_rngs(11, 5)]


def test_cli_num_samples_is_the_samples_one_by_one(tmp_path):
    net = make_model()
    path = str(tmp_path / "model.npz")
    save_checkpoint(path, Checkpoint(net, VOCAB, {"step": 1}))

    def sample(*args):
        result = CliRunner().invoke(main, ["sample", path, "--seed", "A", "--length", "60", "--random-seed", "3",
                                           *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    three = sample("--num-samples", "3")
    texts = ["".join(generate(net, VOCAB, "A", 60, random_seed=rng)) for rng in sample_rngs(3, 3)]
    assert three == "\n\n".join(texts) + "\n"
    assert sample() == texts[0] + "\n"  # sample 1 does not depend on --num-samples


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


def test_eval_states_its_throughput(tmp_path):
    path = str(tmp_path / "model.npz")
    save_checkpoint(path, Checkpoint(make_model(dtype="float32"), VOCAB, {"step": 1}))
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be.\nThat is the question.\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["eval", path, str(text), "--json"], catch_exceptions=False)
    figures = json.loads(result.stdout)
    assert figures["chars"] == 43 and figures["seconds"] > 0
    assert figures["chars_per_sec"] == pytest.approx(43 / figures["seconds"])
    result = CliRunner().invoke(main, ["eval", path, str(text), "--per-line", "--reset-per-line"])
    assert result.exit_code == 0 and "chars/s)" in result.stdout
