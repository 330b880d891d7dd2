"""serve under load and abuse (a part of `python -m benchmarks serve`): generate from 1, 8 and 50 clients at once,
alone, while 500 slow connections are held, and while four scoring clients hang up.

    rows = load_rows(checkpoint, length=200, seconds=4.0, rounds=3)     # a dict per (background, clients)

Each background gets a `charrnn serve` subprocess of its own (default limits: 4 requests at once, 256
connections). A client is a thread posting /v1/generate in a loop; a 503 is asked again after 10 ms, and a
latency runs from the first try to the answer. The slow connections each send a header line a second and never
end their request; one the server closes is opened again the next second. A scorer posts the longest text the
server scores, hangs up half a second later and waits half a second. Figures: answers per second (best round,
with the range over rounds), p50/p99 latency and 503s per second of that round, the server's CPU (in cores) over
it, and its peak RSS over the background's whole run.
"""

import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time

from benchmarks import harness

CLIENTS = (1, 8, 50)
SLOW_CONNECTIONS = 500
SCORERS = 4
SLOW_OPENING = b"POST /v1/score HTTP/1.1\r\nContent-Type: application/json\r\n"


def load_rows(checkpoint, length, seconds, rounds, smoke=False):
    """The table's rows: for each background and number of clients, the figures of its best round."""
    slow = 20 if smoke else SLOW_CONNECTIONS
    backgrounds = [("alone", None), (f"{slow} slow connections", lambda port, stop: hold_slow(port, slow, stop)),
                   (f"{SCORERS} scorers hanging up", lambda port, stop: hang_up_scoring(port, stop, smoke))]
    rows = []
    for name, background in backgrounds:
        server, port = start_server(checkpoint, length)
        stop = threading.Event()
        threads = [threading.Thread(target=background, args=(port, stop))] if background else []
        try:
            post(port, {"length": length})  # warm-up
            for t in threads:
                t.start()
            time.sleep(0 if smoke else 1.0)  # the background under way
            results = {n: [] for n in CLIENTS[:2] if smoke} or {n: [] for n in CLIENTS}
            for _ in range(rounds):
                for clients, done in results.items():
                    done.append(measure(server.pid, port, clients, length, seconds))
            peak = harness.process_peak_rss_mb(server.pid)
        finally:
            stop.set()
            for t in threads:
                t.join()
            server.terminate()
            server.wait()
        rows += [best_row(name, clients, done, peak) for clients, done in results.items()]
    return rows


def start_server(checkpoint, length):
    cmd = [sys.executable, "-m", "charrnn", "serve", checkpoint, "--port", "0", "-q", "--max-length", f"{length}"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=harness.ROOT)
    return server, int(re.search(r":(\d+)/", server.stdout.readline()).group(1))


def post(port, body, path="/v1/generate"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def measure(pid, port, clients, length, seconds):
    """``clients`` threads generating for ``seconds``: their latencies, 503s, and the server's CPU seconds."""
    latencies, refused, end = [], [], time.perf_counter() + seconds

    def client(i):
        while time.perf_counter() < end:
            started = time.perf_counter()
            while (status := post(port, {"length": length, "random_seed": i})) == 503:
                refused.append(1)
                time.sleep(0.01)
            assert status == 200, f"the server answered {status}"
            latencies.append(time.perf_counter() - started)

    cpu, started = harness.cpu_seconds(pid), time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"latencies": sorted(latencies), "wall": wall, "refused": len(refused),
            "cores": (harness.cpu_seconds(pid) - cpu) / wall}


def best_row(background, clients, rounds, peak):
    rates = [len(r["latencies"]) / r["wall"] for r in rounds]
    best = rounds[rates.index(max(rates))]
    lat = best["latencies"]
    return {"background": background, "clients": clients, "rate": max(rates),
            "range": f"{min(rates):,.0f}-{max(rates):,.0f}", "p50": 1000 * lat[len(lat) // 2],
            "p99": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], "refused": best["refused"] / best["wall"],
            "cores": best["cores"], "rss": peak}


def hold_slow(port, n, stop):
    """``n`` connections sending a header line a second, never ending their request; closed ones are reopened."""
    def opened():
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(SLOW_OPENING)
        sock.setblocking(False)
        return sock

    socks = [opened() for _ in range(n)]
    while not stop.wait(1.0):
        for i, sock in enumerate(socks):
            if not still_waiting(sock):
                sock.close()
                socks[i] = opened()
    for sock in socks:
        sock.close()


def still_waiting(sock):
    """Whether the server still waits for the rest of this (non-blocking) slow connection's request: if so, it gets
    one more header line."""
    try:
        sock.recv(1, socket.MSG_PEEK)  # an answer (503, 408) or the end: the server has let it go
        return False
    except BlockingIOError:
        pass
    except OSError:
        return False
    try:
        sock.send(b"X-Slow: 1\r\n")
        return True
    except OSError:
        return False


def hang_up_scoring(port, stop, smoke):
    """``SCORERS`` clients posting the longest text the server scores, each hanging up half a second later."""
    text = ("To be, or not to be, that is the question. " * 2400)[: 2000 if smoke else 100_000]
    body = json.dumps({"text": text}).encode()
    request = (b"POST /v1/score HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))

    def scorer():
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request)
                stop.wait(0.5)
            stop.wait(0.5)

    threads = [threading.Thread(target=scorer) for _ in range(SCORERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
