"""--model gpt through the command line, the Python API and training: the RNNs' guarantees, for gpt."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from resumecheck import assert_same_latest

from charrnn import GPTConfig, TrainConfig, load_checkpoint, train
from charrnn.cli import main
from charrnn.evaluate import evaluate_file, score_lines
from charrnn.gpt import CharGPT
from charrnn.presets import PRESETS, preset_configs, resume_config
from charrnn.runs import Reporter

TINY = ["--model", "gpt", "--hidden-size", "16", "--num-layers", "2", "--num-heads", "2", "--batch-size", "4",
        "--seq-length", "16", "--eval-every", "10", "--sample-length", "30", "--random-seed", "3"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_train_sample_eval_info(tmp_path, small_text):
    ck = str(tmp_path / "ck")
    result = run(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "20", *TINY])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(ck)
    assert isinstance(ckpt.model, CharGPT) and ckpt.model.config.context_length == 16
    assert ckpt.hidden_state == ()
    records = [json.loads(line) for line in open(os.path.join(ck, "metrics.jsonl"))]
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20]
    sample = run(["sample", ck, "--seed", "Romeo", "--length", "60", "--random-seed", "1", "--top-p", "0.9"])
    assert sample.exit_code == 0 and sample.output.startswith("Romeo") and len(sample.output) >= 65
    assert run(["sample", ck, "--seed", "Romeo", "--length", "60", "--random-seed", "1", "--top-p", "0.9"]).output \
        == sample.output
    ev = json.loads(run(["eval", ck, small_text, "--json"]).output)
    assert ev["chars"] == len(open(small_text).read())
    assert ev["loss"] < np.log(len(ckpt.vocab))
    info = run(["info", ck])
    assert "num_heads" in info.output and "context_length" in info.output
    epoch, chunk = ckpt.meta["epoch"], ckpt.meta["chunk"]
    assert chunk > 0 and f"{epoch} complete, then {chunk} steps into the next" in info.output


def test_per_line_scores_add_up_to_the_file(tmp_path, small_text):
    """Windows are placed by position in the text, so scoring line by line gives the whole file's numbers."""
    ck = str(tmp_path / "ck")
    assert run(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "5", *TINY]).exit_code == 0
    ckpt = load_checkpoint(ck)
    short = tmp_path / "short.txt"
    short.write_text(open(small_text).read()[:3000])
    whole = evaluate_file(ckpt.model, ckpt.vocab, str(short))
    lines = list(score_lines(ckpt.model, ckpt.vocab, str(short)))
    assert sum(line.result.chars for line in lines) == whole.chars == 3000
    assert sum(line.result.total_nll for line in lines) == pytest.approx(whole.total_nll, rel=1e-6)  # float32
    reset = list(score_lines(ckpt.model, ckpt.vocab, str(short), reset_per_line=True))
    assert sum(line.result.total_nll for line in reset) != pytest.approx(whole.total_nll, rel=1e-6)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_resume_is_bit_identical(tmp_path, small_text, workers):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    opts = [*TINY, "--dropout", "0.1", "--lr-schedule", "constant", "--workers", workers]
    assert run(["train", small_text, "--checkpoint-dir", one, "--max-steps", "20", *opts]).exit_code == 0
    assert run(["train", small_text, "--checkpoint-dir", two, "--max-steps", "10", *opts]).exit_code == 0
    resumed = run(["train", small_text, "--checkpoint-dir", two, "--max-steps", "20", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_latest(one, two, 20)


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt", "--hidden-size", "30", "--num-heads", "4"], "--num-heads 4 does not divide --hidden-size 30"),
    (["--model", "gpt", "--activation", "relu"], "--activation is for the recurrent models"),
    (["--model", "gpt", "--weight-drop", "0.1"], "--weight-drop is for the recurrent models"),
    (["--preset", "nanogpt-cpu", "--activation", "relu"], "--activation is for the recurrent models"),
    (["--model", "lstm", "--num-heads", "2"], "--num-heads is for --model gpt, not --model lstm"),
    (["--num-heads", "2"], "--num-heads is for --model gpt"),
])
def test_options_of_the_other_kind_are_one_line_errors(tmp_path, small_text, args, message):
    result = CliRunner().invoke(main, ["train", small_text, "--checkpoint-dir", str(tmp_path / "ck"), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_resuming_as_another_model_is_a_one_line_error(tmp_path, small_text):
    ck = str(tmp_path / "ck")
    assert run(["train", small_text, "--checkpoint-dir", ck, "--max-steps", "3", *TINY]).exit_code == 0
    result = CliRunner().invoke(main, ["train", small_text, "--checkpoint-dir", ck, "--resume", "--model", "lstm"])
    assert result.exit_code == 1
    assert "cannot resume a gpt checkpoint as --model lstm" in result.output


def test_presets_and_the_gpt_recipe():
    model, config = preset_configs(model="gpt")
    recipe = PRESETS["gpt"]
    assert isinstance(model, GPTConfig)
    assert (model.num_layers, model.num_heads, model.hidden_size, model.context_length) == (
        recipe["num_layers"], recipe["num_heads"], recipe["hidden_size"], recipe["seq_length"])
    assert config.learning_rate == recipe["learning_rate"]
    assert (config.late_dropout, config.late_dropout_epochs) == (recipe["late_dropout"], recipe["late_dropout_epochs"])
    model, config = preset_configs("nanogpt-cpu")
    assert (model.num_layers, model.num_heads, model.hidden_size, model.context_length, config.batch_size,
            model.dropout) == (4, 4, 128, 64, 12, 0.0)
    model, config = preset_configs("nanogpt", seq_length=128)
    assert (model.num_layers, model.num_heads, model.hidden_size, model.context_length, config.batch_size,
            model.dropout) == (6, 6, 384, 128, 64, 0.2)
    model, _ = preset_configs("nanogpt", model="gru")  # the other kind: the default recipe under it
    assert model.model == "gru" and model.hidden_size == PRESETS["default"]["hidden_size"]
    with pytest.raises(ValueError, match="cannot resume a gpt checkpoint"):
        resume_config({}, {"model": "gpt"}, model="gru")


def test_python_api_trains_a_gpt(tmp_path, small_text):
    model_config, config = preset_configs(model="gpt", hidden_size=16, num_heads=2, num_layers=1, seq_length=16,
                                          batch_size=4, max_steps=6, eval_every=3, sample_length=0,
                                          checkpoint_dir=str(tmp_path / "ck"), random_seed=0)
    assert isinstance(config, TrainConfig)
    result = train(small_text, model_config, config, reporter=Reporter())
    assert result.step == 6 and result.best_val_loss is not None


def test_warmup_raises_the_rate_linearly_then_follows_the_schedule(tmp_path, small_text):
    model_config, config = preset_configs(model="gpt", hidden_size=16, num_heads=2, num_layers=1, seq_length=16,
                                          batch_size=4, max_steps=8, eval_every=8, log_every=1, sample_length=0,
                                          learning_rate=0.01, lr_schedule="constant", warmup=4,
                                          checkpoint_dir=str(tmp_path / "ck"), random_seed=0)
    train(small_text, model_config, config)
    rates = [json.loads(line)["learning_rate"] for line in open(tmp_path / "ck" / "metrics.jsonl")]
    assert rates == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01, 0.01])


