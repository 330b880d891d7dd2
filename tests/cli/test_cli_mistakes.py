"""Mistakes a new user makes with sample, inspect and info: each is one line naming what the user typed, with a
non-zero exit status (2 for a usage error), and nothing half-written."""

import json

import numpy as np
import pytest

from charrnn.io.checkpoint import Checkpoint, save_checkpoint
from charrnn.io.corpus import Vocab
from charrnn.models.rnn import CharRNN, ModelConfig


@pytest.mark.parametrize("args", [["info", "{ck}", "--write-val", "{missing}/held.txt"],
                                  ["inspect", "{ck}", "{text}", "--html", "{missing}/page.html"]])
def test_a_file_in_a_missing_folder_is_named_as_given(tmp_path, trained, cli, args):
    """The error names the file the user asked for, not the temporary file it is first written to."""
    names = {"ck": trained, "text": trained.parent / "small.txt", "missing": tmp_path / "no-such-folder"}
    result = cli([a.format(**names) for a in args])
    assert result.exit_code == 1
    wanted = tmp_path / "no-such-folder" / args[-1].split("/")[-1]
    assert result.stderr == f"Error: {wanted}: No such file or directory\n"
    assert not (tmp_path / "no-such-folder").exists()


def test_write_val_dash_is_a_usage_error_not_a_file_named_dash(tmp_path, trained, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli(["info", trained, "--write-val", "-"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("Error: --write-val writes a file: give it a name")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("args, message", [
    (["--beam-score", "mean"], "--beam-score ranks the texts of a beam search: give --beam-width too"),
    (["--repetition-window", "64"], "--repetition-window is how far --repetition-penalty looks back: give a penalty"),
    (["--max-tries", "5"], "--max-tries bounds the draws of --unique, --exclude and --stop; give one of them too"),
])
def test_an_option_that_would_change_nothing_is_a_usage_error(trained, cli, args, message):
    """Alone, --beam-score, --repetition-window and --max-tries changed nothing: the samples were drawn as
    without them."""
    result = cli(["sample", trained, "--length", "5", *args])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: {message}")


@pytest.mark.parametrize("option", ["--seed", "--stop", "--separator"])
def test_text_that_is_not_utf8_on_the_command_line_is_a_usage_error(trained, cli, option):
    """A byte that is not UTF-8 (a Latin-1 é) arrives as a lone surrogate: it could not be encoded, written or
    matched, and ended the command with a codec's message, after part of the output for --separator."""
    result = cli(["sample", trained, option, "caf\udce9", "--num-samples", "2", "--length", "5"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: Invalid value for '{option}': not valid UTF-8: byte 0xe9 at character 4")
    assert result.stderr.count("\n") == 1


def test_stop_help_names_every_escape_it_reads(cli):
    """--stop '\\r' (a file with Windows line ends) and '\\0' work; the help said only \\n, \\t and \\\\ did."""
    shown = " ".join(cli(["sample", "--help"]).stdout.split())
    assert "\\n, \\t, \\r, \\0 and \\\\ are a newline, a tab, a carriage return, NUL and a backslash" in shown


@pytest.mark.parametrize("search", [["--temperature", "0"], ["--beam-width", "1"]])
def test_a_bytes_models_sample_ending_inside_a_character_keeps_its_last_bytes(tmp_path, cli, search):
    """A sample's text is final: bytes that begin a character and end the sample are U+FFFD, not dropped (the
    sample 'Jos' + the Latin-1 byte of é was printed 'Jos', and --unique took it for a repeat of 'Jos')."""
    model = CharRNN(ModelConfig(256, "gru", 8, 1), rng=np.random.default_rng(0))
    model.params["b_y"][0xC3] = 100.0  # every byte drawn is 0xC3, the first byte of é in UTF-8
    save_checkpoint(str(tmp_path / "bytes.npz"), Checkpoint(model, Vocab(tuple(range(256)), bytes_mode=True), {}))
    shown = cli(["sample", tmp_path / "bytes.npz", "--json", "--length", "3", *search])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["text"] == "\ufffd" * 3


def test_a_bytes_models_item_cut_by_its_stop_text_inside_a_character_keeps_its_last_bytes(tmp_path, cli):
    """The stop text's byte ended the sample with the byte before it, which began a character: U+FFFD, not ''
    (so an item such as 'Jos' + the Latin-1 byte of é lost the byte, and one of that byte alone was drawn again)."""
    model = CharRNN(ModelConfig(256, "gru", 8, 1), rng=np.random.default_rng(0))
    model.params["b_y"][[0xC3, ord("\n")]] = 100.0, 50.0  # 0xC3, then (the penalty on it) a newline
    save_checkpoint(str(tmp_path / "bytes.npz"), Checkpoint(model, Vocab(tuple(range(256)), bytes_mode=True), {}))
    shown = cli(["sample", tmp_path / "bytes.npz", "--json", "--stop", "\\n", "--temperature", "0",
                 "--repetition-penalty", "1000", "--max-tries", "1"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {"text": "\ufffd", "logprob": pytest.approx(json.loads(shown.stdout)["logprob"]),
                                        "chars": 2, "stopped_by": "stop"}


@pytest.mark.parametrize("args, message", [
    (["inspect", "{ck}", "{text}", "--top-k", "3"], "--top-k lists the likeliest characters in --json records or on"),
    (["neurons", "{ck}", "{text}", "--saturation", "--top", "3"], "--top is how many units of --feature are listed"),
])
def test_inspect_options_that_would_change_nothing_are_usage_errors(trained, cli, args, message):
    """The terminal's colours show no top-K, and --saturation lists no units: the option was ignored."""
    names = {"ck": trained, "text": trained.parent / "small.txt"}
    result = cli([str(a).format(**names) for a in args])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: {message}")
