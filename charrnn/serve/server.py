"""An HTTP face over sampling and scoring, from the standard library alone (``charrnn serve``).

    server = make_server(ckpt.model, ckpt.vocab, ServeConfig(port=0))
    server.serve_forever()          # in a thread, if you like; server.url says where

Endpoints (docs/server.md is the reference):
    GET  /             one self-contained page to play with (charrnn/page.html)
    GET  /v1/info      the model and the server's limits
    POST /v1/generate  {"seed", "length", "temperature", "top_k", "top_p", "random_seed", "stream", "stop",
                        "repetition_penalty", "repetition_window", "beam_width", "beam_score"}
                       -> {"text", "random_seed", "logprob", "chars", "stopped_by"}, or server-sent events
                       with "stream": true
    POST /v1/score     {"text"} -> {"loss", "bpc", "perplexity", "chars", "oov_chars", "oov"}
    POST /v1/inspect   {"text", "top_k", "feature", "top"} -> each character's log-probability and top-K, and the
                       units that track the feature: the data the page's inspect view draws (inference/pages.py)

Every refusal is a 4xx (503 when full) with a JSON body ``{"error": "one line"}``. A model's forward
pass keeps its buffers on the model, so threads cannot share one: each request holds one of
``max_concurrent`` replicas for its duration, and with none free it is answered 503 at once. A request must
arrive whole within ``request_timeout`` (408 otherwise), and at most ``max_connections`` are open at once
(connections.py: the one longest in sending its request makes room for a new one). Request bodies are read
and checked by requests.py.
"""

import contextlib
import errno
import io
import ipaddress
import json
import os
import queue
import signal
import socket
import socketserver
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ..inference.evaluate import evaluate_text
from ..inference.items import Sample
from ..inference.pages import script, text_page
from ..inference.sample import start_draw
from ..io.corpus import quoted
from ..models.registry import build_model
from .connections import Connections, DeadlineReader, RequestTimeout, connection_cap
from .requests import RequestError, content_length, cut, model_text, parse_generate, parse_inspect, parse_score

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")
FLUSH_SECONDS = 0.05  # a stream sends what has been generated at most this often (and a client is looked for)
ACCEPT_BACKOFF = 0.1  # seconds to wait after accept() fails for want of file descriptors, rather than spin
OOV_SHOWN = 20  # the most frequent characters outside the vocabulary that a score names (it counts them all)
SERVER = "charrnn"  # the Server header: no versions, which would tell a visitor what flaws to try
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # an interim answer, which every HTTP/1.1 client passes over
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    max_length: int = 2000  # characters one request may generate
    max_concurrent: int = 4  # requests served at once (model replicas); more are answered 503
    max_seed: int = 2000  # characters of seed (the seed is primed in one pass, its buffers kept per replica)
    max_body: int = 1 << 20  # bytes of request body
    max_score_chars: int = 100_000  # characters of text one /v1/score request may score
    max_inspect_chars: int = 20_000  # characters one /v1/inspect request may read (its answer: ~100 bytes each)
    max_connections: int = 256  # connections open at once (fewer where the open-file limit says so)
    request_timeout: float = 30.0  # seconds a client has to send its whole request, headers and body
    timeout: float = 30.0  # seconds a client may stall while receiving its answer
    quiet: bool = False  # no access log on stderr


# ---- the server ----


