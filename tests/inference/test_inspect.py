"""Seeing inside a model (inference/inspect.py, features.py, neurons.py, pages.py): the logprobs are eval's and a
naive per-character forward's, the top-K a softmax's, the states Stepper's, each feature its definition, the
correlation numpy's, saturation counted on gates forced open and shut, the pages well formed."""

import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from charrnn.inference.evaluate import evaluate_file, evaluate_text
from charrnn.inference.features import FeatureError, FeatureStream, feature_values
from charrnn.inference.inspect import SEQ_LENGTH, inspect_file, inspect_text
from charrnn.inference.neurons import ActivationDump, Correlation, Saturation, correlate, saturation, scan
from charrnn.inference.pages import PageText, page_html, text_page, units_page
from charrnn.io.corpus import Vocab, text_codes
from charrnn.models.gpt import CharGPT, GPTConfig
from charrnn.models.rnn import CharRNN, ModelConfig
from charrnn.models.rnn_steppers import Stepper
from charrnn.nn.numerics import log_softmax

VOCAB = Vocab(tuple(sorted("\n !\"'(),.:;?ABCDEFGHIJKLMNOPRSTUWYabcdefghiklmnoprstuvwy[]{}\\")))
# longer than a pass, with characters outside the vocabulary (Z, é) that the model leaves out
TEXT = ('ROMEO: "But soft! what light (through [yonder] window) breaks?" Zé\n' * 24)[:SEQ_LENGTH * 2 + 301]


def rnn(cell, dtype="float64", seed=0, hidden=12):
    return CharRNN(ModelConfig(len(VOCAB), cell, hidden, 2, dtype=dtype), rng=np.random.default_rng(seed))


def gpt(dtype="float64", context=16):
    config = GPTConfig(len(VOCAB), hidden_size=16, num_layers=2, num_heads=2, context_length=context, dtype=dtype)
    return CharGPT(config, rng=np.random.default_rng(1))


def joined(pieces, field):
    return np.concatenate([getattr(p, field) for p in pieces])


def stepped(model, text):
    """A naive reference: Stepper fed the text one character at a time after a newline, the characters outside
    the vocabulary skipped. Per text character: the log-probabilities it was drawn from (V,), and the
    (layer, name) -> (H,) arrays after reading it."""
    stepper = Stepper(model, model.initial_state(1))
    logp = log_softmax(stepper.step(np.array([VOCAB.newline_id()])).astype(np.float64))[0]
    rows = []
    for ch in text:
        if ch in VOCAB.symbols:
            before, parity = logp, stepper.parity
            logp = log_softmax(stepper.step(np.array([VOCAB.symbols.index(ch)])))[0]
            state = {}
            for k, caches in enumerate(stepper.caches, 1):
                cache = caches[parity]  # the step just taken wrote its state and gates here
                state.update({(k, name): getattr(cache, name)[0].copy() for name in model.cell.state_names})
                state.update({(k, "gate_" + g): getattr(cache, g)[0].copy() for g in model.cell.gate_names})
            rows.append((before, state))
        else:
            rows.append((logp, rows[-1][1] if rows else None))
    return rows


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_logprobs_are_evals_and_a_naive_forwards(cell, tmp_path):
    model = rnn(cell)
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    pieces = list(inspect_file(model, VOCAB, str(path), top_k=4))
    logprob = joined(pieces, "logprob")
    assert len(logprob) == len(TEXT) and joined(pieces, "codes").tolist() == [ord(c) for c in TEXT]
    assert np.isnan(logprob).sum() == TEXT.count("Z") + TEXT.count("é")  # left out, as eval leaves them
    result = evaluate_file(model, VOCAB, str(path))
    assert -np.nanmean(logprob) == pytest.approx(result.loss, abs=1e-9)
    reference = stepped(model, TEXT)
    naive = np.array([lp[VOCAB.symbols.index(c)] if c in VOCAB.symbols else np.nan
                      for c, (lp, _) in zip(TEXT, reference)])
    np.testing.assert_allclose(logprob, naive, atol=1e-9)
    # the top-K: a softmax's likeliest, before each character is read (a left-out one: the next one's)
    probs = np.exp(np.array([lp for lp, _ in reference]))
    expected = np.argsort(-probs, axis=1, kind="stable")[:, :4]
    top_ids, top_probs = joined(pieces, "top_ids"), joined(pieces, "top_probs")
    np.testing.assert_allclose(top_probs, np.take_along_axis(probs, expected, axis=1), atol=1e-12)
    assert (np.sort(top_probs, axis=1)[:, ::-1] == top_probs).all()
    assert (top_ids == expected).mean() > 0.99  # ties between equal probabilities may order either way


