"""Items (inference/items.py, beam.py, decoding.py, penalty.py): stop texts cut the sampled text where it first
holds one; log-probabilities are a forward pass's; the repetition penalty is a naive loop's; beam search is
exhaustive search where the beam holds every hypothesis, and greedy at width 1; steppers reorder by parent;
unique and excluded samples are redrawn in batches, within a bound."""

import itertools

import numpy as np
import pytest

from charrnn.inference import items as items_module
from charrnn.inference.items import DrawLimitError, draw_samples
from charrnn.inference.sample import SamplingOptions, generate, generate_batch, sample_rngs, start_draw
from charrnn.io.corpus import Vocab
from charrnn.models.gpt import CharGPT, GPTConfig
from charrnn.models.rnn import CharRNN, ModelConfig
from charrnn.nn.numerics import log_softmax

VOCAB = Vocab(tuple("\n abcdefgh"))


def make_model(kind="lstm", vocab=VOCAB, hidden=16, context=8):
    if kind == "gpt":
        config = GPTConfig(vocab_size=len(vocab), hidden_size=hidden, num_layers=2, num_heads=2,
                           context_length=context, dtype="float64")
        return CharGPT(config, rng=np.random.default_rng(0))
    return CharRNN(ModelConfig(len(vocab), kind, hidden, 2, dtype="float64"), rng=np.random.default_rng(0))


def forward_logprob(model, vocab, seed, generated):
    """ln P(generated | seed, or a newline) by one forward pass over the whole text: the oracle."""
    prime = list(vocab.encode(seed)) if seed else [vocab.newline_id()]
    ids = np.array(prime + list(vocab.encode(generated)))
    logits, _ = model.forward(ids[:, None])  # (T, 1, V)
    logp = log_softmax(logits[:, 0].astype(np.float64))
    return sum(logp[t, ids[t + 1]] for t in range(len(prime) - 1, len(ids) - 1))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "gpt"])
