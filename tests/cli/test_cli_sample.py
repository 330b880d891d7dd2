"""`charrnn sample` as users rely on it: the seed from --seed, --prime-file or standard input, greedy and top-k,
several samples, -o, --random-seed, Ctrl-C."""

import subprocess
import sys

import pytest

from charrnn.inference.sample import generate, sample_rngs
from charrnn.io.checkpoint import load_checkpoint


def test_prime_file_and_stdin_are_the_seed(tmp_path, trained, small_text, cli):
    with open(small_text, encoding="utf-8") as f:
        prime = f.read(10_000)  # longer than one priming pass (PRIME_CHUNK)
    path = tmp_path / "prime.txt"
    path.write_text(prime, encoding="utf-8")
    common = ["--length", "100", "--random-seed", "3", "--temperature", "0.8"]
    by_seed = cli(["sample", trained, "--seed", prime, *common])
    by_file = cli(["sample", trained, "--prime-file", str(path), *common])
    by_stdin = cli(["sample", trained, "--prime-file", "-", *common], input=prime.encode("utf-8"))
    assert by_seed.exit_code == by_file.exit_code == by_stdin.exit_code == 0, by_file.output
    assert by_file.stdout == by_seed.stdout == by_stdin.stdout
    assert by_file.stdout.startswith(prime) and len(by_file.stdout) == len(prime) + 100 + 1
    path.write_bytes(b"\xef\xbb\xbf" + prime[:50].encode("utf-8"))  # a byte-order mark is not part of the prime
    assert cli(["sample", trained, "--prime-file", str(path), *common]).stdout.startswith(prime[:50])


@pytest.mark.parametrize("name,make,args,message", [
    ("both", lambda p: p.write_text("ROMEO"), ["--seed", "X"], "give --seed or --prime-file, not both"),
    ("unknown characters", lambda p: p.write_text("ROMEO Ω 漢\n", encoding="utf-8"), [],
     "has characters the model has never seen: 'Ω', '漢'"),
    ("invalid utf-8", lambda p: p.write_bytes(b"ROMEO\xff"), [], "not valid utf-8 at byte 5"),
    ("empty", lambda p: p.write_text(""), [], "the file is empty; nothing to prime with"),
])
def test_bad_prime_files_are_one_line_errors(tmp_path, trained, name, make, args, message, cli):
    path = tmp_path / "prime.txt"
    make(path)
    result = cli(["sample", trained, "--prime-file", str(path), *args])
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "Usage:" not in result.stderr and "Try " not in result.stderr, result.stderr  # one line, not click's three
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert load_checkpoint(str(trained)).vocab  # nothing touched


def test_bytes_model_primes_with_raw_bytes(tmp_path, cli, tiny_rnn):
    corpus = tmp_path / "bin.dat"
    corpus.write_bytes(bytes(range(256)) * 40)
    ck = str(tmp_path / "ck")
    assert cli(["train", str(corpus), "--bytes", "--checkpoint-dir", ck, "--max-steps", "3",
                                     *tiny_rnn]).exit_code == 0
    prime = tmp_path / "prime.bin"
    prime.write_bytes(b"\xff\xfe\x00abc")  # not UTF-8: a bytes model reads it as it is
    result = cli(["sample", ck, "--prime-file", str(prime), "--length", "5", "--random-seed", "1"])
    assert result.exit_code == 0, result.output


def test_cli_num_samples_is_the_samples_one_by_one(ckpt_path, cli_stdout):
    ckpt = load_checkpoint(ckpt_path)
    net, vocab = ckpt.model, ckpt.vocab

    def sample(*args):
        return cli_stdout("sample", ckpt_path, "--seed", "A", "--length", "60", "--random-seed", "3", *args)

    three = sample("--num-samples", "3")
    texts = ["".join(generate(net, vocab, "A", length=60, random_seed=rng)) for rng in sample_rngs(3, 3)]
    assert three == "\n\n".join(texts) + "\n"
    assert sample() == texts[0] + "\n"  # sample 1 does not depend on --num-samples


def test_greedy_is_deterministic_and_top_k_1_is_greedy(ckpt_path, cli_stdout):
    greedy = cli_stdout("sample", ckpt_path, "--seed", "The ", "--temperature", "0", "--length", "80")
    assert greedy == cli_stdout("sample", ckpt_path, "--seed", "The ", "--temperature", "0", "--length", "80",
                            "--random-seed", "9")
    for seed in ("1", "2"):
        assert cli_stdout("sample", ckpt_path, "--seed", "The ", "--top-k", "1", "--length", "80",
                      "--random-seed", seed) == greedy


def test_num_samples_and_output_file(tmp_path, ckpt_path, cli_stdout):
    out = tmp_path / "samples.txt"
    assert cli_stdout("sample", ckpt_path, "--num-samples", "3", "--length", "30", "--seed", "A", "-o", str(out),
                  "--random-seed", "4") == ""
    samples = out.read_text().rstrip("\n").split("\n\n")
    assert len([s for s in samples if s.startswith("A")]) >= 3


def test_sample_refuses_to_write_over_a_file_and_nonfinite_temperatures(tmp_path, ckpt_path, cli, cli_stdout):
    """-o onto an existing file (a checkpoint, say) is refused in one line, the file intact; nan and inf
    temperatures are refused (a nan passes every range check)."""
    before = open(ckpt_path, "rb").read()
    result = cli(["sample", ckpt_path, "--length", "5", "-o", ckpt_path])
    assert result.exit_code == 1 and "already exists; give --overwrite" in result.output
    assert open(ckpt_path, "rb").read() == before
    out = tmp_path / "out.txt"
    out.write_text("old")
    assert cli_stdout("sample", ckpt_path, "--length", "5", "-o", str(out), "--overwrite") == ""
    assert out.read_text() != "old"
    for value in ("nan", "inf"):
        result = cli(["sample", ckpt_path, "--temperature", value])
        assert result.exit_code == 2 and "is not a finite number" in result.output


def test_sample_random_seed_is_generates_and_the_servers(ckpt_path, cli_stdout):
    """The CLI's --random-seed N gives the text of generate(random_seed=N), which the server's random_seed
    gives (tests/test_server.py)."""
    from charrnn.inference.sample import generate

    ckpt = load_checkpoint(ckpt_path)
    text = "".join(generate(ckpt.model, ckpt.vocab, "ROMEO", length=60, temperature=0.8, random_seed=7))
    assert cli_stdout("sample", ckpt_path, "--seed", "ROMEO", "--length", "60", "--temperature", "0.8",
                      "--random-seed", "7") == text + "\n"


def test_ctrl_c_in_sample_exits_130_keeping_what_it_wrote(ckpt_path, sigint):
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", ckpt_path, "--length", "100000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.read(200)  # sampling has begun
    status, rest, err = sigint(proc)
    assert status == 130, err
    assert len(first) == 200 and set(first + rest) <= set(load_checkpoint(ckpt_path).vocab.symbols)
    assert "Traceback" not in err and "Aborted" not in err and len(err.splitlines()) <= 1, err