def test_a_float32_model_and_a_text_of_one_piece_score_as_eval():
    model = rnn("lstm", dtype="float32", hidden=24)
    pieces = list(inspect_text(model, VOCAB, TEXT, top_k=1))
    assert -np.nanmean(joined(pieces, "logprob")) == pytest.approx(evaluate_text(model, VOCAB, TEXT).loss, abs=1e-6)


def test_without_a_newline_in_the_vocabulary_the_first_character_is_not_scored():
    vocab = Vocab(tuple("ab"))
    model = CharRNN(ModelConfig(2, "gru", 8, 1, dtype="float64"), rng=np.random.default_rng(0))
    (piece,) = inspect_text(model, vocab, "abba", top_k=5)
    assert np.isnan(piece.logprob[0]) and not np.isnan(piece.logprob[1:]).any()
    assert piece.top_ids.shape == (4, 2) and (piece.top_ids[0] == -1).all()
    assert -np.nanmean(piece.logprob) == pytest.approx(evaluate_text(model, vocab, "abba").loss, abs=1e-12)


@pytest.mark.parametrize("context", [16, 2000])
def test_gpt_logprobs_are_evals_sliding_windows(context):
    model = gpt(context=context)
    pieces = list(inspect_text(model, VOCAB, TEXT, top_k=3, attention=True))
    logprob = joined(pieces, "logprob")
    assert -np.nanmean(logprob) == pytest.approx(evaluate_text(model, VOCAB, TEXT).loss, abs=1e-9)
    attention = joined(pieces, "attention")  # (N, L, nh, P): after reading each character
    assert attention.shape == (len(TEXT), 2, 2, context)
    np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-9)  # each head's weights over what it sees


def test_gpt_attention_is_the_models_own_on_a_short_text():
    model = gpt(context=16)
    text = "ROMEO: But soft"  # shorter than the context: one window, from the newline on
    (piece,) = inspect_text(model, VOCAB, text, attention=True)
    ids = np.array([VOCAB.newline_id(), *VOCAB.encode(text)])[:, None]
    _, weights = model.forward_attention(ids)  # each (1, nh, T, T)
    for i in range(len(text)):  # character i is input i + 1; its key d back is input i + 1 - d
        for layer in range(2):
            row = weights[layer][0, :, i + 1, : i + 2][:, ::-1]  # (nh, i + 2), d = 0, 1, ...
            np.testing.assert_allclose(piece.attention[i, layer, :, : i + 2], row, atol=1e-12)
            assert not piece.attention[i, layer, :, i + 2 :].any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_dump_holds_steppers_states_and_gates_and_r_is_numpys(cell, tmp_path):
    model = rnn(cell)
    correlation = Correlation(model, VOCAB, FeatureStream("bracket-depth"))
    dump = ActivationDump(model, str(tmp_path / "acts.npz"), len(TEXT))
    assert scan(model, VOCAB, text_codes(VOCAB, TEXT), [correlation, dump]) == len(TEXT)
    dump.close()
    acts = np.load(tmp_path / "acts.npz")
    names = model.state_names()
    assert sorted(acts.files) == sorted(f"layer{k}/{n}" for k in (1, 2) for n in names)
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary files are gone
    reference = stepped(model, TEXT)
    for k in (1, 2):
        for name in names:
            assert acts[f"layer{k}/{name}"].shape == (len(TEXT), 12)
            np.testing.assert_allclose(acts[f"layer{k}/{name}"], [s[k, name] for _, s in reference], atol=1e-9)
    feature = feature_values("bracket-depth", TEXT)
    units = [f"layer{k}/{s}" for k in (1, 2) for s in model.cell.state_names]
    expected = [np.corrcoef(acts[name][:, u], feature)[0, 1] for name in units for u in range(12)]
    np.testing.assert_allclose(correlation.r(), expected, atol=1e-12)
    ranking = correlation.ranking()
    assert len(ranking) == len(units) * 12 and abs(ranking[0].r) == pytest.approx(max(abs(r) for r in expected))
    top = ranking[0]
    assert np.corrcoef(acts[f"layer{top.layer}/{top.state}"][:, top.unit], feature)[0, 1] == pytest.approx(top.r)


