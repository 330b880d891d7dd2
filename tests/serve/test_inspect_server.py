"""POST /v1/inspect and the page's inspect view: the library's page data over HTTP, the 400s of a bad body, and
the view in a headless browser (coloured by surprise, a unit picked from the ranked list, top-K on hover)."""

import http.client
import json
import threading

import numpy as np
import pytest
from browser import CHROMIUM, Chromium

from charrnn.inference.evaluate import evaluate_text
from charrnn.inference.pages import text_page
from charrnn.io.corpus import Vocab
from charrnn.models.gpt import CharGPT, GPTConfig
from charrnn.models.rnn import CharRNN, ModelConfig
from charrnn.serve.server import ServeConfig, make_server

VOCAB = Vocab(tuple(sorted("\n !\"'(),.:;?ABCDEFGHIJKLMNOPRSTUWYabcdefghiklmnoprstuvwy[]{}")))
TEXT = 'ROMEO: "But soft! what light (through [yonder] window) breaks?"\n' * 3


@pytest.fixture(scope="module")
def model():
    return CharRNN(ModelConfig(len(VOCAB), "lstm", 16, 2), rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def server(model):
    server = make_server(model, VOCAB, ServeConfig(port=0, quiet=True, max_inspect_chars=1000))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def post(server, body):
    """(status, the JSON answer) of POST /v1/inspect."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    try:
        conn.request("POST", "/v1/inspect", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_inspect_answers_the_librarys_page_data(server, model):
    status, data = post(server, {"text": TEXT, "top_k": 3, "feature": "bracket-depth", "top": 4})
    assert status == 200
    assert data == json.loads(json.dumps(text_page(model, VOCAB, TEXT, 3, "bracket-depth", 4)))
    assert "".join(data["chars"]) == TEXT and len(data["units"]) == 4 and len(data["top"][0]) == 3
    loss = evaluate_text(model, VOCAB, TEXT).loss
    assert -np.mean(data["logprob"]) == pytest.approx(loss, abs=1e-5)  # rounded to 5 decimals on the page
    status, plain = post(server, {"text": "To be, or not to be: caf\u00e9"})
    assert status == 200 and "units" not in plain and plain["logprob"][-1] is None and len(plain["top"][0]) == 5


@pytest.mark.parametrize("body, status, fragment", [
    ({}, 400, 'needs a "text" field'),
    ({"text": ""}, 400, 'needs a "text" field'),
    ({"text": 7}, 400, "text must be a string"),
    ({"text": "a" * 1001}, 413, "inspects at most 1,000"),
    ({"text": "abc", "top_k": 0}, 400, "top_k must be from 1 to 50"),
    ({"text": "abc", "top": 51}, 400, "top must be from 1 to 50"),
    ({"text": "abc", "color": "red"}, 400, "unknown field"),
    ({"text": "abc", "feature": "quotes"}, 400, "unknown feature 'quotes'"),
    ({"text": "abc", "feature": "regex:("}, 400, "bad regex"),
    ({"text": "no brackets", "feature": "bracket-depth"}, 400, "nothing to correlate with"),
    ({"text": "\u00e9\u00e9"}, 400, "no character the model knows"),
])
def test_bad_bodies_get_a_json_error(server, body, status, fragment):
    got, answer = post(server, body)
    assert got == status and fragment in answer["error"]


def test_a_gpt_is_inspected_without_units():
    model = CharGPT(GPTConfig(len(VOCAB), hidden_size=16, num_layers=2, num_heads=2, context_length=16),
                    rng=np.random.default_rng(0))
    server = make_server(model, VOCAB, ServeConfig(port=0, quiet=True))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, data = post(server, {"text": TEXT})
        refused = post(server, {"text": TEXT, "feature": "quote"})
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200 and -np.mean(data["logprob"]) == pytest.approx(evaluate_text(model, VOCAB, TEXT).loss,
                                                                       abs=1e-5)
    assert refused == (400, {"error": "feature ranks a recurrent model's units; this gpt model has none"})


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (Debian: apt-get install chromium)")
def test_the_page_inspects_a_text_in_a_headless_browser(server, tmp_path):
    browser = Chromium(f"http://127.0.0.1:{server.server_port}/", str(tmp_path / "profile"))
    spans = "document.querySelectorAll('#inspect-result .inspect-text span')"
    try:
        browser.wait_for("document.getElementById('model').textContent.includes('LSTM')")
        browser.evaluate(f"document.getElementById('inspect-text').value = {json.dumps(TEXT)};"
                         "document.getElementById('inspect-feature').value = 'bracket-depth';"
                         "document.getElementById('inspect').click()")
        count = browser.wait_for(f"{spans}.length")
        modes = browser.evaluate("[...document.querySelector('#inspect-result .inspect-mode').options]"
                                 ".map(o => o.text)")
        status = browser.evaluate("document.getElementById('inspect-status').textContent")
        browser.evaluate("(s => { s.value = '2'; s.dispatchEvent(new Event('change')); })"
                         "(document.querySelector('#inspect-result .inspect-mode'))")
        legend = browser.evaluate("document.querySelector('#inspect-result .inspect-legend').textContent")
        tip = browser.evaluate(f"(s => {{ s.dispatchEvent(new MouseEvent('mouseover', {{bubbles: true}}));"
                               "return document.querySelector('.inspect-tip').textContent; })"
                               f"({spans}[8])")
        browser.evaluate("document.getElementById('inspect-text').value = '\u00e9';"
                         "document.getElementById('inspect-feature').value = '';"
                         "document.getElementById('inspect').click()")
        error = browser.wait_for("(s => s.includes('knows') && s)(document.getElementById('inspect-status')"
                                 ".textContent)")
    finally:
        browser.close()
    _, data = post(server, {"text": TEXT, "feature": "bracket-depth"})
    assert count == len(TEXT) and "pick a unit" in status
    assert modes[0].startswith("surprise") and modes[1:] == [f"{u['label']} (r = {u['r']:.3f})" for u in data["units"]]
    assert legend.startswith(data["units"][1]["label"])
    assert '"B"' in tip and "likeliest before it" in tip and data["units"][1]["label"] in tip
    assert "no character the model knows" in error
