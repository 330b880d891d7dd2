"""`charrnn eval` as users rely on it: per-line figures, characters outside the vocabulary, tables and lines
when piped, its throughput, a closed pipe, Ctrl-C."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn.io.checkpoint import Checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.models.rnn import CharRNN, ModelConfig


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


def test_eval_states_its_throughput(tmp_path, ckpt_path, cli):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be.\nThat is the question.\n", encoding="utf-8")
    result = cli(["eval", ckpt_path, str(text), "--json"])
    figures = json.loads(result.stdout)
    assert figures["chars"] == 43 and figures["seconds"] > 0
    assert figures["chars_per_sec"] == pytest.approx(43 / figures["seconds"])
    result = cli(["eval", ckpt_path, str(text), "--per-line", "--reset-per-line"])
    assert result.exit_code == 0 and "chars/s)" in result.stdout


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


def test_ctrl_c_in_eval_exits_130(tmp_path, ckpt_path, sigint):
    fifo = tmp_path / "text.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "eval", ckpt_path, str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(fifo, "w"):  # opens once eval has opened its end, which then waits for text that never comes
        time.sleep(0.5)  # into its read (a signal just before the read call would go unseen until input)
        status, out, err = sigint(proc)
    assert status == 130, err
    assert out == "" and "Traceback" not in err and "Aborted" not in err and len(err.splitlines()) <= 1, err