def test_reorder_continues_each_stream_from_its_parent(kind):
    """After reorder(rows), stream b goes on as a stream that read stream rows[b]'s history alone would
    (past gpt's window of 8, so its slide reads the reordered window)."""
    model = make_model(kind)
    history = np.random.default_rng(1).integers(0, len(VOCAB), (3, 11))  # (B, T)
    sampler, _ = model.start_sampling(np.array([0]), 3)
    for t in range(10):
        sampler.step(history[:, t])
    rows = np.array([2, 0, 2])
    sampler.reorder(rows)
    logits = [sampler.step(history[:, 10 + k]).copy() for k in range(1)] + [sampler.step(history[:, 0]).copy()]
    for b, row in enumerate(rows):
        alone, _ = model.start_sampling(np.array([0]), 1)
        for t in range(10):
            alone.step(history[row, t : t + 1])
        np.testing.assert_allclose(logits[0][b], alone.step(history[b, 10:11])[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(logits[1][b], alone.step(history[b, 0:1])[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gpt"])
@pytest.mark.parametrize("stops", [("\n",), ("e",), ("ab", "c\n"), ("fa", "a", "hhh")])
def test_a_stop_text_cuts_the_sample_where_it_first_generates_one(kind, stops):
    """The same random seed, with and without stop texts: the text up to the first stop is the same; the
    stop's characters are never yielded, not even for a while."""
    model = make_model(kind)
    for seed, random_seed in itertools.product(["", "ab"], range(4)):
        whole = "".join(generate(model, VOCAB, seed, length=60, random_seed=random_seed))
        generated = whole[len(seed):]
        ends = [generated.find(s) + len(s) for s in stops if s in generated]
        end = min(ends, default=None)
        cut = generated if end is None else min((generated[: end - len(s)] for s in stops
                                                 if generated[: end].endswith(s)), key=len)
        pieces = list(generate(model, VOCAB, seed, length=60, random_seed=random_seed, stop=stops))
        assert "".join(pieces) == seed + cut


@pytest.mark.parametrize("kind", ["gru", "gpt"])
def test_logprob_is_a_forward_pass_whatever_the_sampling(kind):
    model = make_model(kind, context=64)  # gpt: the text fits its window, as the forward pass reads it
    for settings in ({}, {"temperature": 0.6, "top_k": 3}, {"top_p": 0.5, "repetition_penalty": 1.5}):
        draw = start_draw(model, VOCAB, 5, "ab", length=30, stop="\n", random_seed=2, scores=True, **settings)
        texts = ["".join(p) for p in zip(*draw)]
        for i, text in enumerate(texts):
            generated = text[2:] + ("\n" if draw.stopped[i] else "")
            assert draw.chars[i] == len(generated)
            assert draw.logprob[i] == pytest.approx(forward_logprob(model, VOCAB, "ab", generated), abs=1e-9)


def naive_penalised_greedy(model, vocab, seed, length, penalty, window):
    """Greedy decoding with CTRL's penalty, straight from its definition, a forward pass per character."""
    text = seed
    for _ in range(length):
        prime = [vocab.newline_id()] if not seed else []
        ids = np.array(prime + list(vocab.encode(text)))
        logits = model.forward(ids[:, None])[0][-1, 0].astype(np.float64)
        for c in set(text[-window:]):
            k = vocab.symbols.index(c)
            logits[k] = logits[k] / penalty if logits[k] > 0 else logits[k] * penalty
        text += vocab.symbols[int(logits.argmax())]
    return text


@pytest.mark.parametrize("seed,window", [("", 4), ("abcab", 3), ("hhhh", 20)])
def test_repetition_penalty_is_ctrls_over_the_window(seed, window):
    model = make_model("gru")
    got = "".join(generate(model, VOCAB, seed, length=25, temperature=0, repetition_penalty=1.8,
                           repetition_window=window))
    assert got == naive_penalised_greedy(model, VOCAB, seed, 25, 1.8, window)
    assert got != "".join(generate(model, VOCAB, seed, length=25, temperature=0))


@pytest.mark.parametrize("kind", ["lstm", "gpt"])
@pytest.mark.parametrize("stop", [(), ("\n",), ("ab",)])
def test_beam_of_width_one_is_greedy(kind, stop):
    model = make_model(kind)
    for seed in ("", "hg"):
        greedy = "".join(generate(model, VOCAB, seed, length=40, temperature=0, stop=stop))
        assert "".join(generate(model, VOCAB, seed, length=40, beam_width=1, stop=stop)) == greedy


def test_a_beam_holding_every_hypothesis_finds_the_exhaustive_optimum():
    """Three symbols, four characters at most: every sequence scored by a forward pass; a beam of 27 holds
    all of them, so its best items by total log-probability are the exhaustive ranking's. By mean per
    character the search stops on a heuristic: its items are ranked by their mean, and the best is at least
    as good as the best by total."""
    vocab = Vocab(tuple("\nab"))
    model = make_model("lstm", vocab, hidden=8)
    scored = {}
    for n in range(1, 5):
        for chars in itertools.product("ab\n", repeat=n):
            text = "".join(chars)
            if "\n" in text[:-1]:
                continue  # a newline ends the item
            stopped = text.endswith("\n")
            if stopped or n == 4:
                lp = forward_logprob(model, vocab, "", text)
                scored[text.rstrip("\n") + ("" if stopped else "…")] = (lp, lp / n)
    found = {}
    for score in ("total", "mean"):
        draw = start_draw(model, vocab, 3, length=4, stop="\n", beam_width=27, beam_score=score)
        texts = ["".join(p) for p in zip(*draw)]
        found[score] = [t + ("" if draw.stopped[i] else "…") for i, t in enumerate(texts)]
        for i, key in enumerate(found[score]):
            assert draw.logprob[i] == pytest.approx(scored[key][0], abs=1e-9)
            assert draw.chars[i] == len(key.rstrip("…")) + draw.stopped[i]
    ranking = sorted(scored, key=lambda k: -scored[k][0])  # "": a newline first
    assert found["total"] == ranking[:3]
    means = [scored[k][1] for k in found["mean"]]
    assert means == sorted(means, reverse=True) and means[0] >= scored[ranking[0]][1]


def test_unique_and_excluded_samples_are_redrawn_in_batches(monkeypatch):
    model = make_model("lstm")
    options = SamplingOptions(stop=("\n",), length=3)
    plain = [s.text for s in draw_samples(model, VOCAB, 40, options=options, random_seed=5)]
    assert len(set(plain)) < 40  # three characters at most: repeats are common
    sizes = []
    real = items_module.start_draw
    monkeypatch.setattr(items_module, "start_draw", lambda *a, **k: sizes.append(a[2]) or real(*a, **k))
    exclude = set(plain[:5])
    got = [s.text for s in draw_samples(model, VOCAB, 40, options=options, random_seed=5, unique=True,
                                        exclude=exclude)]
    assert len(set(got)) == 40 and not exclude & set(got) and "" not in got
    assert sizes[0] == 40 and len(sizes) <= 4 and max(sizes[1:]) > 1  # the repeats are drawn again together
    # the same seed, other batch sizes: the same samples
    again = [s.text for s in draw_samples(model, VOCAB, 40, options=options, random_seed=5, unique=True,
                                          exclude=exclude, batch_size=7)]
    assert again == got


def test_a_bound_ends_the_redraws():
    model = make_model("lstm")
    options = SamplingOptions(stop=("\n",), length=1)  # one character: at most 9 different items
    with pytest.raises(DrawLimitError) as raised:
        list(draw_samples(model, VOCAB, 12, options=options, random_seed=1, unique=True, max_tries=5))
    assert raised.value.found <= 9 and raised.value.drawn == 60


def test_beam_items_skip_excluded_texts():
    model = make_model("gru")
    options = SamplingOptions(stop=("\n",), length=12, beam_width=6)
    best = [s.text for s in draw_samples(model, VOCAB, 4, options=options)]
    assert len(set(best)) == 4
    again = [s.text for s in draw_samples(model, VOCAB, 3, options=options, exclude={best[0], best[2]})]
    assert again[:2] == [best[1], best[3]] and best[0] not in again


def test_generate_batch_with_stops_yields_empty_pieces_once_a_sample_ended():
    model = make_model("rnn")
    rows = list(generate_batch(model, VOCAB, 4, "", length=50, stop="\n", random_seed=3))
    texts = ["".join(p) for p in zip(*rows)]
    alone = ["".join(generate(model, VOCAB, "", length=50, stop="\n", random_seed=r)) for r in sample_rngs(3, 4)]
    assert texts == alone and all("\n" not in t for t in texts)


@pytest.mark.parametrize("encoding,symbols,stops", [
    ("latin-1", b"ab\xe9\n", ("ab", "\u00e9")),  # a byte a character, é one byte in latin-1
    ("utf-8", b"a\xc3\xa9\n", ("\u00e9",)),  # a stop of two bytes, é in UTF-8
])
def test_a_bytes_models_stop_text_is_matched_on_its_bytes(encoding, symbols, stops):
    """A bytes model's stop texts are matched on their bytes in the model's encoding; the text before the
    first is what the uncut text begins with, and none of a stop's bytes is shown."""
    vocab = Vocab(tuple(sorted(symbols)), bytes_mode=True, encoding=encoding)
    model = make_model("gru", vocab)
    cuts = 0
    for random_seed in range(6):
        whole = "".join(generate(model, vocab, b"", length=60, random_seed=random_seed))
        got = "".join(generate(model, vocab, b"", length=60, random_seed=random_seed, stop=stops))
        assert whole.startswith(got) and not any(stop in got for stop in stops)
        if encoding == "latin-1":
            firsts = [whole.find(stop) for stop in stops if stop in whole]
            assert got == (whole[: min(firsts)] if firsts else whole)
        cuts += got != whole
    assert cuts >= 3
