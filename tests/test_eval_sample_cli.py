"""eval and sample as users rely on them: per-line figures, OOV reporting, greedy and top-k, plot, info."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.rnn import CharRNN, ModelConfig

VOCAB = Vocab(tuple("\n !,.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


@pytest.fixture
def ckpt_path(tmp_path):
    model = CharRNN(ModelConfig(len(VOCAB), "lstm", 24, 2), rng=np.random.default_rng(0))
    path = str(tmp_path / "model.npz")
    save_checkpoint(path, Checkpoint(model, VOCAB, {"step": 12, "epoch": 1, "last_val_loss": 2.5}))
    return path


def test_per_line_figures_sum_to_the_whole_file(tmp_path, ckpt_path, cli_stdout):
    text = tmp_path / "lines.txt"
    text.write_text("ROMEO: But soft!\nWhat light through yonder window breaks?\n\nIt is the east.")
    whole = json.loads(cli_stdout("eval", ckpt_path, str(text), "--json"))
    lines = [json.loads(line) for line in cli_stdout("eval", ckpt_path, str(text), "--per-line", "--json").splitlines()]
    per_line, total = lines[:-1], lines[-1]
    assert len(per_line) == 4 and per_line[2]["chars"] == 1  # the empty line is its newline
    assert sum(line["chars"] for line in per_line) == whole["chars"] == len(text.read_text())
    assert -sum(line["logprob"] for line in per_line) / whole["chars"] == pytest.approx(whole["loss"], rel=1e-6)
    assert total["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    out = cli_stdout("eval", ckpt_path, str(text), "--reset-per-line", "--json")
    reset = [json.loads(line) for line in out.splitlines()]
    assert reset[0]["logprob"] == pytest.approx(per_line[0]["logprob"])  # the first line starts fresh either way
    assert reset[1]["logprob"] != pytest.approx(per_line[1]["logprob"])
    table = cli_stdout("eval", ckpt_path, str(text), "--per-line")
    assert "log-prob" in table and "bits/char" in table


def test_out_of_vocabulary_characters_are_reported_and_left_out(tmp_path, ckpt_path, cli_stdout):
    clean, dirty = tmp_path / "clean.txt", tmp_path / "dirty.txt"
    clean.write_text("to be or not to be\n")
    dirty.write_text("to be or ñot to be 😀😀\n")
    a = json.loads(cli_stdout("eval", ckpt_path, str(clean), "--json"))
    b = json.loads(cli_stdout("eval", ckpt_path, str(dirty), "--json"))
    assert b["oov"] == {"ñ": 1, "😀": 2} and b["oov_chars"] == 3
    assert b["chars"] == a["chars"]  # ñ replaced n, the emoji came with a space: 19 in-vocabulary either way
    assert "outside the vocabulary" in cli_stdout("eval", ckpt_path, str(dirty))


def test_eval_report_lines_are_not_wrapped_when_piped(tmp_path, ckpt_path, cli_stdout):
    """Output that is not a terminal (a pipe, a file) keeps each line whole, however long the path."""
    deep = tmp_path / ("a-folder-with-a-long-name-" * 3) / "held-out-text.txt"
    deep.parent.mkdir()
    deep.write_text("to be or not to be\n")
    lines = cli_stdout("eval", ckpt_path, str(deep)).splitlines()
    assert lines[0].startswith(str(deep)) and lines[0].endswith("chars/s)") and len(lines[0]) > 120
    assert lines[1].startswith("loss ")


@pytest.mark.parametrize("mode", ["--per-line", "--reset-per-line"])
def test_per_line_text_is_the_line_as_written(tmp_path, ckpt_path, cli_stdout, mode):
    """Characters outside the vocabulary are left out of the score, not out of the line shown."""
    text = tmp_path / "dirty.txt"
    text.write_text("to be or ñot to be 😀\nplain\n", encoding="utf-8")
    lines = [json.loads(line) for line in cli_stdout("eval", ckpt_path, str(text), mode, "--json").splitlines()]
    assert [line["text"] for line in lines[:2]] == ["to be or ñot to be 😀\n", "plain\n"]
    assert lines[0]["oov"] == {"ñ": 1, "😀": 1}


def test_per_line_text_of_a_bytes_model_is_decoded_whole(tmp_path):
    """A bytes model's line is decoded as a whole (a UTF-8 character spans several ids)."""
    from charrnn.evaluate import score_lines

    vocab = Vocab(tuple(range(256)), bytes_mode=True)
    model = CharRNN(ModelConfig(256, "gru", 8, 1), rng=np.random.default_rng(0))
    path = tmp_path / "utf8.txt"
    path.write_text("naïve café ✓\n", encoding="utf-8")
    for reset in (False, True):
        (line,) = score_lines(model, vocab, str(path), reset_per_line=reset)
        assert line.text == "naïve café ✓\n" and line.result.chars == len("naïve café ✓\n".encode())