def test_correlate_reads_a_file_and_ranks_every_unit(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    model = rnn("lstm")
    ranking = correlate(model, VOCAB, str(path), "quote")
    assert len(ranking) == 2 * 2 * 12 and {u.state for u in ranking} == {"h", "c"}
    assert abs(ranking[0].r) >= abs(ranking[-1].r) and ranking[0].to_json().keys() == {"layer", "state", "unit", "r"}


def forced(cell, bias):
    """A one-layer model whose gates ignore the text: zero weights, the gate biases ``bias`` (pre-activations)."""
    model = rnn(cell, hidden=4)
    for name in ("l0.W_xh", "l0.W_hh", "l1.W_xh", "l1.W_hh"):
        model.params[name][...] = 0
    for k in (0, 1):
        model.params[f"l{k}.b"][...] = np.repeat(bias, 4)
    return model


@pytest.mark.parametrize("cell, bias, expected", [
    ("lstm", [20.0, -20.0, 0.0, 0.0], {"i": (0, 1), "f": (1, 0), "o": (0, 0)}),  # open, shut, half
    ("gru", [-20.0, 20.0, 0.0], {"r": (1, 0), "z": (0, 1)}),
])
def test_saturation_counts_gates_forced_open_and_shut(cell, bias, expected, tmp_path):
    model = forced(cell, bias)
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    gates = saturation(model, VOCAB, str(tmp_path / "text.txt"))
    assert [(g.layer, g.gate) for g in gates] == [(k, g) for k in (1, 2) for g in expected]
    for g in gates:
        assert (g.left == expected[g.gate][0]).all() and (g.right == expected[g.gate][1]).all()


def test_saturation_is_a_fraction_of_the_characters():
    model = rnn("lstm", seed=3)
    counter, dump_rows = Saturation(model), []

    class Rows:
        def add(self, piece, row):
            dump_rows.append(piece.units["layer2/gate_f"])

    scan(model, VOCAB, text_codes(VOCAB, TEXT), [counter, Rows()])
    f = np.concatenate(dump_rows)
    (gate,) = [g for g in counter.fractions() if (g.layer, g.gate) == (2, "f")]
    np.testing.assert_allclose(gate.left, (f < 0.1).mean(axis=0))
    np.testing.assert_allclose(gate.right, (f > 0.9).mean(axis=0))


def test_a_model_without_gates_and_gpt_have_no_saturation():
    with pytest.raises(ValueError, match="an rnn has none"):
        Saturation(rnn("rnn"))
    with pytest.raises(ValueError, match="a gpt model has none"):
        Saturation(gpt())


# ---- features, on hand-written strings


def spell(values):
    return "".join(str(int(v)) for v in values)


@pytest.mark.parametrize("text, expected", [
    ('say "hi" now', "000011100000"),
    ('a "b \'c\' d" e', "0011111111000"),  # single quotes inside are ordinary characters
    ('"a \\"b\\" c"', "11111111110"),  # escaped quotes do not close
    ('a "z\\\\" w', "001111000"),  # an escaped backslash inside escapes nothing more
    ('x \\" y " w', "0001111000"),  # a backslash outside a quotation escapes nothing
    ('"""doc "x" """ + "', "101111100110100001"),  # each quote mark opens or shuts a quotation
    ('"open\nstill', "11111111111"),  # a quotation runs over a newline, to the text's end
])
def test_quote(text, expected):
    assert spell(feature_values("quote", text)) == expected


def test_line_position_indent_and_bracket_depth():
    text = "ab\n\tc(d\n  x[{y}]\n)"
    assert feature_values("line-position", text).tolist() == [1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1]
    assert feature_values("indent", text).tolist() == [0, 0, 0, 8, 8, 8, 8, 0, 1, 2, 2, 2, 2, 2, 2, 2, 0, 0]
    assert feature_values("bracket-depth", text).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 3, 3, 2, 1, 1, 0]
    assert feature_values("bracket-depth", ")) (]").tolist() == [0, 0, 0, 1, 0]  # a close with none open: nothing
    assert feature_values("indent", "  \t x\n \t\ty").tolist() == [1, 2, 8, 9, 9, 0, 1, 8, 16, 16]


def test_regex_marks_the_characters_inside_each_match():
    # "b, newline, " is not a match: the pattern leaves newlines out
    assert spell(feature_values('regex:"[^"\\n]*"', 'f("a", "") + "b\n"')) == "00111001100000000"
    assert spell(feature_values("regex:x*", "axxb")) == "0110"  # empty matches mark nothing
    with pytest.raises(FeatureError, match="bad regex"):
        feature_values("regex:(", "text")
    with pytest.raises(FeatureError, match="unknown feature 'quotes'"):
        feature_values("quotes", "text")


