"""charrnn serve: a real server on a free port, a real HTTP client (http.client and raw sockets)."""

import contextlib
import errno
import http.client
import json
import math
import os
import re
import resource
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from browser import CHROMIUM, Chromium

from charrnn.inference.evaluate import evaluate_file, evaluate_text
from charrnn.inference.sample import generate, start_draw
from charrnn.io.checkpoint import Checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.models.gpt import CharGPT, GPTConfig
from charrnn.models.rnn import CharRNN, ModelConfig
from charrnn.serve.server import ServeConfig, make_server

VOCAB = Vocab(tuple("\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))

JSON = {"Content-Type": "application/json"}


POST_SCORE = b"POST /v1/score HTTP/1.1\r\nContent-Type: application/json\r\n"

LIMITS = {"max_length": 400, "max_concurrent": 2, "max_seed": 100, "max_body": 4096, "max_score_chars": 1000,
          "max_inspect_chars": 1000, "max_connections": 64, "request_timeout": 5.0}


def make_model():
    config = ModelConfig(vocab_size=len(VOCAB), model="lstm", hidden_size=16, num_layers=2)
    return CharRNN(config, rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def model():
    return make_model()


def start_server(model, **limits):
    server = make_server(model, VOCAB, ServeConfig(port=0, quiet=True, timeout=5, **{**LIMITS, **limits}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def port(model):
    server, thread = start_server(model)
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(5)


def call(port, method, path, body=None, headers=None):
    """(status, headers, body bytes); a dict body is sent as JSON."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if headers is None:
        headers = {"Content-Type": "application/json"} if body is not None else {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def call_json(port, path, body):
    status, headers, data = call(port, "POST", path, body)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(data)


def raw(port, data, shut_write=False):
    """Send raw bytes; return the status and JSON body of the answer (read to EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def read_answer(sock):
    """The status and JSON body of the answer on ``sock`` (read to EOF), past any interim 1xx answer."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:  # the server closed with some of what we sent unread: the answer came first
        assert answer
    while re.match(rb"HTTP/1\.1 1\d\d ", answer):
        answer = answer.partition(b"\r\n\r\n")[2]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head, "the server closed the connection without an answer"
    return int(head.split()[1]), json.loads(body)


def parse_events(data):
    """[(event type, data)] of a server-sent event stream."""
    events = []
    for block in data.decode().split("\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def expected_text(model, seed="", length=100, temperature=1.0, top_k=None, top_p=None, random_seed=None):
    return "".join(generate(model, VOCAB, seed, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                           random_seed=random_seed))


@pytest.mark.parametrize("options", [{}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.9}, {"temperature": 0}])
def test_generate_is_the_librarys_text_and_repeats_with_its_random_seed(port, model, options):
    body = {"seed": "ROMEO:", "length": 120, "random_seed": 42, **options}
    status, first = call_json(port, "/v1/generate", body)
    assert status == 200
    assert first["text"] == expected_text(model, **body) and first["random_seed"] == 42
    assert first["chars"] == 120 and first["stopped_by"] == "length" and first["logprob"] < 0
    assert first["text"].startswith("ROMEO:") and len(first["text"]) == 6 + 120
    assert call_json(port, "/v1/generate", body)[1] == first
    other = call_json(port, "/v1/generate", {**body, "random_seed": 43})[1]["text"]
    assert (other == first["text"]) == (body.get("temperature") == 0)  # greedy text needs no random numbers


@pytest.mark.parametrize("fields", [
    {"stop": "e", "temperature": 0.8}, {"stop": ["\n", "th"], "repetition_penalty": 1.3, "repetition_window": 8},
    {"stop": "e", "beam_width": 1}, {"stop": ["\n", "e"], "beam_width": 5, "beam_score": "mean"},
])
def test_generate_takes_stops_penalty_and_beam_as_the_library_does(port, model, fields):
    """The answer is the library's text, with its log-probability; streamed, the same text and a done event
    that says how it ended."""
    body = {"seed": "KING:", "length": 200, "random_seed": 5, **fields}
    status, answer = call_json(port, "/v1/generate", body)
    assert status == 200, answer
    library = {**body, "stop": (body["stop"],) if isinstance(body["stop"], str) else tuple(body["stop"])}
    draw = start_draw(model, VOCAB, 1, **library, scores=True)
    assert answer["text"] == "".join(p[0] for p in draw)
    assert answer["logprob"] == pytest.approx(float(draw.logprob[0]), abs=1e-6)
    assert answer["chars"] == draw.chars[0] and answer["stopped_by"] == ("stop" if draw.stopped[0] else "length")
    if fields.get("beam_width") == 1:  # width 1: greedy
        assert answer["text"] == "".join(generate(model, VOCAB, "KING:", length=200, temperature=0, stop="e"))
    events = parse_events(call(port, "POST", "/v1/generate", {**body, "stream": True})[2])
    assert "".join(d["text"] for kind, d in events if kind == "message") == answer["text"]
    assert {k: events[-1][1][k] for k in ("logprob", "chars", "stopped_by")} == {
        k: answer[k] for k in ("logprob", "chars", "stopped_by")}


def test_generate_without_a_random_seed_answers_the_one_it_drew(port, model):
    status, answer = call_json(port, "/v1/generate", {"length": 80})
    assert status == 200 and isinstance(answer["random_seed"], int)
    assert len(answer["text"]) == 80
    again = call_json(port, "/v1/generate", {"length": 80, "random_seed": answer["random_seed"]})[1]
    assert again["text"] == answer["text"] == expected_text(model, length=80, random_seed=answer["random_seed"])


def test_stream_sends_the_same_text_as_events_and_ends_with_done(port, model):
    body = {"seed": "KING:", "length": 300, "temperature": 0.8, "random_seed": 7}
    status, headers, data = call(port, "POST", "/v1/generate", {**body, "stream": True})
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    events = parse_events(data)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"message"}
    assert events[0][1]["text"].startswith("KING:")
    streamed = "".join(data["text"] for kind, data in events if kind == "message")
    assert streamed == call_json(port, "/v1/generate", body)[1]["text"] == expected_text(model, **body)
    done = events[-1][1]
    assert done["chars"] == 300 and done["random_seed"] == 7 and done["seconds"] >= 0


def test_stream_arrives_while_it_is_generated(model):
    length = 20_000
    server, thread = start_server(model, max_length=length)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        conn.request("POST", "/v1/generate", json.dumps({"length": length, "stream": True}), JSON)
        started = time.monotonic()
        response = conn.getresponse()
        first = response.fp.readline()
        first_at = time.monotonic() - started
        assert first.startswith(b"data: ")
        events = parse_events(first + response.read())
        assert first_at < (time.monotonic() - started) / 2  # the first text came long before the last
        assert len(events) > 3 and events[-1][0] == "done"
        assert sum(len(d["text"]) for kind, d in events if kind == "message") == length
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


def test_score_matches_eval_on_a_file(port, model, tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    reference = evaluate_file(model, VOCAB, str(path))
    status, answer = call_json(port, "/v1/score", {"text": text})
    assert status == 200
    assert answer["chars"] == reference.chars == len(text)
    assert answer["loss"] == pytest.approx(reference.loss, rel=1e-6)
    assert answer["bpc"] == pytest.approx(answer["loss"] / math.log(2))
    assert answer["perplexity"] == pytest.approx(math.exp(answer["loss"]))
    assert answer["oov_chars"] == 0 and answer["oov"] == {}


def test_score_counts_and_leaves_out_unknown_characters(port, model):
    status, answer = call_json(port, "/v1/score", {"text": "Café 7 and café"})
    assert status == 200
    assert answer["oov"] == {"é": 2, "7": 1} and answer["oov_chars"] == 3
    assert answer["chars"] == len("Caf  and caf")
    assert answer["loss"] == call_json(port, "/v1/score", {"text": "Caf  and caf"})[1]["loss"]


def test_page_and_info(port):
    status, headers, page = call(port, "GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = page.decode()
    for control in ('id="seed"', 'id="temperature"', 'id="top_k"', 'id="top_p"', 'id="length"', 'id="output"'):
        assert control in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page must not load anything from elsewhere"
    status, headers, head = call(port, "HEAD", "/")
    assert status == 200 and head == b"" and int(headers["Content-Length"]) == len(page.encode())
    status, headers, info = call(port, "GET", "/v1/info?x=1")
    assert headers["Server"] == "charrnn"  # no versions of charrnn or Python to look up flaws of
    info = json.loads(info)
    assert info["vocab_size"] == len(VOCAB) and info["model"]["model"] == "lstm"
    assert info["limits"] == LIMITS


BAD_GENERATE = [
    (b"{bad", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"\xff\xfe"', "not UTF-8"),
    (b'{"temperature": NaN}', "NaN is not JSON"),
    (b'{"temperature": 1e999}', "temperature must be a finite number"),
    (b'{"seed": "\\ud800"}', "lone surrogate"),
    ({"seed": "A", "colour": 1}, 'unknown field "colour"'),
    ({"x" * 1000: 1}, 'unknown field "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…'),
    ({"length": "9" * 1000}, 'length must be an integer, not "99999999999999999999999999999999999999…'),
    ({"length": "10"}, "length must be an integer"),
    ({"length": True}, "length must be an integer"),
    ({"length": 1.5}, "length must be an integer"),
    ({"length": None}, "length must be an integer"),
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"stream": "yes"}, "stream must be true or false"),
    ({"seed": 5}, "seed must be a string"),
    ({"top_k": 2.5}, "top_k must be an integer or null"),
    ({"random_seed": "x"}, "random_seed must be an integer or null"),
    ({"length": 0}, "length must be from 1 to 400"),
    ({"length": 401}, "length must be from 1 to 400"),
    ({"temperature": -0.5}, "temperature must be 0 or more"),
    ({"top_k": 0}, "top_k must be 1 or more"),
    ({"top_p": 0}, "top_p must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"random_seed": -1}, "random_seed must be from 0"),
    ({"random_seed": 2**64}, "random_seed must be from 0"),
    ({"seed": "Café"}, "seed has characters the model has never seen: 'é'"),
    ({"seed": "A" * 101}, "at most 100"),
    ({"seed": "".join(map(chr, range(0x4E00, 0x4E00 + 90)))}, "never seen: '一', '丁'"),
    ({"stop": 5}, "stop must be a string or a list of strings, not 5"),
    ({"stop": ["\n", 1]}, "stop must be a string or a list of strings"),
    ({"stop": ""}, "stop takes at most 16 texts of 1 to 100 characters each"),
    ({"stop": ["a"] * 17}, "stop takes at most 16 texts"),
    ({"stop": ["\n", "é"]}, "has characters the model has never seen: 'é'"),
    ({"repetition_penalty": 0.5}, "repetition_penalty must be 1 or more, not 0.5"),
    ({"repetition_penalty": "x"}, "repetition_penalty must be a number"),
    ({"repetition_window": 0}, "repetition_window must be 1 or more"),
    ({"beam_width": 0}, "beam_width must be from 1 to 64 (or null), not 0"),
    ({"beam_width": 65}, "beam_width must be from 1 to 64"),
    ({"beam_width": 2.0}, "beam_width must be an integer or null"),
    ({"beam_width": 4, "temperature": 0.5}, "beam_width follows the model's own probabilities"),
    ({"beam_width": 4, "repetition_penalty": 1.2}, "it takes no temperature, top_k, top_p or repetition_penalty"),
    ({"beam_score": "best"}, 'beam_score must be one of "total", "mean", not "best"'),
]

BAD_SCORE = [
    ({}, 'needs a "text" field'),
    ({"text": ""}, "text is empty"),
    ({"text": 3}, "text must be a string"),
    ({"text": None}, "text must be a string"),
    ({"text": "é7"}, "no character the model knows"),
    ({"text": "".join(map(chr, range(0x4E00, 0x4E00 + 300)))}, "no character the model knows (unknown: '一'"),
    ({"text": "a", "seed": "b"}, 'unknown field "seed"'),
]


def assert_error(status, headers, data, expected_status, fragment):
    assert status == expected_status, data
    assert headers["Content-Type"] == "application/json"
    error = json.loads(data)["error"]
    assert fragment in error and "\n" not in error and len(error) < 300


BAD_BODIES = [("/v1/generate", *case) for case in BAD_GENERATE] + [("/v1/score", *case) for case in BAD_SCORE]


@pytest.mark.parametrize(("path", "body", "fragment"), BAD_BODIES)
def test_bad_bodies_get_400_and_a_json_error(port, path, body, fragment):
    assert_error(*call(port, "POST", path, body), 400, fragment)


@pytest.mark.parametrize(("method", "path", "status", "fragment"), [
    ("GET", "/nope", 404, "no such path: /nope"),
    ("POST", "/v1/nope", 404, "no such path"),
    ("GET", "/v1/generate", 405, "/v1/generate answers POST, not GET"),
    ("DELETE", "/", 405, "answers GET, HEAD, not DELETE"),
    ("PUT", "/v1/score", 405, "not PUT"),
    ("BREW", "/v1/info", 405, "not BREW"),
])
def test_unknown_paths_and_methods(port, method, path, status, fragment):
    answer = call(port, method, path, b"{}" if method != "GET" else None)
    assert_error(*answer, status, fragment)
    if status == 405:
        assert answer[1]["Allow"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_must_say_it_is_json(port, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = call(port, "POST", "/v1/generate", json.dumps({"length": 5}), headers)
    assert_error(*answer, 415, "Content-Type: application/json")
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    assert call(port, "POST", "/v1/generate", json.dumps({"length": 5}), with_charset)[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "[::2]:80"])
def test_a_page_of_another_site_made_to_point_here_is_refused(port, host):
    assert_error(*call(port, "GET", "/v1/info", headers={"Host": host}), 403, "this machine only")
    assert_error(*call(port, "POST", "/v1/generate", b"{}", {"Host": host, **JSON}), 403, "this machine only")


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:1", "[::1]:8000"])
def test_this_machine_by_name_is_served(port, host):
    assert call(port, "POST", "/v1/generate", b'{"length": 3}', {"Host": host, **JSON})[0] == 200


def test_bodies_too_large_unsized_chunked_or_cut_short(port):
    assert_error(*call(port, "POST", "/v1/score", {"text": "a" * 5000}), 413, "at most 4,096")
    unsized = raw(port, POST_SCORE + b"Host: localhost\r\n\r\n")
    assert unsized == (411, {"error": "a POST needs a Content-Length header"})
    chunked = POST_SCORE + b"Host: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}   \r\n0\r\n\r\n"
    assert raw(port, chunked)[0] == 411
    short = raw(port, POST_SCORE + b"Content-Length: 100\r\n\r\n{\"text\":", shut_write=True)
    assert short == (400, {"error": "the body ended before its Content-Length"})
    # a client that asks before sending a large body is refused before it sends it
    status, answer = raw(port, POST_SCORE + b"Content-Length: 99999999\r\nExpect: 100-continue\r\n\r\n")
    assert status == 413 and "99,999,999 bytes" in answer["error"]
    assert raw(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n") == (431, {"error": "Line too long"})
    assert call_json(port, "/v1/generate", {"length": 5})[0] == 200


def open_stream(port, length):
    """A streaming request whose first event has arrived (so it holds a slot); its connection and response."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/generate", json.dumps({"length": length, "stream": True}), JSON)
    response = conn.getresponse()
    assert response.status == 200 and response.fp.readline().startswith(b"data: ")
    return conn, response


def answers_again(port, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = call(port, "POST", "/v1/generate", {"length": 10})[0]
        if status == 200:
            return True
        assert status == 503
        time.sleep(0.05)
    return False


def test_concurrency_cap_answers_503_and_disconnects_free_their_slot(model, capfd):
    server, thread = start_server(model, max_length=10**7)
    port = server.server_port
    try:
        held = [open_stream(port, 10**7) for _ in range(2)]  # far longer than the test: they hold both slots
        status, headers, data = call(port, "POST", "/v1/generate", {"length": 10})
        assert_error(status, headers, data, 503, "busy: 2 requests already running")
        assert headers["Retry-After"] == "1"
        assert_error(*call(port, "POST", "/v1/score", {"text": "abc"}), 503, "busy")
        assert call(port, "GET", "/v1/info")[0] == 200  # no model needed, no slot taken
        for conn, response in held:  # the clients go away mid-stream
            response.close()
            conn.close()
        assert answers_again(port)
        for _ in range(3):  # more disconnects than slots: each one gives its slot back
            conn, response = open_stream(port, 10**7)
            response.close()
            conn.close()
            assert answers_again(port)
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_hangs_up_before_its_whole_answer_frees_its_slot(model, capfd):
    """Not streamed, the answer comes at the end: a client that hung up before it held its slot (and a
    CPU) until the whole length was generated; now the generation stops within a moment."""
    server, thread = start_server(model, max_length=10**7, max_concurrent=1)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        conn.request("POST", "/v1/generate", json.dumps({"length": 10**7}), JSON)  # minutes of generation
        time.sleep(0.3)
        assert call(server.server_port, "POST", "/v1/generate", {"length": 10})[0] == 503  # it holds the slot
        conn.close()
        assert answers_again(server.server_port, within=3.0)
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_concurrent_requests_within_the_cap_all_get_their_own_text(port, model):
    bodies = [{"seed": "A", "length": 200, "random_seed": i} for i in range(2)]
    answers = [None] * len(bodies)

    def ask(i):
        answers[i] = call_json(port, "/v1/generate", bodies[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for body, (status, answer) in zip(bodies, answers):
        assert status in (200, 503)  # the other test requests may still hold a slot for a moment
        if status == 200:
            assert answer["text"] == expected_text(model, **body)


# ---- under abuse: hung-up scorers, slow and half-closed clients, odd bodies and headers


@contextlib.contextmanager
def running(model, **limits):
    """A server of its own for one test (``limits`` over LIMITS); its port."""
    server, thread = start_server(model, **limits)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def until(condition, within=5.0):
    """Whether ``condition()`` comes true within ``within`` seconds (asked every 20 ms)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def post_raw(path, body, headers=b""):
    """The bytes of a JSON POST of ``body`` (bytes) with its Content-Length."""
    return (b"POST %s HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path.encode(), len(body), headers, body))


def score_body(chars):
    return json.dumps({"text": ("To be, or not to be, that is the question. " * (chars // 43 + 1))[:chars]}).encode()


@pytest.mark.parametrize("path", ["/v1/score", "/v1/inspect"])
def test_a_scoring_client_that_hangs_up_frees_its_slot(model, capfd, path):
    """Scoring (and inspecting) runs in pieces and looks for its client between them: a hang-up ends it (it used
    to hold its slot until the whole text was read, seconds here, minutes for a megabyte on a loaded machine)."""
    body = score_body(300_000)  # about 3 s of scoring
    with running(model, max_concurrent=1, max_body=len(body), max_score_chars=300_000,
                 max_inspect_chars=300_000) as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(post_raw(path, body))
            time.sleep(0.5)
            assert until(lambda: call(port, "POST", "/v1/generate", {"length": 10})[0] == 503)  # it is scoring
        assert answers_again(port, within=1.5), "the slot stayed busy after its client hung up"
    assert "Traceback" not in capfd.readouterr().err


def test_a_text_longer_than_the_score_limit_is_refused(port):
    assert_error(*call(port, "POST", "/v1/score", {"text": "a" * 1001}), 413,
                 "text is 1,001 characters; this server scores at most 1,000 (--max-score-chars)")


def slow_connections(port, n, opening=b"GET /v1/info HTTP/1.1\r\n"):
    """``n`` connections that have begun a request and go no further."""
    connections = []
    for _ in range(n):
        connections.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        connections[-1].sendall(opening)
    return connections


def test_at_the_connection_cap_the_request_waiting_longest_makes_room(model):
    with running(model, max_connections=4) as port:
        slow = slow_connections(port, 4)
        try:
            assert call(port, "GET", "/v1/info")[0] == 200
            status, answer = read_answer(slow[0])
            assert status == 503 and "at most 4 connections" in answer["error"]
            slow += slow_connections(port, 1)  # at the cap again
            assert call(port, "GET", "/v1/info")[0] == 200  # the next longest waiting makes room this time
            assert read_answer(slow[1])[0] == 503
        finally:
            for sock in slow:
                sock.close()


def test_beyond_the_cap_with_every_connection_being_answered_a_new_one_is_refused(model):
    with running(model, max_connections=2, max_length=10**7) as port:
        held = [open_stream(port, 10**7) for _ in range(2)]
        assert_error(*call(port, "GET", "/v1/info"), 503, "at most 2 connections")
        for conn, response in held:
            response.close()
            conn.close()
        assert until(lambda: call(port, "GET", "/v1/info")[0] == 200)


def test_out_of_file_descriptors_the_server_backs_off_instead_of_spinning(model, monkeypatch):
    """accept() failing with EMFILE leaves the connection waiting, so the listening socket stays readable: the
    server must wait before trying again, not spin at 100 % CPU."""
    tries = []

    def out_of_descriptors(self):
        tries.append(time.monotonic())
        raise OSError(errno.EMFILE, "Too many open files")

    with running(model) as port:
        monkeypatch.setattr(socketserver.TCPServer, "get_request", out_of_descriptors)
        with socket.create_connection(("127.0.0.1", port)):
            time.sleep(0.5)
        monkeypatch.undo()
    assert 1 <= len(tries) <= 15, f"{len(tries)} tries of accept in half a second"


def test_the_connection_cap_stays_below_the_open_file_limit(model):
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    server = make_server(model, VOCAB, ServeConfig(port=0, max_connections=10**9))
    try:
        assert soft == resource.RLIM_INFINITY or server.info["limits"]["max_connections"] < soft
    finally:
        server.server_close()


def test_a_request_must_arrive_whole_within_the_request_timeout(model):
    """A byte every 50 ms never stalls for the between-bytes timeout, yet the request gets a 408 at its deadline."""
    with running(model, request_timeout=0.5) as port, socket.create_connection(("127.0.0.1", port), 10) as sock:
        started = time.monotonic()
        for byte in b"GET /v1/info HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            if select.select([sock], [], [], 0.05)[0]:  # answered
                break
            sock.send(bytes([byte]))
        status, answer = read_answer(sock)
        assert status == 408 and time.monotonic() - started < 3
        assert answer == {"error": "the request did not arrive within 0.5 s (this server's --request-timeout)"}


def test_a_body_shorter_than_its_content_length_gets_408_at_the_deadline(model):
    with running(model, request_timeout=0.5) as port, socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(POST_SCORE + b"Content-Length: 100\r\n\r\n{\"text\":")
        started = time.monotonic()
        status, answer = read_answer(sock)
        assert status == 408 and "0.5 s" in answer["error"] and time.monotonic() - started < 3


def test_a_client_that_shuts_its_sending_side_still_gets_its_whole_answer(model):
    """As `nc -N` does after the request: the end of what it sends is not a hang-up (its answer used to be cut
    off at the server's next look for its client, 50 ms in)."""
    with running(model, max_length=8000) as port:  # about 0.1 s of generation
        for seed in range(3):
            body = json.dumps({"length": 8000, "random_seed": seed}).encode()
            status, answer = raw(port, post_raw("/v1/generate", body), shut_write=True)
            assert status == 200 and answer["text"] == expected_text(model, length=8000, random_seed=seed)


def test_deeply_nested_json_is_a_400(model):
    deep = b"[" * 100_000
    with running(model, max_body=len(deep)) as port:
        for path in ("/v1/generate", "/v1/score"):
            assert_error(*call(port, "POST", path, deep), 400, "nested too deeply")
        nested_text = b'{"text": ' + b"[" * 500 + b"]" * 500 + b"}"
        assert_error(*call(port, "POST", "/v1/score", nested_text), 400, "text must be a string, not [[[[")


@pytest.mark.parametrize("headers", [
    b"Content-Length: \xb2\r\n",
    b"Content-Length: \xb2\r\nExpect: 100-continue\r\n",
    b"Content-Length: " + b"9" * 5000 + b"\r\n",
    b"Content-Length: 1_0\r\n",
    b"Content-Length: 2\r\nContent-Length: 2\r\n",
], ids=["superscript", "superscript, expect 100-continue", "5000 digits", "underscore", "twice"])
def test_a_content_length_that_is_not_one_decimal_number_is_a_400(port, headers):
    status, answer = raw(port, POST_SCORE + headers + b"\r\n{}")
    assert status == 400 and "Content-Length" in answer["error"]


def test_score_shows_at_most_twenty_unknown_characters_and_counts_them_all(port):
    unknown = "".join(map(chr, range(0x4E00, 0x4E00 + 100)))
    status, answer = call_json(port, "/v1/score", {"text": "To be" + unknown + unknown[:5]})
    assert status == 200 and answer["oov_chars"] == 105 and answer["chars"] == 5
    assert len(answer["oov"]) == 20 and all(answer["oov"][c] == 2 for c in unknown[:5])  # the most frequent


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (Debian: apt-get install chromium)")
def test_page_streams_generated_text_in_a_headless_browser(model, tmp_path):
    server, thread = start_server(model, max_length=20_000)
    query = "seed=ROMEO:&length=20000&temperature=0.8&top_k=20&random_seed=3&run=1"
    browser = Chromium(f"http://127.0.0.1:{server.server_port}/?{query}", str(tmp_path / "profile"))
    try:
        text = "document.getElementById('output').textContent"
        partial = browser.wait_for(f"{text}.length > 6 && {text}")  # text on the page while it is generated
        status = browser.wait_for("(s => s.includes('characters in') && s)(document.getElementById('status')"
                                  ".textContent)")
        shown = browser.evaluate(text)
        model_line = browser.evaluate("document.getElementById('model').textContent")
        # Stop, as soon as the next text shows: the page says so and the server frees the slot
        browser.evaluate("""(() => {
            document.getElementById('generate').click();
            const poll = setInterval(() => {
                if (document.getElementById('output').textContent.length > 6) {
                    document.getElementById('stop').click();
                    clearInterval(poll);
                }
            }, 5);
        })()""")
        stopped = browser.wait_for("(s => s.startsWith('stopped after') && s)(document.getElementById('status')"
                                   ".textContent)")
        assert answers_again(server.server_port)
        # the score box
        browser.evaluate("document.getElementById('score-text').value = 'To be, or not to be: caf\u00e9';"
                         "document.getElementById('score').click()")
        scored = browser.wait_for("(s => s.includes('bits/char') && s)(document.getElementById('score-result')"
                                  ".textContent)")
    finally:
        browser.close()
        server.shutdown()
        server.server_close()
    expected = expected_text(model, "ROMEO:", 20_000, 0.8, 20, None, 3)
    assert shown == expected and expected.startswith(partial)
    assert "20000 characters" in status and "random seed 3" in status
    assert model_line.startswith("LSTM 16 × 2")  # the model's description, read from /v1/info
    assert int(re.search(r"stopped after (\d+) characters", stopped).group(1)) < 20_000
    reference = evaluate_text(model, VOCAB, "To be, or not to be: café")
    assert f"{reference.bpc:.3f} bits/char" in scored and f"{reference.chars} characters scored" in scored
    assert '1 unknown left out: "é"' in scored


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (Debian: apt-get install chromium)")
def test_page_stop_field_and_beam_toggle_in_a_headless_browser(model, tmp_path):
    """The page's beam search (from its address) and its stop field (typed, with an escape) give the library's
    texts, and the status shows the log-probability and how the text ended."""
    server, thread = start_server(model)
    query = "seed=KING:&length=300&stop_at=%5Cn&beam=1&run=1"
    browser = Chromium(f"http://127.0.0.1:{server.server_port}/?{query}", str(tmp_path / "profile"))
    output, status = "document.getElementById('output').textContent", "document.getElementById('status').textContent"
    try:
        beam_status = browser.wait_for(f"(s => s.includes('characters') && s.includes(' in ') && s)({status})")
        beam_text = browser.evaluate(output)
        disabled = browser.evaluate("document.getElementById('temperature').disabled")
        browser.evaluate("""(() => {
            document.getElementById('beam').click();
            document.getElementById('stop_at').value = 'e';
            document.getElementById('random_seed').value = '3';
            document.getElementById('generate').click();
        })()""")
        sampled_status = browser.wait_for(f"(s => s.includes('random seed 3') && s)({status})")
        sampled_text = browser.evaluate(output)
        address = browser.evaluate("location.search")
    finally:
        browser.close()
        server.shutdown()
        server.server_close()
    beam = start_draw(model, VOCAB, 1, "KING:", length=300, stop="\n", beam_width=8)
    assert beam_text == "".join(p[0] for p in beam) and disabled
    assert f"log-probability {beam.logprob[0]:.2f}" in beam_status
    assert ("ended at the stop text" in beam_status) == bool(beam.stopped[0])
    sampled = start_draw(model, VOCAB, 1, "KING:", length=300, stop="e", temperature=0.8, random_seed=3, scores=True)
    assert sampled_text == "".join(p[0] for p in sampled) and "e" not in sampled_text[5:]
    assert f"log-probability {sampled.logprob[0]:.2f}" in sampled_status and "stop_at=e" in address


def test_a_byte_model_reads_and_writes_text_in_its_encoding():
    vocab = Vocab(tuple(range(256)), bytes_mode=True)
    model = CharRNN(ModelConfig(vocab_size=256, model="gru", hidden_size=8, num_layers=1), rng=np.random.default_rng(1))
    server = make_server(model, vocab, ServeConfig(port=0, quiet=True))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_port
        status, answer = call_json(port, "/v1/generate", {"seed": "Café", "length": 50, "random_seed": 5})
        assert status == 200
        assert answer["text"] == "".join(generate(model, vocab, "Café".encode(), length=50, random_seed=5))
        assert answer["text"].startswith("Café")
        status, answer = call_json(port, "/v1/score", {"text": "Café"})
        assert status == 200 and answer["chars"] == len("Café".encode()) and answer["oov"] == {}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "model.npz"
    save_checkpoint(str(path), Checkpoint(model, VOCAB, {"step": 12}))
    return str(path)


def start_command(*args, open_files=None):
    """``charrnn serve`` in a subprocess on a free port (with at most ``open_files`` file descriptors, as under
    `ulimit -n`); the process and its port."""
    limit = open_files and (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
    process = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", *args, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    line = process.stdout.readline()
    match = re.search(r"at http://127\.0\.0\.1:(\d+)/ ", line)
    assert match, line + process.stderr.read()
    return process, int(match.group(1))


def stop_command(process):
    """Kill a ``start_command`` process; what it wrote on stderr."""
    process.kill()
    process.wait()
    err = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    return err


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_command_serves_and_stops_cleanly_on_a_signal(checkpoint, model, signum, status):
    process, port = start_command(checkpoint, "--max-length", "1000000", "--max-concurrent", "1")
    try:
        body = {"seed": "A", "length": 50, "random_seed": 9}
        code, answer = call_json(port, "/v1/generate", body)
        assert (code, answer["text"], answer["random_seed"]) == (200, expected_text(model, **body), 9)
        assert call_json(port, "/v1/generate", {"length": 1_000_001})[0] == 400
        info = json.loads(call(port, "GET", "/v1/info")[2])
        assert info["step"] == 12 and info["checkpoint"] == "model.npz"  # its name, not where it lies
        assert info["limits"]["max_length"] == 1_000_000 and info["limits"]["max_concurrent"] == 1
        conn, response = open_stream(port, 1_000_000)  # a request in flight does not hold the server up
        assert call(port, "POST", "/v1/score", {"text": "A"})[0] == 503

        def knock():  # requests arriving as the signal does (the server is often starting a thread then)
            while process.poll() is None:
                with contextlib.suppress(OSError, http.client.HTTPException):  # the server may stop mid-answer
                    call(port, "GET", "/v1/info")

        knocking = threading.Thread(target=knock)
        knocking.start()
        time.sleep(0.2)
        process.send_signal(signum)
        assert process.wait(10) == status
        knocking.join(10)
        response.close()
        conn.close()
    finally:
        err = stop_command(process)
    assert "Traceback" not in err and '"POST /v1/generate HTTP/1.1" 200' in err  # the access log


class SlowClients:
    """``n`` connections that each begin a request, then send a byte of it now and then and nothing more."""

    def __init__(self, port, n):
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
        for sock in self.socks:
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nContent-Type: application/json\r\n")

    def hold(self, seconds, every=0.5):
        for _ in range(round(seconds / every)):
            time.sleep(every)
            for sock in self.socks:
                with contextlib.suppress(OSError):  # one the server has closed
                    sock.send(b"X")

    def close(self):
        for sock in self.socks:
            sock.close()


def cpu_seconds(pid):
    """User and system CPU seconds of process ``pid`` so far (Linux's /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads a process's CPU time from Linux's /proc")
def test_a_server_with_256_file_descriptors_holds_under_abuse(checkpoint):
    """What a hostile probe found, each on one `charrnn serve` started under `ulimit -n 256`."""
    process, port = start_command(checkpoint, "--max-score-chars", "1000000", "--request-timeout", "2", "-q",
                                  open_files=256)
    try:
        scorers = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        for sock in scorers:  # a megabyte each, then they hang up while it is scored
            sock.sendall(post_raw("/v1/score", score_body(1_000_000)))
        time.sleep(1.0)
        assert call(port, "POST", "/v1/generate", {"length": 10})[0] == 503  # all four slots are scoring
        for sock in scorers:
            sock.close()
        assert answers_again(port, within=5.0)

        assert raw(port, post_raw("/v1/score", b"[" * 100_000))[0] == 400
        assert raw(port, POST_SCORE + b"Content-Length: \xb2\r\n\r\n{}")[0] == 400
        for seed in range(3):  # half-closed, as by `nc -N`
            body = json.dumps({"length": 2000, "random_seed": seed}).encode()
            status, answer = raw(port, post_raw("/v1/generate", body), shut_write=True)
            assert status == 200 and len(answer["text"]) == 2000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(POST_SCORE + b"Content-Length: 100\r\n\r\n{")
            assert read_answer(sock)[0] == 408
        status, headers, data = call(port, "GET", "/v1/info")
        assert "Python/" not in headers["Server"] and json.loads(data)["checkpoint"] == "model.npz"

        slow = SlowClients(port, 600)
        try:
            cpu, started = cpu_seconds(process.pid), time.monotonic()
            slow.hold(1.0)
            asked = time.monotonic()
            assert call(port, "POST", "/v1/generate", {"length": 10})[0] == 200 and time.monotonic() - asked < 5
            slow.hold(1.0)
            share = (cpu_seconds(process.pid) - cpu) / (time.monotonic() - started)
            assert share < 0.5, f"the server used {share:.0%} of a CPU holding 600 slow connections"
        finally:
            slow.close()
    finally:
        err = stop_command(process)
    assert "Traceback" not in err and "note: at most 224 connections at once" in err  # 256 less FD_RESERVE


def test_command_refuses_a_bad_checkpoint_and_a_port_in_use(checkpoint, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a checkpoint")
    done = subprocess.run([sys.executable, "-m", "charrnn", "serve", str(bad)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "not a charrnn checkpoint" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "charrnn", "serve", checkpoint, "--port", str(port)],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


def test_a_fault_of_the_servers_is_a_500_or_an_error_event_and_it_goes_on(model, monkeypatch, capfd):
    class Failing:  # a draw that fails after its first piece
        def __iter__(self):
            yield ["ROMEO:"]
            raise RuntimeError("a bug")

    monkeypatch.setattr("charrnn.serve.server.start_draw", lambda *args, **kwargs: Failing())
    server, thread = start_server(model)
    try:
        port = server.server_port
        assert_error(*call(port, "POST", "/v1/generate", {"length": 5}), 500, "internal error")
        status, _, data = call(port, "POST", "/v1/generate", {"length": 5, "stream": True})
        assert status == 200
        assert parse_events(data) == [("message", {"text": "ROMEO:"}), ("error", {"error": ANY_INTERNAL})]
        monkeypatch.undo()
        assert call_json(port, "/v1/generate", {"length": 5})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    assert "RuntimeError: a bug" in capfd.readouterr().err  # the traceback is in the server's log


ANY_INTERNAL = "internal error (see the server's log)"


# ---- a gpt served


def test_serve_scores_and_generates_with_a_gpt(small_text):
    import http.client
    import threading

    from charrnn.inference.evaluate import evaluate_text
    from charrnn.io.corpus import Vocab
    from charrnn.serve.server import ServeConfig, make_server

    vocab = Vocab(tuple("\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    model = CharGPT(GPTConfig(len(vocab), hidden_size=16, num_layers=1, num_heads=2, context_length=8),
                    rng=np.random.default_rng(0))
    server = make_server(model, vocab, ServeConfig(port=0, quiet=True, timeout=5, max_concurrent=2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        text = "To be, or not to be, that is the question."
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        conn.request("POST", "/v1/score", json.dumps({"text": text}), {"Content-Type": "application/json"})
        scored = json.loads(conn.getresponse().read())
        assert scored["chars"] == len(text)
        assert scored["loss"] == pytest.approx(evaluate_text(model, vocab, text).loss, rel=1e-6)
        conn.request("POST", "/v1/generate", json.dumps({"seed": "To", "length": 30, "random_seed": 1}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and len(response.read()) > 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
