"""Fixtures shared by the tests: real text, the command line run in-process."""

import os

import pytest
from click.testing import CliRunner

from charrnn.cli import main

pytest.register_assert_rewrite("resumecheck")  # its asserts explain their failures like a test's

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(ROOT, "data", "shakespeare.txt")
TINYSHAKESPEARE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))


@pytest.fixture
def small_text(tmp_path):
    """About 30,000 characters of the bundled corpus (real text), as a file."""
    with open(BUNDLED, encoding="utf-8") as f:
        text = f.read(30_000)
    path = tmp_path / "small.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def tinyshakespeare():
    if not os.path.exists(TINYSHAKESPEARE):
        pytest.skip(f"{TINYSHAKESPEARE} is not here (it is not shipped with charrnn)")
    return TINYSHAKESPEARE


@pytest.fixture
def cli():
    """``cli(["train", corpus, ...])``: run the charrnn command in this process (click's CliRunner) and
    return click's Result; an exception that is not a clean exit propagates, traceback and all."""

    def invoke(args, **kwargs):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def cli_stdout(cli):
    """``cli_stdout("sample", ckpt, ...)``: run the command, assert it succeeded, return its stdout."""

    def invoke(*args):
        result = cli(args)
        assert result.exit_code == 0, result.output
        return result.stdout

    return invoke