def test_a_bytes_models_messages_name_unseen_bytes_once_escaped(tmp_path, cli):
    """A byte outside a --bytes model's vocabulary is shown as '\\xff', not repr's '\\\\xff'."""
    path = str(tmp_path / "bytes.npz")
    vocab = Vocab(tuple(b"abc\n"), bytes_mode=True)
    save_checkpoint(path, Checkpoint(CharRNN(ModelConfig(4, "gru", 8, 1), rng=np.random.default_rng(0)), vocab,
                                     {"step": 1}))
    text = tmp_path / "t.bin"
    text.write_bytes(b"abc\xff\n")
    result = cli(["eval", path, str(text)])
    assert result.exit_code == 0 and "'\\xff'×1" in result.stdout, result.output
    result = cli(["sample", path, "--seed", "aé", "--length", "5"])
    assert result.exit_code == 1 and "'\\xa9', '\\xc3'" in result.output, result.output


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
    from charrnn.sample import generate

    ckpt = load_checkpoint(ckpt_path)
    text = "".join(generate(ckpt.model, ckpt.vocab, "ROMEO", 60, temperature=0.8, random_seed=7))
    assert cli_stdout("sample", ckpt_path, "--seed", "ROMEO", "--length", "60", "--temperature", "0.8",
                      "--random-seed", "7") == text + "\n"


def test_piped_tables_keep_a_row_per_line(tmp_path, ckpt_path, cli_stdout):
    """Piped (not a terminal), a table is as wide as it needs: rich wrapped and cut rows at 80 columns."""
    text = tmp_path / "long.txt"
    text.write_text("ROMEO: " + "But soft, what light through yonder window breaks? " * 4 + "\nIt is the east.\n")
    rows = [line for line in cli_stdout("eval", ckpt_path, str(text), "--per-line").splitlines() if line[0] == "│"]
    assert len(rows) == 2 and rows[0].endswith("Bu'… │") and "'It is the east.\\n'" in rows[1]
    big = CharRNN(ModelConfig(100, "rnn", 8, 1), rng=np.random.default_rng(0))
    path = str(tmp_path / "big.npz")
    save_checkpoint(path, Checkpoint(big, Vocab(tuple(chr(0x100 + i) for i in range(100))), {"step": 1}))
    vocabulary = [line for line in cli_stdout("info", path).splitlines() if "vocabulary" in line]
    assert len(vocabulary) == 1 and vocabulary[0].endswith("'" + "".join(chr(0x100 + i) for i in range(80)) +
                                                           "' and 20 more │")


def test_info(ckpt_path, cli_stdout):
    text = cli_stdout("info", ckpt_path)
    for expected in ("lstm", "hidden_size", "60 symbols", "parameters", "format version", "2.5000"):
        assert expected in text


