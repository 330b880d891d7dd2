"""`charrnn info` and `charrnn plot`."""

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
