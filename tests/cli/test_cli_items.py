"""`charrnn sample` for items, on a model trained on the bundled first names: --stop, --unique, --exclude,
--json log-probabilities against a forward pass, --beam-width against greedy, --unknown skip, separators that
split samples holding blank lines, and one-line errors for bad values."""

import json
import os

import numpy as np
import pytest

from charrnn.inference.sample import generate, sample_rngs
from charrnn.io.checkpoint import load_checkpoint
from charrnn.nn.numerics import log_softmax


@pytest.fixture(scope="session")
def first_names():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data",
                        "first_names.txt")


@pytest.fixture(scope="session")
def names_model(tmp_path_factory, cli, first_names):
    """An LSTM 64 in float64 trained 300 steps on data/first_names.txt (a few seconds, once): its checkpoint."""
    ck = tmp_path_factory.mktemp("names") / "ck"
    result = cli(["train", first_names, "--checkpoint-dir", ck, "--hidden-size", "64", "--num-layers", "1",
                  "--batch-size", "16", "--seq-length", "32", "--max-steps", "300", "--eval-every", "300",
                  "--sample-length", "0", "--dtype", "float64", "--random-seed", "0", "-q"])
    assert result.exit_code == 0, result.output
    return str(ck)


def records(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def forward_logprob(ckpt, text, stopped):
    """ln P(text, and its newline if a stop ended it) after a newline, by one forward pass."""
    vocab = ckpt.vocab
    ids = np.concatenate([[vocab.newline_id()], vocab.encode(text + ("\n" if stopped else ""))])
    logits, _ = ckpt.model.forward(ids[:, None])
    logp = log_softmax(logits[:, 0].astype(np.float64))
    return float(sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1)))


def test_stop_unique_exclude_give_n_new_distinct_items(names_model, first_names, cli_stdout):
    training = set(open(first_names, encoding="utf-8").read().splitlines())
    args = ["sample", names_model, "--stop", r"\n", "--num-samples", "150", "--unique", "--exclude", first_names,
            "--random-seed", "4", "--temperature", "0.8"]
    out = cli_stdout(*args)
    names = out.split("\n")
    assert names[-1] == "" and len(names[:-1]) == 150  # one a line
    names = names[:-1]
    assert len(set(names)) == 150 and all(names) and not training & set(names)
    assert cli_stdout(*args) == out  # --random-seed: the same items


def test_json_logprob_is_a_forward_pass(names_model, cli_stdout):
    ckpt = load_checkpoint(names_model)
    for extra in ([], ["--temperature", "0.5", "--top-k", "5"], ["--repetition-penalty", "1.4"]):
        samples = records(cli_stdout("sample", names_model, "--stop", r"\n", "--num-samples", "20", "--json",
                                     "--random-seed", "2", *extra))
        assert len(samples) == 20 and {s["stopped_by"] for s in samples} == {"stop"}
        for s in samples:
            assert s["chars"] == len(s["text"]) + 1
            assert s["logprob"] == pytest.approx(forward_logprob(ckpt, s["text"], True), abs=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "gru", "gpt"])
def test_json_logprob_is_a_forward_pass_for_every_model(kind, first_names, tmp_path, cli, cli_stdout):
    """The other kinds (lstm above), each trained 40 steps on the names: --json logprob, with and without a stop."""
    ck = tmp_path / kind
    shape = ["--num-heads", "2", "--seq-length", "64"] if kind == "gpt" else ["--seq-length", "16"]
    result = cli(["train", first_names, "--model", kind, "--checkpoint-dir", ck, "--hidden-size", "16",
                  "--num-layers", "2", "--batch-size", "8", "--max-steps", "40", "--eval-every", "40",
                  "--sample-length", "0", "--dtype", "float64", "--random-seed", "0", "-q", *shape])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(str(ck))
    samples = records(cli_stdout("sample", ck, "--stop", r"\n", "--length", "6", "--num-samples", "12", "--json",
                                 "--temperature", "0.7", "--random-seed", "1"))
    assert len(samples) == 12 and {s["stopped_by"] for s in samples} == {"stop", "length"}  # both ends occur
    for s in samples:
        stopped = s["stopped_by"] == "stop"
        assert s["chars"] == len(s["text"]) + stopped
        assert s["logprob"] == pytest.approx(forward_logprob(ckpt, s["text"], stopped), abs=1e-6)


