"""`charrnn info` and `charrnn plot`."""

import hashlib
import json

import pytest


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


def test_info_names_the_corpus_and_writes_the_text_held_out_for_validation(tmp_path, texts, cli, cli_stdout):
    """info names each corpus file with its size and SHA-256; --write-val writes each file's validation tail, in
    order, which eval then scores."""
    root, pieces = texts
    ck, held = tmp_path / "ck", tmp_path / "held_out.txt"
    files = [root / "a.txt", root / "sub" / "c.txt"]
    cli_stdout("train", *files, "--checkpoint-dir", ck, "--max-steps", "2", "--hidden-size", "8", "--batch-size", "2",
               "--seq-length", "8", "--val-frac", "0.2", "--sample-length", "0", "-q")
    shown = cli_stdout("info", ck, "--write-val", held)
    for path in files:
        data = path.read_bytes()
        assert f"{path}, {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}" in shown
    tails = [pieces[name][len(pieces[name]) - int(len(pieces[name]) * 0.2):] for name in ("a.txt", "sub/c.txt")]
    assert held.read_text(encoding="utf-8") == "".join(tails)
    assert f"wrote {held}: the {sum(map(len, tails)):,} characters held out for validation" in shown
    assert cli_stdout("eval", ck, held, "--json")
    again = cli(["info", ck, "--write-val", held])  # an existing file is kept
    assert again.exit_code == 1 and "--overwrite" in again.stderr and again.stdout == ""

