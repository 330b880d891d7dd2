"""`charrnn inspect` and `charrnn neurons` as users run them: eval's loss from the records, the dump's r, the
terminal's colours and legend, the pages, one-line errors."""

import json
import math
import os

import numpy as np
import pytest
from browser import CHROMIUM, Chromium

from charrnn.inference.features import feature_values
from charrnn.io.checkpoint import Checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.models.gpt import CharGPT, GPTConfig
from charrnn.models.rnn import CharRNN, ModelConfig

SOURCE = '''def greet(name, punctuation="!"):
    """Say hello."""
    if name:
        print("hello, " + name + punctuation)
    return {"name": [name, (1, 2)]}

'''


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A little Python source, with two characters (#, é) outside the model's vocabulary."""
    path = tmp_path_factory.mktemp("source") / "held_out.py"
    path.write_text(SOURCE * 6 + "# café\n", encoding="utf-8")
    return str(path)


def save(path, model):
    vocab = Vocab(tuple(sorted(set(SOURCE))))
    save_checkpoint(str(path), Checkpoint(model(len(vocab)), vocab, {"step": 1}))
    return str(path)


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    return save(tmp_path_factory.mktemp("lstm") / "lstm.npz",
                lambda V: CharRNN(ModelConfig(V, "lstm", 16, 2), rng=np.random.default_rng(0)))


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    return save(tmp_path_factory.mktemp("gpt") / "gpt.npz",
                lambda V: CharGPT(GPTConfig(V, hidden_size=16, num_layers=2, num_heads=2, context_length=32),
                                  rng=np.random.default_rng(0)))


@pytest.mark.parametrize("model", ["lstm", "gpt"])
def test_inspect_json_is_evals_loss_with_the_top_k(model, source, cli_stdout, request):
    checkpoint = request.getfixturevalue(model)
    records = [json.loads(line) for line in cli_stdout("inspect", checkpoint, source, "--json").splitlines()]
    text = open(source, encoding="utf-8").read()
    assert "".join(r["char"] for r in records) == text
    scored = [r["logprob"] for r in records if r["logprob"] is not None]
    assert len(scored) == len(text) - 2  # # and é are left out
    loss = json.loads(cli_stdout("eval", checkpoint, source, "--json"))["loss"]
    assert -np.mean(scored) == pytest.approx(loss, abs=1e-6)
    assert all(len(r["top"]) == 5 and r["top"][0][1] >= r["top"][-1][1] for r in records)
    three = json.loads(cli_stdout("inspect", checkpoint, source, "--json", "--top-k", "3").splitlines()[10])
    assert [c for c, _ in three["top"]] == [c for c, _ in records[10]["top"][:3]]


def test_inspect_colours_the_text_with_a_legend_and_the_mean(lstm, source, cli):
    result = cli(["inspect", lstm, source], env={"FORCE_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout and "def greet" in result.stdout.replace("\x1b", "")  # coloured, and whole
    plain = cli(["inspect", lstm, source]).stdout
    assert "bits/char:" in plain and "not scored" in plain and "mean" in plain and "nats/char" in plain
    assert plain.startswith(SOURCE[:30])


def test_inspect_and_neurons_write_pages(lstm, gpt, source, cli_stdout, tmp_path):
    out = cli_stdout("inspect", lstm, source, "--html", tmp_path / "s.html")
    assert "wrote" in out and "<title>held_out.py: surprise</title>" in (tmp_path / "s.html").read_text()
    cli_stdout("inspect", gpt, source, "--html", tmp_path / "a.html", "--attention")
    assert '"attention": {"layers": 2, "heads": 2, "span": 32' in (tmp_path / "a.html").read_text()
    cli_stdout("neurons", lstm, source, "--feature", "bracket-depth", "--top", "4", "--html", tmp_path / "n.html")
    page = (tmp_path / "n.html").read_text()
    assert page.count('"label": "layer ') == 4 and "http" not in page.replace("http-equiv", "")


def test_neurons_json_r_is_the_dumps(lstm, source, cli_stdout, tmp_path):
    dump = tmp_path / "acts.npz"
    feature = 'regex:"[^"\\n]*"'
    ranking = json.loads(cli_stdout("neurons", lstm, source, "--feature", feature, "--json", "--dump", dump))
    assert len(ranking) == 10 and ranking[0].keys() == {"layer", "state", "unit", "r"}
    assert abs(ranking[0]["r"]) >= abs(ranking[-1]["r"])
    acts = np.load(dump)
    text = open(source, encoding="utf-8").read()
    values = feature_values(feature, text)
    for unit in ranking:
        column = acts[f"layer{unit['layer']}/{unit['state']}"][:, unit["unit"]]
        assert np.corrcoef(column.astype(np.float64), values)[0, 1] == pytest.approx(unit["r"], abs=1e-5)
    assert all(acts[name].shape == (len(text), 16) for name in acts.files)
    assert {"layer1/h", "layer2/c", "layer2/gate_f"} <= set(acts.files)
    table = cli_stdout("neurons", lstm, source, "--feature", "indent", "--top", "3")
    assert "units by |r| with indent" in table and table.count("│") >= 3 * 5


def test_neurons_saturation_and_show(lstm, source, cli_stdout):
    gates = json.loads(cli_stdout("neurons", lstm, source, "--saturation", "--json"))
    assert [(g["layer"], g["gate"]) for g in gates] == [(k, g) for k in (1, 2) for g in "ifo"]
    assert all(len(g["left"]) == 16 and 0 <= min(g["left"]) <= max(g["right"]) <= 1 for g in gates)
    table = cli_stdout("neurons", lstm, source, "--saturation")
    assert "gate saturation" in table and "mostly left" in table
    shown = cli_stdout("neurons", lstm, source, "--show", "2:5:c")
    assert shown.startswith(SOURCE[:30]) and "layer2/c unit 5" in shown


@pytest.mark.parametrize("args, message, status", [
    (["inspect", "{lstm}", "{empty}"], "it is empty", 1),
    (["neurons", "{lstm}", "{empty}", "--saturation"], "it is empty", 1),
    (["neurons", "{lstm}", "{source}", "--feature", "quotes"], "unknown feature 'quotes'", 2),
    (["neurons", "{lstm}", "{source}", "--feature", "regex:("], "bad regex '('", 2),
    (["neurons", "{lstm}", "{source}", "--show", "2:16"], "unit 16 is out of range: this model's units are 0 to 15", 1),
    (["neurons", "{lstm}", "{source}", "--show", "3:1"], "layer 3 is out of range", 1),
    (["neurons", "{lstm}", "{source}", "--show", "1:1:q"], "lstm has no state 'q'", 1),
    (["neurons", "{lstm}", "{source}", "--show", "one"], "is not LAYER:UNIT", 2),
    (["neurons", "{gpt}", "{source}", "--saturation"], "a gpt model has none", 1),
    (["neurons", "{lstm}", "{source}"], "give --feature F, --saturation", 2),
    (["neurons", "{lstm}", "{source}", "--feature", "quote", "--saturation"], "give one of them", 2),
    (["neurons", "{lstm}", "{source}", "--feature", "regex:zzz"], "nothing to correlate with", 1),
    (["inspect", "{lstm}", "{source}", "--attention"], "give --html FILE too", 2),
    (["inspect", "{lstm}", "{source}", "--html", "{page}", "--attention"], "attention is a gpt model's", 1),
    (["inspect", "{lstm}", "{source}", "--html", "{source}"], "is the file being read", 1),
])
def test_bad_input_is_one_line(args, message, status, lstm, gpt, source, cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    names = {"lstm": lstm, "gpt": gpt, "source": source, "empty": str(empty), "page": str(tmp_path / "p.html")}
    result = cli([a.format(**names) for a in args])
    assert result.exit_code == status, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and not result.stdout
    assert not os.path.exists(names["page"])


def test_an_existing_page_is_kept_without_overwrite(lstm, source, cli, tmp_path):
    page = tmp_path / "page.html"
    page.write_text("mine")
    result = cli(["inspect", lstm, source, "--html", page])
    assert result.exit_code == 1 and "already exists" in result.stderr and page.read_text() == "mine"
    assert cli(["inspect", lstm, source, "--html", page, "--overwrite"]).exit_code == 0
    assert page.read_text().startswith("<!doctype html>")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (Debian: apt-get install chromium)")
def test_the_pages_show_in_a_browser(lstm, gpt, source, cli_stdout, tmp_path):
    """The neurons page starts on its first unit and switches to surprise; hovering a character shows its top-K;
    the gpt page lights up what a character attends to."""
    cli_stdout("neurons", lstm, source, "--feature", "indent", "--top", "3", "--html", tmp_path / "n.html")
    cli_stdout("inspect", gpt, source, "--html", tmp_path / "a.html", "--attention")
    records = [json.loads(line) for line in cli_stdout("inspect", lstm, source, "--json").splitlines()]
    top = json.loads(cli_stdout("neurons", lstm, source, "--feature", "indent", "--top", "3", "--json"))
    spans = "document.querySelectorAll('.inspect-text span')"
    hover = ("(i => { {spans}[i].dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); "
             "return document.querySelector('.inspect-tip').textContent; })").replace("{spans}", spans)
    browser = Chromium(f"file://{tmp_path / 'n.html'}", str(tmp_path / "profile"))
    try:
        count = browser.wait_for(f"{spans}.length")
        modes = browser.evaluate("[...document.querySelector('.inspect-mode').options].map(o => o.text)")
        chosen = browser.evaluate("document.querySelector('.inspect-mode').selectedOptions[0].text")
        unit_colours = browser.evaluate(f"[...{spans}].map(s => s.style.backgroundColor)")
        tip = browser.evaluate(f"{hover}(41)")
        browser.evaluate("(s => { s.value = '0'; s.dispatchEvent(new Event('change')); })"
                         "(document.querySelector('.inspect-mode'))")
        legend = browser.evaluate("document.querySelector('.inspect-legend').textContent")
        browser.send("Page.navigate", browser.session, url=f"file://{tmp_path / 'a.html'}")
        browser.wait_for("document.querySelector('.inspect-mode') && document.querySelector('.inspect-mode')"
                         ".options.length > 4")
        browser.evaluate("(s => { s.value = '3'; s.dispatchEvent(new Event('change')); })"
                         "(document.querySelector('.inspect-mode'))")
        browser.evaluate(f"{hover}(60)")
        lit = browser.evaluate(f"[...{spans}].filter(s => s.style.backgroundColor).length")
    finally:
        browser.close()
    assert count == len(records) and modes[0].startswith("surprise")
    assert modes[1:] == [f"layer {u['layer']} {u['state']} {u['unit']} (r = {u['r']:.3f})" for u in top]
    assert chosen == modes[1] and len(set(unit_colours)) > 3  # the first unit's colours
    record = records[41]
    assert json.dumps(record["char"]) in tip and f"{-record['logprob'] / math.log(2):.2f} bits" in tip
    assert all(f"{100 * p:.1f}%" in tip for _, p in record["top"])
    assert legend.startswith("bits per character")
    assert 1 <= lit <= 32  # character 60 and some of the up to 32 before it, in layer 1's head 2