class CharRNNServer(ThreadingHTTPServer):
    """A threading HTTP server over one model; ``replicas`` holds a model copy per concurrent request."""

    daemon_threads = True  # a stream still running never holds up Ctrl-C
    request_queue_size = 512  # connections the system accepts before the server does (a burst: more wait a second)

    def __init__(self, model, vocab, config, info=None):
        self.model, self.vocab, self.config = model, vocab, config
        cap = connection_cap(config.max_connections)
        self.connections = Connections(cap, _answer(HTTPStatus.SERVICE_UNAVAILABLE, f"busy: this server holds at "
                                                    f"most {cap:,} connections at once; try again shortly"))
        limits = {k: getattr(config, k) for k in ("max_length", "max_seed", "max_concurrent", "max_body",
                                                  "max_score_chars", "max_inspect_chars", "request_timeout")}
        self.info = {**(info or {}), "model": asdict(model.config), "vocab_size": len(vocab),
                     "parameters": model.num_params(), "bytes_mode": vocab.bytes_mode,
                     "limits": {**limits, "max_connections": cap}}
        self.replicas = queue.SimpleQueue()
        self.replicas.put(model)
        for _ in range(config.max_concurrent - 1):
            self.replicas.put(build_model(model.config, params=model.params))
        with open(PAGE, encoding="utf-8") as f:  # the inspect view's drawing is the inspect pages' (inspect.js)
            self.page = f.read().replace("/* inspect.js */", script()).encode("utf-8")
        if ":" in config.host:
            self.address_family = socket.AF_INET6
        super().__init__((config.host, config.port), Handler)
        self.loopback = ipaddress.ip_address(self.server_address[0]).is_loopback

    def server_bind(self):
        # HTTPServer.server_bind also looks up the host's DNS name, which can stall for seconds offline
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def url(self):
        host = f"[{self.server_name}]" if ":" in self.server_name else self.server_name
        return f"http://{host}:{self.server_port}/"

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(ACCEPT_BACKOFF)  # the connection still waits to be accepted: at once would fail again
            raise

    def process_request(self, request, client_address):
        """A thread for the connection, if it is admitted (connections.py); else a 503 and the connection closed."""
        if self.connections.admit(request):
            super().process_request(request, client_address)
        else:
            self.connections.refuse(request)
            self.shutdown_request(request)

    def shutdown_request(self, request):
        self.connections.drop(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        """Whatever escapes a handler: one line in the log, and the server goes on."""
        error = sys.exc_info()[1]
        if not isinstance(error, DISCONNECTS):
            print(f"charrnn serve: request from {client_address[0]} failed: {error!r}", file=sys.stderr)


def make_server(model, vocab, config=None, info=None):
    """A CharRNNServer bound to ``config.host``/``config.port`` (OSError if it cannot listen there)."""
    return CharRNNServer(model, vocab, config or ServeConfig(), info)


def serve_until_signal(server):
    """Serve until SIGINT (Ctrl-C) or SIGTERM; close the server and return the signal's number.

    Requests still running end with the process (their threads are daemons); nothing is written to disk.
    """
    def stop(signum, frame):
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    except _Stopped as stopped:
        return stopped.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()


def _answer(status, error):
    """A whole JSON error answer, as bytes to send on a connection that gets no thread of its own."""
    body = json.dumps({"error": error}).encode()
    head = (f"HTTP/1.1 {status.value} {status.phrase}\r\nServer: {SERVER}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class _Stopped(BaseException):  # as KeyboardInterrupt: socketserver catches Exception around a request
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class Handler(BaseHTTPRequestHandler):
    """Routes a request, checks it, answers JSON (or a page, or an event stream); never raises."""

    protocol_version = "HTTP/1.1"  # every answer still closes its connection (Connection: close)
    routes = {"/": {"GET": "page"}, "/v1/info": {"GET": "info"},
              "/v1/generate": {"POST": "generate"}, "/v1/score": {"POST": "score"},
              "/v1/inspect": {"POST": "inspect"}}

    def setup(self):
        self.timeout = self.server.config.timeout  # for writing the answer
        super().setup()
        self.rfile.close()  # the socket's own reader, replaced by one that keeps the request's deadline
        self.rfile = io.BufferedReader(DeadlineReader(self.connection,
                                                      time.monotonic() + self.server.config.request_timeout))
        self.requestline = self.request_version = self.command = ""  # what an answer needs before they are read
        self.probed = False  # whether an interim answer has gone out to tell a half-closed client from a gone one

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except RequestTimeout:  # while the request line or a header was still arriving
            self.send_late()

    def version_string(self):
        return SERVER

    def __getattr__(self, name):
        if name.startswith("do_"):  # every method, known or not, is routed (405 where it does not fit)
            return self.dispatch
        raise AttributeError(name)

    def dispatch(self):
        self.close_connection = True
        self.body_read = self.streaming = False
        path = urlsplit(self.path).path
        methods = self.routes.get(path)
        try:
            self.check_host()
            if methods is None:
                raise RequestError(f"no such path: {path} (try /, /v1/info, /v1/generate, /v1/score, /v1/inspect)",
                                   HTTPStatus.NOT_FOUND)
            method = "GET" if self.command == "HEAD" and "GET" in methods else self.command
            if method not in methods:
                allow = ", ".join([*methods, *(["HEAD"] if "GET" in methods else [])])
                raise RequestError(f"{path} answers {allow}, not {self.command}", HTTPStatus.METHOD_NOT_ALLOWED,
                                   [("Allow", allow)])
            getattr(self, "serve_" + methods[method])()
        except RequestError as e:
            self.send_json(e.status, {"error": str(e)}, e.headers)
        except RequestTimeout:  # while the body was still arriving
            self.send_late()
        except DISCONNECTS:
            self.log_message("client went away")
        except Exception:  # a fault of ours: the client gets a 500 (or an error event), the log the traceback
            traceback.print_exc()
            error = {"error": "internal error (see the server's log)"}
            if self.streaming:
                self.send_event(error, "error")
            else:
                self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, error)

    # ---- endpoints ----

    def serve_page(self):
        self.send_bytes(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")

    def serve_info(self):
        self.send_json(HTTPStatus.OK, self.server.info)

    def serve_generate(self):
        request = parse_generate(self.read_body(), self.server.vocab, self.server.config)
        vocab = self.server.vocab
        with self.replica() as model:
            draw = start_draw(model, vocab, 1, model_text(vocab, request.seed), options=request.options,
                              random_seed=request.random_seed, scores=True)
            pieces = (batch[0] for batch in draw)
            with contextlib.closing(pieces):
                started = time.monotonic()
                if request.stream:
                    self.send_text_events(pieces)
                else:
                    text = self.collect(pieces)
        # the replica is back before the answer ends: a client's next request finds it free
        scores = Sample.of("", draw, 0).to_json()
        del scores["text"]  # the text went out as it came, or is answered whole below
        result = {"random_seed": request.random_seed, **scores}
        if request.stream:
            self.send_event({**result, "seconds": round(time.monotonic() - started, 3)}, "done")
        else:
            self.send_json(HTTPStatus.OK, {"text": text, **result})

    def serve_inspect(self):
        request = parse_inspect(self.read_body(), self.server.model, self.server.config)
        vocab = self.server.vocab
        with self.replica() as model:
            try:
                data = text_page(model, vocab, model_text(vocab, request.text), request.top_k, request.feature,
                                 request.top, check=self.hang_up_check())
            except ValueError as e:  # a feature the same for every character: nothing to correlate with
                raise RequestError(str(e)) from None
        if all(lp is None for lp in data["logprob"]):
            raise RequestError("text has no character the model knows")
        self.send_json(HTTPStatus.OK, data)

    def serve_score(self):
        text = parse_score(self.read_body(), self.server.config)
        vocab = self.server.vocab
        with self.replica() as model:
            result = evaluate_text(model, vocab, model_text(vocab, text), check=self.hang_up_check())
        if result.chars == 0:
            unknown = cut(", ".join(map(quoted, result.oov)))
            raise RequestError(f"text has no character the model knows (unknown: {unknown})")
        self.send_json(HTTPStatus.OK, result.to_json(max_oov=OOV_SHOWN))

    def collect(self, pieces):
        """The whole text of ``pieces``; a client that hangs up meanwhile ends the generation, as a stream's
        does, so its slot is free again."""
        check, parts = self.hang_up_check(), []
        for piece in pieces:
            parts.append(piece)
            check()
        return "".join(parts)

    def hang_up_check(self):
        """A function to call as often as you like while an answer is worked out: it looks for the client every
        FLUSH_SECONDS and raises ConnectionAbortedError once it has hung up."""
        checked = time.monotonic()

        def check():
            nonlocal checked
            if time.monotonic() - checked >= FLUSH_SECONDS:
                if self.client_gone():
                    raise ConnectionAbortedError("the client hung up before its answer was ready")
                checked = time.monotonic()

        return check

    def client_gone(self):
        """Whether the client has hung up (its request is read). The end of what it sends is not enough: a client
        may shut its sending side and still wait for the answer (`nc -N`, a half-close). So the first time, an
        interim 100 Continue goes out (HTTP/1.1 clients pass over it); a client that has closed its socket
        answers it with a reset (from this machine, before the send returns; else seen at a later look). An
        HTTP/1.0 client (a proxy, often) cannot be sent one: the end of what it sends is taken for a hang-up."""
        try:
            if _peek(self.connection) != b"":  # nothing more from the client, or more bytes: it is there
                return False
            if not self.probed:
                if self.request_version == "HTTP/1.0":  # no interim answer to ask with: taken at its word
                    return True
                self.connection.sendall(CONTINUE)
                self.probed = True
            return self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        except OSError:
            return True

    def send_text_events(self, pieces):
        """Event stream headers, then ``data: {"text": ...}`` events as the text comes (docs/server.md)."""
        first = next(pieces)  # primes the model: a fault there is still an ordinary error answer
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")  # tells a proxy in front not to hold the stream back
        self.send_header("Connection", "close")
        self.end_headers()
        self.streaming = True
        self.send_event({"text": first})
        buffered, sent = [], time.monotonic()
        for piece in pieces:
            buffered.append(piece)
            if time.monotonic() - sent >= FLUSH_SECONDS:
                self.send_event({"text": "".join(buffered)})
                buffered, sent = [], time.monotonic()
        if buffered:
            self.send_event({"text": "".join(buffered)})

    def send_event(self, data, event=None):
        head = f"event: {event}\n" if event else ""
        self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())

    # ---- plumbing ----

    def check_host(self):
        """On a loopback address, answer only requests addressed to this machine by name: a page of
        another site whose name was made to point here (DNS rebinding) is the browser's same origin,
        and only its Host header gives it away."""
        if not self.server.loopback or "Host" not in self.headers:
            return
        host = self.headers["Host"].strip().lower()
        name = host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        if name not in LOCAL_NAMES:
            raise RequestError(f"this server answers requests for this machine only, not for host {name!r}",
                               HTTPStatus.FORBIDDEN)

    def replica(self):
        """A context holding one model replica; RequestError 503 when all are busy."""
        replicas = self.server.replicas
        try:
            model = replicas.get_nowait()
        except queue.Empty:
            n = self.server.config.max_concurrent
            raise RequestError(f"busy: {n} request{'s' if n > 1 else ''} already running; try again shortly",
                               HTTPStatus.SERVICE_UNAVAILABLE, [("Retry-After", "1")]) from None
        return _Held(replicas, model)

    def read_body(self):
        """The request's body (RequestTimeout if it has not arrived by the request's deadline)."""
        if self.headers.get_content_type() != "application/json":
            # also what keeps other web sites' pages from posting here: a cross-site JSON post needs a
            # CORS preflight (OPTIONS), which this server refuses
            raise RequestError("send the body as JSON, with the header Content-Type: application/json",
                               HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        length = self.body_length()
        raw = self.rfile.read(length)
        self.body_read = True
        if len(raw) < length:
            raise RequestError("the body ended before its Content-Length")
        self.arrived()
        return raw

    def body_length(self):
        """The body's length in bytes, as its one Content-Length says, within the server's limit."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError("send the body with a Content-Length, not chunked", HTTPStatus.LENGTH_REQUIRED)
        values = self.headers.get_all("Content-Length", [])
        if not values:
            raise RequestError("a POST needs a Content-Length header", HTTPStatus.LENGTH_REQUIRED)
        length = content_length(values[0])
        if len(values) > 1 or length is None:
            raise RequestError(f"bad Content-Length: {cut(', '.join(values), 40)!r} (one decimal number, please)")
        if length > self.server.config.max_body:
            raise RequestError(f"the body is {length:,} bytes; this server takes at most "
                               f"{self.server.config.max_body:,}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return length

    def handle_expect_100(self):
        """Refuse a body too large (or mis-sized) before the client sends it (curl asks first for large uploads)."""
        try:
            self.body_length()
        except RequestError as e:
            self.close_connection = True
            self.send_json(e.status, {"error": str(e)}, e.headers)
            return False
        return super().handle_expect_100()

    def send_response_only(self, code, message=None):
        if code >= 200:  # an answer, not an interim one: the request is in
            self.arrived()
        super().send_response_only(code, message)

    def arrived(self):
        """The request is in: its connection can no longer be closed to make room for another."""
        if not self.server.connections.arrived(self.connection):
            raise ConnectionAbortedError("the connection was closed to make room for another")

    def send_late(self):
        self.close_connection = self.body_read = True
        timeout = self.server.config.request_timeout
        self.send_json(HTTPStatus.REQUEST_TIMEOUT,
                       {"error": f"the request did not arrive within {timeout:g} s (this server's --request-timeout)"})

    def send_json(self, status, obj, headers=()):
        self.send_bytes(status, json.dumps(obj, allow_nan=False).encode(), "application/json", headers)

    def send_bytes(self, status, body, content_type, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if status >= 400:
            self.discard_body()

    def discard_body(self):
        """Read an unread request body (up to a bound) before closing: closing on unread data resets the
        connection, and the client could lose the answer."""
        if getattr(self, "body_read", True) or self.command in ("GET", "HEAD"):
            return
        length = content_length(self.headers.get("Content-Length", "")) if self.headers else None
        left = min(length or 0, 16 * self.server.config.max_body)
        try:
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
        except (OSError, ValueError, RequestTimeout):
            pass
        self.body_read = True

    def send_error(self, code, message=None, explain=None):
        """The base class's errors (malformed request line, headers too long, ...) as JSON too."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.send_json(code, {"error": message or phrase})

    def log_message(self, format, *args):
        if not self.server.config.quiet:
            super().log_message(format, *args)


def _peek(sock):
    """The next byte the client has sent and the server not yet read, b"" at their end, None if none has come."""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    finally:
        sock.settimeout(timeout)


class _Held:
    """Gives a model replica back to the pool when the request is done with it, however it ends."""

    def __init__(self, replicas, model):
        self.replicas, self.model = replicas, model

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        self.replicas.put(self.model)
