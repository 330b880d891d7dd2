"""charrnn sample --prime-file: a prime of any length from a file or standard input, as --seed."""

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn import sample as sample_module
from charrnn.cli import main
from charrnn.io.checkpoint import load_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.rnn import CharRNN, ModelConfig
from charrnn.sample import generate

TINY = ["--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "8",
        "--sample-length", "0", "--random-seed", "0"]


@pytest.fixture
def trained(tmp_path, small_text):
    ck = str(tmp_path / "ck")
    result = CliRunner().invoke(main, ["train", small_text, "--checkpoint-dir", ck, "--max-steps", "5", *TINY])
    assert result.exit_code == 0, result.output
    return ck


def sample(*args, input=None):
    return CliRunner().invoke(main, ["sample", *args], input=input)


def test_prime_file_and_stdin_are_the_seed(tmp_path, trained, small_text):
    with open(small_text, encoding="utf-8") as f:
        prime = f.read(10_000)  # longer than one priming pass (PRIME_CHUNK)
    path = tmp_path / "prime.txt"
    path.write_text(prime, encoding="utf-8")
    common = ["--length", "100", "--random-seed", "3", "--temperature", "0.8"]
    by_seed = sample(trained, "--seed", prime, *common)
    by_file = sample(trained, "--prime-file", str(path), *common)
    by_stdin = sample(trained, "--prime-file", "-", *common, input=prime.encode("utf-8"))
    assert by_seed.exit_code == by_file.exit_code == by_stdin.exit_code == 0, by_file.output
    assert by_file.stdout == by_seed.stdout == by_stdin.stdout
    assert by_file.stdout.startswith(prime) and len(by_file.stdout) == len(prime) + 100 + 1
    path.write_bytes(b"\xef\xbb\xbf" + prime[:50].encode("utf-8"))  # a byte-order mark is not part of the prime
    assert sample(trained, "--prime-file", str(path), *common).stdout.startswith(prime[:50])


def test_priming_in_pieces_equals_one_pass(monkeypatch, small_text):
    with open(small_text, encoding="utf-8") as f:
        text = f.read(3000)
    vocab = Vocab(tuple(sorted(set(text))))
    model = CharRNN(ModelConfig(len(vocab), "lstm", 32, 2, dtype="float64"), rng=np.random.default_rng(1))
    whole = "".join(generate(model, vocab, seed=text, length=200, temperature=0))
    monkeypatch.setattr(sample_module, "PRIME_CHUNK", 7)
    assert "".join(generate(model, vocab, seed=text, length=200, temperature=0)) == whole


@pytest.mark.parametrize("name,make,args,message", [
    ("both", lambda p: p.write_text("ROMEO"), ["--seed", "X"], "give --seed or --prime-file, not both"),
    ("unknown characters", lambda p: p.write_text("ROMEO Ω 漢\n", encoding="utf-8"), [],
     "has characters the model has never seen: 'Ω', '漢'"),
    ("invalid utf-8", lambda p: p.write_bytes(b"ROMEO\xff"), [], "not valid utf-8 at byte 5"),
    ("empty", lambda p: p.write_text(""), [], "the file is empty; nothing to prime with"),
])
def test_bad_prime_files_are_one_line_errors(tmp_path, trained, name, make, args, message):
    path = tmp_path / "prime.txt"
    make(path)
    result = sample(trained, "--prime-file", str(path), *args)
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "Usage:" not in result.stderr and "Try " not in result.stderr, result.stderr  # one line, not click's three
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert load_checkpoint(trained).vocab  # nothing touched


def test_bytes_model_primes_with_raw_bytes(tmp_path):
    corpus = tmp_path / "bin.dat"
    corpus.write_bytes(bytes(range(256)) * 40)
    ck = str(tmp_path / "ck")
    assert CliRunner().invoke(main, ["train", str(corpus), "--bytes", "--checkpoint-dir", ck, "--max-steps", "3",
                                     *TINY]).exit_code == 0
    prime = tmp_path / "prime.bin"
    prime.write_bytes(b"\xff\xfe\x00abc")  # not UTF-8: a bytes model reads it as it is
    result = sample(ck, "--prime-file", str(prime), "--length", "5", "--random-seed", "1")
    assert result.exit_code == 0, result.output
