"""Headless Chromium for the tests of pages (the server's, the inspect pages): ``Chromium(url, profile)`` opens a
page and answers ``evaluate(js)`` and ``wait_for(js)``; ``CHROMIUM`` is None where no browser is installed."""

import contextlib
import json
import os
import select
import shutil
import subprocess
import time

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the browser): the
    test reads the page's DOM when the page says it is done, however long the stream takes."""

    def __init__(self, url, profile):
        self.to_browser, self.from_browser = os.pipe(), os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        redirect = f'exec "$0" "$@" 3<&{self.to_browser[0]} 4>&{self.from_browser[1]}'
        self.process = subprocess.Popen(["bash", "-c", redirect, CHROMIUM, *flags, url],  # sh: fds 0-9 only
                                        pass_fds=(self.to_browser[0], self.from_browser[1]),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(self.to_browser[0])
        os.close(self.from_browser[1])
        self.pending, self.next_id = b"", 0
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def send(self, method, session=None, timeout=30, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser[1], json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:  # events and other answers go by
            while b"\0" not in self.pending:
                ready = select.select([self.from_browser[0]], [], [], max(0, deadline - time.monotonic()))[0]
                chunk = os.read(self.from_browser[0], 1 << 16) if ready else b""
                assert chunk, f"no answer to {method} from chromium: {self.process.stderr.read1()[-2000:]}"
                self.pending += chunk
            raw, self.pending = self.pending.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                assert "error" not in answer, answer
                return answer["result"]

    def evaluate(self, expression):
        return self.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True)["result"].get(
            "value")

    def wait_for(self, expression, timeout=60):
        """The value of ``expression`` once it is truthy (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"the page never got to: {expression}"
            time.sleep(0.05)
        return value

    def close(self):
        with contextlib.suppress(OSError, AssertionError):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(10)
        finally:
            self.process.kill()
            self.process.wait()
            self.process.stderr.close()
            os.close(self.to_browser[1])
            os.close(self.from_browser[0])
