"""Fixtures shared by the tests: real text, the options of small models, checkpoints to work on, the command line
run in-process."""

import itertools
import os
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import main
from charrnn.io.checkpoint import Checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.models.rnn import CharRNN, ModelConfig

pytest.register_assert_rewrite("resumecheck")  # its asserts explain their failures like a test's

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data")


# ---- real text


@pytest.fixture(scope="session")
def shakespeare():
    """The bundled corpus, data/shakespeare.txt (nine plays, 1.07 M characters)."""
    return os.path.join(DATA, "shakespeare.txt")


@pytest.fixture
def small_text(tmp_path, shakespeare):
    """About 30,000 characters of the bundled corpus (real text), as a file."""
    with open(shakespeare, encoding="utf-8") as f:
        text = f.read(30_000)
    path = tmp_path / "small.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def texts(tmp_path, shakespeare):
    """Three real texts of different lengths (slices of the bundled corpus), as files a.txt, b.txt, sub/c.txt."""
    with open(shakespeare, encoding="utf-8") as f:
        text = f.read(9000)
    pieces = {"a.txt": text[:2000], "b.txt": text[2000:5000], "sub/c.txt": text[5000:9000] + "Ωé\n"}
    for name, piece in pieces.items():
        (tmp_path / "corpus" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "corpus" / name).write_text(piece, encoding="utf-8")
    return tmp_path / "corpus", pieces


@pytest.fixture(scope="session")
def names():
    """The bundled names-by-language data set: ``names.train``, ``names.valid``, ``names.test`` (fastText format)."""
    return SimpleNamespace(**{split: os.path.join(DATA, f"names.{split}.txt") for split in ("train", "valid", "test")})


# ---- the options of small models, for `charrnn train`


@pytest.fixture(scope="session")
def tiny_rnn():
    """The smallest recurrent model worth training: for tests of what the commands do around a model."""
    return ("--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "8",
            "--sample-length", "0", "--random-seed", "0")


@pytest.fixture(scope="session")
def small_rnn():
    """A two-layer recurrent model that learns something in tens of steps: for tests of what training does."""
    return ("--hidden-size", "32", "--num-layers", "2", "--batch-size", "8", "--seq-length", "16",
            "--sample-length", "0", "--random-seed", "0")


@pytest.fixture(scope="session")
def tiny_gpt():
    """A two-layer, two-head gpt that validates every 10 steps and prints a sample."""
    return ("--model", "gpt", "--hidden-size", "16", "--num-layers", "2", "--num-heads", "2", "--batch-size", "4",
            "--seq-length", "16", "--eval-every", "10", "--sample-length", "30", "--random-seed", "3")


# ---- the command line, in this process


@pytest.fixture(scope="session")
def cli():
    """``cli(["train", corpus, ...])``: run the charrnn command in this process (click's CliRunner) and
    return click's Result; an exception that is not a clean exit propagates, traceback and all."""

    def invoke(args, **kwargs):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture(scope="session")
def cli_stdout(cli):
    """``cli_stdout("sample", ckpt, ...)``: run the command, assert it succeeded, return its stdout."""

    def invoke(*args):
        result = cli(args)
        assert result.exit_code == 0, result.output
        return result.stdout

    return invoke


@pytest.fixture(scope="session")
def sigint():
    """``sigint(proc)``: Ctrl-C (SIGINT) to a running command; its exit status, the rest of stdout, and stderr."""
    import signal

    def interrupt(proc):
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()  # no-op once it has exited; a hung one is not left behind
        return proc.returncode, out, err

    return interrupt


# ---- checkpoints


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shakespeare, cli, tiny_rnn):
    """A checkpoint directory (a Path) of a tiny model trained 5 steps on the text of ``small_text``, once for
    the session: the tests that use it read it, or check that a refused command left it as it was."""
    ck = tmp_path_factory.mktemp("trained") / "ck"
    with open(shakespeare, encoding="utf-8") as f:
        (ck.parent / "small.txt").write_text(f.read(30_000), encoding="utf-8")
    result = cli(["train", ck.parent / "small.txt", "--checkpoint-dir", ck, "--max-steps", "5", *tiny_rnn])
    assert result.exit_code == 0, result.output
    return ck


@pytest.fixture
def ckpt_path(tmp_path):
    """An untrained 24 x 2 LSTM over 60 symbols (letters, space, newline, punctuation), saved as model.npz."""
    vocab = Vocab(tuple("\n !,.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    model = CharRNN(ModelConfig(len(vocab), "lstm", 24, 2), rng=np.random.default_rng(0))
    path = str(tmp_path / "model.npz")
    save_checkpoint(path, Checkpoint(model, vocab, {"step": 12, "epoch": 1, "last_val_loss": 2.5}))
    return path


@pytest.fixture(scope="session")
def classifier(tmp_path_factory, cli, names):
    """A small classifier trained for 4 epochs on 2,000 lines of the names training split (a few seconds),
    once for the session: its checkpoint directory."""
    ckpt = tmp_path_factory.mktemp("clf")
    with open(names.train, encoding="utf-8") as f:
        (ckpt / "train.txt").write_text("".join(itertools.islice(f, 2000)), encoding="utf-8")
    result = cli(["classify", "train", ckpt / "train.txt", "--valid", names.valid, "--hidden-size", "32",
                  "--max-epochs", "4", "--dropout", "0", "--lr-schedule", "constant", "--random-seed", "1",
                  "--checkpoint-dir", ckpt, "-q"])
    assert result.exit_code == 0, result.output
    return str(ckpt)


# ---- PyTorch


@pytest.fixture
def torch_one_thread():
    """Torch's OpenMP threads spin-wait: on a shared 2-core machine one thread is many times faster."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