def test_non_finite_steps_are_never_applied(tmp_path, small_text, monkeypatch):
    """The guard restores the last evaluated gpt model and halves the rate, as for the RNNs."""
    real, calls = CharGPT.loss_and_grads, [0]

    def loss_and_grads(self, *args, **kwargs):
        calls[0] += 1
        loss, grads, state = real(self, *args, **kwargs)
        if calls[0] == 7:
            grads.flat[5] = np.nan
        return loss, grads, state

    monkeypatch.setattr(CharGPT, "loss_and_grads", loss_and_grads)

    class Messages(Reporter):
        messages = []

        def message(self, text):
            self.messages.append(text)

    model_config, config = preset_configs(model="gpt", hidden_size=16, num_heads=2, num_layers=1, seq_length=16,
                                          batch_size=4, max_steps=10, eval_every=5, sample_length=0, workers=1,
                                          learning_rate=0.01, lr_schedule="constant", warmup=0,
                                          checkpoint_dir=str(tmp_path / "ck"), random_seed=0)
    reporter = Messages()
    result = train(small_text, model_config, config, reporter=reporter)
    assert result.step == 10
    assert any("restored the parameters of step 5" in m for m in reporter.messages)
    assert np.isfinite(load_checkpoint(str(tmp_path / "ck")).model.params.flat).all()


def test_serve_scores_and_generates_with_a_gpt(small_text):
    import http.client
    import threading

    from charrnn.evaluate import evaluate_text
    from charrnn.io.corpus import Vocab
    from charrnn.server import ServeConfig, make_server

    vocab = Vocab(tuple("\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    model = CharGPT(GPTConfig(len(vocab), hidden_size=16, num_layers=1, num_heads=2, context_length=8),
                    rng=np.random.default_rng(0))
    server = make_server(model, vocab, ServeConfig(port=0, quiet=True, timeout=5, max_concurrent=2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        text = "To be, or not to be, that is the question."
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        conn.request("POST", "/v1/score", json.dumps({"text": text}), {"Content-Type": "application/json"})
        scored = json.loads(conn.getresponse().read())
        assert scored["chars"] == len(text)
        assert scored["loss"] == pytest.approx(evaluate_text(model, vocab, text).loss, rel=1e-6)
        conn.request("POST", "/v1/generate", json.dumps({"seed": "To", "length": 30, "random_seed": 1}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and len(response.read()) > 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