def test_plot_writes_a_png(tmp_path, small_text, cli_stdout):
    pytest.importorskip("matplotlib")
    ck = tmp_path / "ck"
    cli_stdout("train", small_text, "--checkpoint-dir", str(ck), "--max-steps", "20", "--hidden-size", "16",
           "--eval-every", "10", "--sample-length", "0", "-q")
    png = tmp_path / "loss.png"
    cli_stdout("plot", str(ck), "--output", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch, cli):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "train_loss": 3.0}) + "\n")
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = cli(["plot", str(tmp_path), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "pip install 'charrnn[plot]'" in result.stderr


def test_quiet_training_prints_nothing(tmp_path, small_text, cli):
    result = cli(["train", small_text, "--checkpoint-dir", str(tmp_path / "ck"), "--max-steps",
                  "5", "--hidden-size", "16", "-q"])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    noted = cli(["train", small_text, "--checkpoint-dir", str(tmp_path / "low"), "--max-steps", "2", "--hidden-size",
                 "16", "--dropout", "0.3", "--late-dropout", "0.1", "--sample-length", "0"])
    assert "note: --late-dropout 0.1 is below the model's dropout 0.3: dropout stays at 0.3" in noted.stderr
    info = cli(["info", str(tmp_path / "ck" / "latest.npz")]).stdout  # the run's training options too
    assert "adam 0.003, cosine, batch 32 x 100, dropout rising to 0.45 (epochs 4-16); limit 5 steps or 600 s" in info


def test_training_goes_on_when_its_output_is_closed(tmp_path, small_text):
    """charrnn train ... | head -1: the reader leaves after the first line; training runs to its end (it used
    to stop silently with exit status 1 at its next report), saying so once on stderr."""
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", small_text, "--checkpoint-dir", str(ck),
                             "--max-steps", "30", "--eval-every", "5", "--hidden-size", "16", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("training ")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "standard output was closed; training goes on" in err
    assert load_checkpoint(str(ck / "latest.npz")).meta["step"] == 30


def test_no_color_and_version(monkeypatch, ckpt_path, cli_stdout):
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in cli_stdout("info", ckpt_path)
    assert cli_stdout("--version").startswith("charrnn, version")


@pytest.mark.parametrize("flags", [["--per-line"], ["--reset-per-line"]])
def test_per_line_on_an_empty_file_is_the_error_alone(tmp_path, ckpt_path, cli, flags):
    """No empty table on stdout before the one-line error."""
    (tmp_path / "empty.txt").write_text("")
    result = cli(["eval", ckpt_path, str(tmp_path / "empty.txt"), *flags])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"Error: {tmp_path / 'empty.txt'}: nothing to score: it is empty\n"


def test_per_line_json_into_a_closed_pipe_is_quiet(tmp_path, ckpt_path):
    """`charrnn eval ... --per-line --json | head -1`: no 'Broken pipe' error on stderr."""
    text = tmp_path / "lines.txt"
    text.write_text("ROMEO: But soft! What light through yonder window breaks?\n" * 5000)
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "eval", ckpt_path, str(text), "--per-line", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["line"] == 1
    proc.stdout.close()
    stderr = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode != 0 and stderr == ""


def _interrupt(proc):
    """Ctrl-C: SIGINT to the running command; its exit status, the rest of stdout, and stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # no-op once it has exited; a hung one is not left behind
    return proc.returncode, out, err


def test_ctrl_c_in_sample_exits_130_keeping_what_it_wrote(ckpt_path):
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", ckpt_path, "--length", "100000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.read(200)  # sampling has begun
    status, rest, err = _interrupt(proc)
    assert status == 130, err
    assert len(first) == 200 and set(first + rest) <= set(VOCAB.symbols)
    assert "Traceback" not in err and "Aborted" not in err and len(err.splitlines()) <= 1, err


def test_ctrl_c_in_eval_exits_130(tmp_path, ckpt_path):
    fifo = tmp_path / "text.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "eval", ckpt_path, str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(fifo, "w"):  # opens once eval has opened its end, which then waits for text that never comes
        time.sleep(0.5)  # into its read (a signal just before the read call would go unseen until input)
        status, out, err = _interrupt(proc)
    assert status == 130, err
    assert out == "" and "Traceback" not in err and "Aborted" not in err and len(err.splitlines()) <= 1, err