def test_beam_of_one_is_greedy_and_of_eight_at_least_as_probable(names_model, cli_stdout):
    def best(*args):
        return records(cli_stdout("sample", names_model, "--stop", r"\n", "--json", *args))

    greedy = best("--temperature", "0")[0]
    assert best("--beam-width", "1")[0] == greedy
    beam = best("--beam-width", "8", "--num-samples", "8")
    assert len(beam) == 8 and len({b["text"] for b in beam}) == 8
    assert beam[0]["logprob"] >= greedy["logprob"]
    assert [b["logprob"] for b in beam] == sorted((b["logprob"] for b in beam), reverse=True)
    ckpt = load_checkpoint(names_model)
    assert beam[0]["logprob"] == pytest.approx(forward_logprob(ckpt, beam[0]["text"], True), abs=1e-6)
    assert cli_stdout("sample", names_model, "--stop", r"\n", "--beam-width", "8", "--num-samples", "2") == "".join(
        b["text"] + "\n" for b in beam[:2])


def test_unknown_seed_characters_are_skipped_with_a_warning(ckpt_path, cli):
    common = ["sample", ckpt_path, "--length", "20", "--random-seed", "1"]
    refused = cli([*common, "--seed", "The €5 dog"])
    assert refused.exit_code == 1 and "'5', '€'" in refused.stderr and "--unknown skip" in refused.stderr
    skipped = cli([*common, "--seed", "The €5 dog", "--unknown", "skip"])
    assert skipped.exit_code == 0, skipped.output
    assert skipped.stderr.strip() == "Warning: --seed: skipped characters the model has never seen: '5', '€'"
    assert skipped.stdout == cli([*common, "--seed", "The  dog"]).stdout


def test_separators_and_json_split_samples_that_hold_blank_lines(ckpt_path, cli_stdout):
    """Samples with blank lines inside: NUL after each, or one JSON object a line, gives them back exactly."""
    ckpt = load_checkpoint(ckpt_path)
    common = ["sample", ckpt_path, "--num-samples", "6", "--length", "300", "--random-seed", "3"]
    texts = ["".join(generate(ckpt.model, ckpt.vocab, "", length=300, random_seed=rng)) for rng in sample_rngs(3, 6)]
    assert any("\n\n" in t for t in texts)  # the default blank line cannot split these
    assert cli_stdout(*common, "--separator", r"\0").split("\0") == [*texts, ""]
    assert [r["text"] for r in records(cli_stdout(*common, "--json"))] == texts
    assert cli_stdout(*common, "--separator", "--8<--") == "--8<--".join(texts) + "--8<--"


@pytest.mark.parametrize("args,status,message", [
    (["--beam-width", "0"], 2, "'--beam-width': 0 is not in the range x>=1"),
    (["--repetition-penalty", "0.5"], 2, "'--repetition-penalty': 0.5 is not in the range x>=1"),
    (["--repetition-window", "0"], 2, "'--repetition-window': 0 is not in the range x>=1"),
    (["--stop", ""], 2, "an empty text matches nowhere"),
    (["--beam-width", "4", "--num-samples", "5"], 2, "--num-samples 5 is more than the 4 texts --beam-width 4 finds"),
    (["--beam-width", "4", "--temperature", "0.5"], 2, "it takes no --temperature"),
    (["--json", "--separator", ","], 2, "give --json or --separator, not both"),
    (["--exclude", "no-such-file.txt"], 2, "'--exclude': File 'no-such-file.txt' does not exist"),
    (["--unknown", "drop"], 2, "'--unknown': 'drop' is not one of 'error', 'skip'"),
    (["--stop", "€"], 1, "--stop '€' has characters the model has never seen: '€'"),
    (["--stop", r"\n", "--length", "1", "--num-samples", "80", "--unique", "--max-tries", "2"], 1,
     "printed "),
])
def test_bad_item_options_are_one_line_errors(ckpt_path, cli, args, status, message):
    result = cli(["sample", ckpt_path, *args])
    assert result.exit_code == status, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_a_bound_reached_keeps_what_was_printed(ckpt_path, cli):
    """One character a sample, newline-ended: at most 59 different; asking 80 prints those found, then says so."""
    result = cli(["sample", ckpt_path, "--stop", r"\n", "--length", "1", "--num-samples", "80", "--unique",
                  "--random-seed", "1"])
    printed = result.stdout.splitlines()
    assert result.exit_code == 1 and 0 < len(printed) < 80 and len(set(printed)) == len(printed)
    assert f"printed {len(printed)} of 80 samples: 1,600 draws" in result.stderr


def test_api_items_example_runs(names_model, first_names, tmp_path, monkeypatch):
    """docs/api.md's items example runs as written, on the names model."""
    root = os.path.dirname(os.path.dirname(first_names))
    text = open(os.path.join(root, "docs", "api.md"), encoding="utf-8").read()
    block = text[text.index("## Items"):].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "data").mkdir()
    os.symlink(first_names, tmp_path / "data" / "first_names.txt")
    os.symlink(names_model, tmp_path / "names")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(block, namespace)
    assert len(namespace["best"]) == 3 and len(namespace["texts"]) == 64
