"""Every benchmark suite still runs: `python -m benchmarks SUITE --smoke` (toy sizes, a fraction of a second of
measuring, in this process), so that a change to charrnn cannot silently break them. Their figures mean nothing."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402

SUITES = [
    (["speed"], False),
    (["batched"], False),
    (["roofline"], False),
    (["gpt"], True),
    (["learning"], False),
    (["learning", "--model", "gpt"], True),
    (["learning", "--finetune"], False),
    (["classify"], False),
    (["serve"], False),
    (["inspect"], False),
    (["memory"], False),
    (["engine"], True),
    (["gpu"], True),
    (["items"], False),
]


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the suites' children run `python -m charrnn` / `-m benchmarks` from here
    monkeypatch.setattr(harness, "SMOKE", False)


@pytest.mark.parametrize("argv, needs_torch", SUITES, ids=[" ".join(a) for a, _ in SUITES])
def test_suite_runs(argv, needs_torch, capsys):
    if needs_torch:
        pytest.importorskip("torch")
    assert not main([*argv, "--smoke", "--markdown"])
    out = capsys.readouterr().out
    assert out.startswith("CPU: ")
    assert "\n| " in out  # a Markdown table with at least its header


def test_child_runs_without_forced_kernel(monkeypatch):
    from benchmarks import speed

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "OPENBLAS_CORETYPE" not in harness.child_env(1)
    assert harness.child_env(1)["OPENBLAS_NUM_THREADS"] == "1"
    result = harness.run_child(speed.products_alone, hidden=8, layers=1, seconds=0.01)
    assert result["chars_per_sec"] > 0 and result["peak_rss_mb"] > 0


def test_ratio_row_takes_best_of_rounds():
    results = {"ours": [{"chars_per_sec": 10.0}, {"chars_per_sec": 12.0}],
               "peer": [{"chars_per_sec": 5.0}, {"chars_per_sec": 8.0}]}
    row = harness.ratio_row(results, "ours", "peer")
    assert row["ratio"] == pytest.approx(1.5) and row["per_round"] == "1.50-2.00"


def test_usage_lists_every_suite(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"\n    {suite} " in out for suite in ("speed", "batched", "roofline", "gpt", "learning", "classify",
                                                      "serve", "memory", "engine", "items"))
