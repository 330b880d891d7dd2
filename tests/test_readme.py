"""The README as a new user follows it: the quick start, then every example after it, in order, in a fresh clone
(a folder holding the shipped data), each command as written but for budgets and model sizes made small (as
tests/test_docs.py runs the Python example): every one runs without an error."""

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCALE = 600  # seconds of a README budget per second here: the quick start's 600 s take 1 s
SMALL_MODEL = {"--hidden-size": "32", "--num-layers": "1"}
SMALL_STEPS = {"--batch-size": "8", "--seq-length": "32", "--eval-every": "20", "--sample-length": "20"}
HAS_TORCH = importlib.util.find_spec("torch") is not None


def readme_examples():
    """The README's examples in order: ("shell", command) for each line of its indented blocks (a line ending in a
    backslash joined to the next), ("python", source) for each fenced Python block."""
    examples, fence, block, pending = [], None, [], ""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if fence == "python":
                examples.append(("python", "\n".join(block)))
            fence, block = (line[3:].strip(), []) if fence is None else (None, [])
        elif fence is not None:
            block.append(line)
        elif line.startswith("    ") and line.strip():
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1]
            else:
                examples.append(("shell", pending))
                pending = ""
    return examples


def put(args, option, value):
    """``args`` with ``option`` set to ``value`` (replaced where given, else added)."""
    if option in args:
        return [*args[: args.index(option) + 1], value, *args[args.index(option) + 2 :]]
    return [*args, option, value]


def shrink(args):
    """A charrnn command line (its words after ``charrnn``) with the budgets and models of a test: --max-time
    scaled down (the default 600 s made explicit), small models for new runs, the CPU for a GPU, one process."""
    if args[:1] == ["train"]:
        seconds = float(args[args.index("--max-time") + 1]) if "--max-time" in args else 600
        args = put(args, "--max-time", f"{seconds / SCALE:g}")
        new = {**SMALL_STEPS, **({} if "--init-from" in args else SMALL_MODEL)} if "--resume" not in args else {}
        for option, value in new.items():
            args = put(args, option, value)
        if "--engine" not in args and "--resume" not in args:
            args = put(args, "--workers", "1")
        if "--device" in args and not cuda_available():
            args = put(args, "--device", "cpu")
    if args[:2] == ["classify", "train"]:
        args = put(put(args, "--max-time", f"{float(args[args.index('--max-time') + 1]) / SCALE:g}"),
                   "--hidden-size", "16")
    return put(args, "--port", "0") if args[:1] == ["serve"] else args


def cuda_available():
    return HAS_TORCH and __import__("torch").cuda.is_available()


class Clone:
    """A fresh clone's folder (the shipped data; the corpus cut to 30,000 characters) where the README's commands
    run in turn: charrnn's in this process, torchrun's and the server in processes of their own."""

    def __init__(self, path, cli):
        self.path, self.cli, self.server, self.ran = path, cli, None, []
        (path / "data").mkdir()
        for name in os.listdir(ROOT / "data"):
            if name.endswith(".txt"):
                shutil.copy(ROOT / "data" / name, path / "data" / name)
        text = (ROOT / "data" / "shakespeare.txt").read_text(encoding="utf-8")[:30_000]
        (path / "data" / "shakespeare.txt").write_text(text, encoding="utf-8")

    def shell(self, line):
        """Run one README line: commands joined by && in turn, the output of a command piped into charrnn's input."""
        words, stdin = shlex.split(line, comments=True), None
        while words:
            command = words[: words.index("&&")] if "&&" in words else words
            words = words[len(command) + 1 :]
            if "|" in command:
                stdin = subprocess.run(command[: command.index("|")], cwd=self.path, capture_output=True,
                                       check=True).stdout
                command = command[command.index("|") + 1 :]
            if command[0] == "pip" or command[:3] == ["python", "-m", "pytest"]:
                continue  # installed already; and this is the test suite
            run = {"charrnn": self.charrnn, "torchrun": self.torchrun, "curl": self.curl}[command[0]]
            run(command[1:], stdin)
            self.ran.append(shlex.join(command))

    def charrnn(self, args, stdin):
        args = shrink(args)
        if args[0] == "serve":
            return self.serve(args)
        result = self.cli(args, input=stdin)
        if args[0] == "plot" and importlib.util.find_spec("matplotlib") is None:  # the README says it needs it
            assert result.exit_code == 1 and "pip install 'charrnn[plot]'" in result.stderr, result.output
        else:
            assert result.exit_code == 0, f"charrnn {shlex.join(args)}\n{result.output}"

    def serve(self, args):
        """Start the server (on a free port), as the README leaves it running for the curl after it."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.server = subprocess.Popen([sys.executable, "-m", "charrnn", *args], cwd=self.path, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.server.stdout.readline().split(" at ")[1].split()[0]

    def curl(self, args, stdin):
        """curl -s URL -H HEADER -d BODY, against the server started before (README's port 8000: its own)."""
        path = "/" + args[[a.startswith("localhost:") for a in args].index(True)].split("/", 1)[1]
        header = args[args.index("-H") + 1].split(": ")
        request = urllib.request.Request(self.url.rstrip("/") + path, data=args[args.index("-d") + 1].encode(),
                                         headers={header[0]: header[1]})
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200 and b'"text"' in answer.read()

    def torchrun(self, args, stdin):
        args = put(args, "--nproc-per-node", "2")
        charrnn = args.index("charrnn")
        args = [*args[: charrnn + 1], *shrink(args[charrnn + 1 :])]
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], cwd=self.path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    def python(self, source):
        if "from torch import nn" in source:
            pytest.importorskip("safetensors")  # the export block: PyTorch and safetensors, as the README says
        small = "max_steps=4, hidden_size=16, batch_size=4, seq_length=16, eval_every=2, sample_length=0, workers=1"
        exec(source.replace("max_time=60", small), {})

    def close(self):
        """Stop the server as the README's reader would, with Ctrl-C."""
        if self.server is not None:
            self.server.send_signal(signal.SIGINT)
            assert self.server.wait(timeout=30) == 130


@pytest.mark.slow
def test_the_quick_start_then_every_readme_example_in_order_runs(tmp_path, monkeypatch, cli):
    clone = Clone(tmp_path, cli)
    monkeypatch.chdir(tmp_path)
    needs_torch = ("--engine torch", "torchrun", "from torch import nn")
    try:
        for kind, example in readme_examples():
            if not HAS_TORCH and any(word in example for word in needs_torch):
                continue
            clone.shell(example) if kind == "shell" else clone.python(example)
    finally:
        clone.close()
    assert len(clone.ran) >= 20 and clone.ran[0].startswith("charrnn train data/shakespeare.txt")