@pytest.mark.parametrize("name", ["quote", "line-position", "indent", "bracket-depth", "regex:[a-z]+ *"])
def test_a_feature_read_piece_by_piece_is_the_same(name):
    text = 'if x:\n\t  say("a \\"(b)\\" [c]", {d})  # e\n    "f\n' * 3
    whole = feature_values(name, text)
    for cut in range(1, len(text)):  # every split into two pieces, and into pieces of every length
        stream = FeatureStream(name, text)
        assert np.array_equal(np.concatenate([stream.values(text[:cut]), stream.values(text[cut:])]), whole)
        stream = FeatureStream(name, text)
        assert np.array_equal(np.concatenate([stream.values(text[i : i + cut]) for i in range(0, len(text), cut)]),
                              whole)


def test_a_feature_the_same_everywhere_has_nothing_to_correlate_with():
    model = rnn("gru")
    correlation = Correlation(model, VOCAB, FeatureStream("bracket-depth"))
    scan(model, VOCAB, text_codes(VOCAB, "no brackets here"), [correlation])
    with pytest.raises(ValueError, match="nothing to correlate"):
        correlation.ranking()


# ---- pages


class Page(HTMLParser):
    """Parses a page: its tags in order, the JSON data block, and whether any tag loads from the network."""

    def __init__(self, html):
        super().__init__()
        self.stack, self.data, self.remote, self.current = [], None, [], None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in ("meta", "link"):
            self.stack.append(tag)
        self.current = attrs.get("id")
        self.remote += [v for k, v in attrs.items() if k in ("src", "href") and v and re.match(r"\w+://", v)]

    def handle_endtag(self, tag):
        assert self.stack.pop() == tag, f"</{tag}> closes the wrong element"

    def handle_data(self, data):
        if self.current == "data" and data.strip():
            self.data = json.loads(data)


def test_pages_parse_are_self_contained_and_carry_the_text(tmp_path):
    model = rnn("lstm")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    ranking = correlate(model, VOCAB, str(tmp_path / "text.txt"), "quote")[:3]
    page = units_page(model, VOCAB, text_codes(VOCAB, TEXT), ranking, len(TEXT), top_k=2, limit=100)
    parsed = Page(page_html(page.data("summary"), title="a <title>", source="x & y"))
    assert parsed.stack == [] and parsed.remote == []
    data = parsed.data
    assert "".join(data["chars"]) == TEXT[:100] and len(data["logprob"]) == len(data["top"]) == 100
    assert [u["label"] for u in data["units"]] == [u.label() for u in ranking] and data["show"] == "units"
    assert len(data["units"][0]["values"]) == 100 and f"first 100 of {len(TEXT):,}" in data["summary"]
    assert data["logprob"][TEXT.index("Z")] is None and len(data["top"][0]) == 2


def test_a_gpt_page_carries_each_heads_attention():
    model = gpt(context=16)
    page = PageText(VOCAB)
    for piece in inspect_text(model, VOCAB, TEXT[:200], attention=True):
        page.add(piece)
    attention = Page(page_html(page.data(), "t")).data["attention"]
    assert (attention["layers"], attention["heads"], attention["span"]) == (2, 2, 16)
    read = [i for i, c in enumerate(TEXT[:200]) if c in VOCAB.symbols]
    assert attention["pos"] == read and len(attention["row"]) == 200


def test_a_text_page_is_the_servers_answer():
    model = rnn("lstm")
    data = text_page(model, VOCAB, TEXT, top_k=3)
    loss = evaluate_text(model, VOCAB, TEXT).loss
    assert f"loss {loss:.4f} nats/char" in data["summary"] and "units" not in data and len(data["top"][5]) == 3
    units = text_page(model, VOCAB, TEXT, feature="bracket-depth", top=4)["units"]
    ranking = correlate_text(model, TEXT, "bracket-depth")[:4]
    assert [u["label"] for u in units] == [u.label() for u in ranking]
    assert [u["r"] for u in units] == pytest.approx([u.r for u in ranking], abs=1e-4)
    with pytest.raises(ValueError, match="a gpt model has none"):
        text_page(gpt(), VOCAB, TEXT, feature="quote")
    calls = []
    text_page(model, VOCAB, TEXT, feature="quote", check=lambda: calls.append(1))
    assert len(calls) == 2 * math.ceil(len(TEXT) / SEQ_LENGTH)  # between passes: it can stop a long one


def correlate_text(model, text, feature):
    correlation = Correlation(model, VOCAB, FeatureStream(feature, text))
    scan(model, VOCAB, text_codes(VOCAB, text), [correlation])
    return correlation.ranking()
