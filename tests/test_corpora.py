"""Several corpora: files and directories, each file's tail held out in proportion, the id cache."""

import os

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import main
from charrnn.io.checkpoint import load_checkpoint
from charrnn.io.corpus import CorpusError, Vocab, corpus_files, load_corpus


def decode(vocab, ids):
    return "".join(vocab.symbols[i] for i in ids)


@pytest.fixture
def texts(tmp_path):
    """Three real texts of different lengths (slices of the bundled corpus), as files a.txt, b.txt, sub/c.txt."""
    bundled = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "shakespeare.txt")
    with open(bundled, encoding="utf-8") as f:
        text = f.read(9000)
    pieces = {"a.txt": text[:2000], "b.txt": text[2000:5000], "sub/c.txt": text[5000:9000] + "Ωé\n"}
    for name, piece in pieces.items():
        (tmp_path / "corpus" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "corpus" / name).write_text(piece, encoding="utf-8")
    return tmp_path / "corpus", pieces


def test_each_files_tail_is_held_out_in_proportion(tmp_path, texts):
    root, pieces = texts
    files = [str(root / n) for n in ("b.txt", "a.txt", "sub/c.txt")]  # the order given is the order trained
    corpus = load_corpus(files, str(tmp_path / "ck"), val_frac=0.1)
    order = [pieces[n] for n in ("b.txt", "a.txt", "sub/c.txt")]
    heads = "".join(p[: len(p) - int(len(p) * 0.1)] for p in order)
    tails = "".join(p[len(p) - int(len(p) * 0.1) :] for p in order)
    assert decode(corpus.vocab, corpus.train_ids) == heads
    assert decode(corpus.vocab, corpus.val_ids) == tails
    assert [n for _, n in corpus.files] == [len(p) for p in order]
    assert set(corpus.vocab.symbols) == set("".join(order)) and {"Ω", "é"} <= set(corpus.vocab.symbols)
    np.testing.assert_array_equal(corpus.counts, [sum(p.count(s) for p in order) for s in corpus.vocab.symbols])


def test_a_directory_is_its_text_files_in_sorted_order(tmp_path, texts):
    root, pieces = texts
    (root / ".hidden.txt").write_text("never read")
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01binary")
    ck = root / "checkpoints"  # a checkpoint directory inside the corpus is never read
    assert corpus_files([str(root)], skip_dir=str(ck)) == [str(root / n) for n in ("a.txt", "b.txt", "sub/c.txt")]
    corpus = load_corpus([str(root)], str(ck), val_frac=0.0)
    assert decode(corpus.vocab, corpus.ids) == pieces["a.txt"] + pieces["b.txt"] + pieces["sub/c.txt"]
    again = load_corpus([str(root)], str(ck), val_frac=0.0)  # the cache it wrote into root/checkpoints is skipped
    assert len(again.files) == 3
    assert corpus_files([str(root)], bytes_mode=True, skip_dir=str(ck))[2] == str(root / "image.bin")


def test_cache_is_reused_while_unchanged_and_rebuilt_when_any_file_changes(tmp_path, texts):
    root, pieces = texts
    files, ck = [str(root / "a.txt"), str(root / "b.txt")], str(tmp_path / "ck")
    load_corpus(files, ck, val_frac=0.1)
    (cache,) = [os.path.join(ck, f) for f in os.listdir(ck) if f.endswith(".ids.npy")]
    stamp = os.stat(cache).st_mtime_ns
    load_corpus(files, ck, val_frac=0.1)
    assert os.stat(cache).st_mtime_ns == stamp  # unchanged: reused, not re-encoded
    (root / "b.txt").write_text(pieces["b.txt"].upper(), encoding="utf-8")  # the second file changes
    changed = load_corpus(files, ck, val_frac=0.1)
    assert os.stat(cache).st_mtime_ns != stamp
    assert decode(changed.vocab, changed.train_ids).endswith(pieces["b.txt"].upper()[: 3000 - 300])
    stamp = os.stat(cache).st_mtime_ns
    other_split = load_corpus(files, ck, val_frac=0.2)  # the layout follows the split: rebuilt
    assert os.stat(cache).st_mtime_ns != stamp and len(other_split.val_ids) == 400 + 600


def test_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(CorpusError, match="empty: no text files in this directory"):
        corpus_files([str(tmp_path / "empty")])
    with pytest.raises(CorpusError, match="nope.txt: no such file or directory"):
        corpus_files([str(tmp_path / "nope.txt")])
    (tmp_path / "e1.txt").write_text("")
    (tmp_path / "e2.txt").write_text("")
    with pytest.raises(CorpusError, match=r"the corpus \(2 files\): the corpus is empty"):
        load_corpus([str(tmp_path / "e1.txt"), str(tmp_path / "e2.txt")], str(tmp_path / "ck"))


def test_a_given_vocabulary_is_kept_extended_or_enforced(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello world\n" * 50)
    old = Vocab(tuple(sorted("abcdehlo \n")))
    extended = load_corpus(str(path), str(tmp_path / "ck"), vocab=old, extend_vocab=True)
    assert extended.vocab.symbols == tuple(sorted(set("abcdehlo \nrw")))
    assert decode(extended.vocab, extended.ids) == "hello world\n" * 50
    assert extended.counts[extended.vocab.symbols.index("a")] == 0
    with pytest.raises(CorpusError, match=r"vocabulary differs from the checkpoint's \(new: 'r', 'w'\)"):
        load_corpus(str(path), str(tmp_path / "ck"), vocab=old)
    subset = load_corpus(str(path), str(tmp_path / "ck"), vocab=extended.vocab)  # a subset resumes
    assert subset.vocab == extended.vocab


def test_train_on_files_and_a_directory_from_the_command_line(tmp_path, texts):
    root, pieces = texts
    ck = tmp_path / "ck"
    tiny = ["--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "16",
            "--sample-length", "0", "--random-seed", "0", "--max-steps", "5"]
    (root / "sub" / "d.txt").write_text(pieces["a.txt"][::-1], encoding="utf-8")
    args = ["train", str(root / "b.txt"), str(root / "sub"), "--checkpoint-dir", str(ck), *tiny]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    files = [str(root / "b.txt"), str(root / "sub" / "c.txt"), str(root / "sub" / "d.txt")]
    assert load_checkpoint(str(ck)).meta["corpus"] == [os.path.abspath(f) for f in files]
    n_val = sum(int(len(p) * 0.1) for p in (pieces["b.txt"], pieces["sub/c.txt"], pieces["a.txt"]))
    assert f"validation {n_val:,}" in result.stdout and "corpus: 3 files" in result.stderr
    (cache,) = [ck / f for f in os.listdir(ck) if f.endswith(".ids.npy")]
    stamp = cache.stat().st_mtime_ns
    resumed = CliRunner().invoke(main, [*args, "--resume", "--max-steps", "8"])
    assert resumed.exit_code == 0, resumed.output
    assert cache.stat().st_mtime_ns == stamp  # unchanged files: the cache is reused
    (root / "sub" / "d.txt").write_text(pieces["a.txt"], encoding="utf-8")  # one file changes
    again = CliRunner().invoke(main, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert cache.stat().st_mtime_ns != stamp  # rebuilt
    missing = CliRunner().invoke(main, ["train", str(root / "b.txt"), str(root / "nope.txt")])
    assert missing.exit_code == 2 and len(missing.stderr.splitlines()) == 1
    assert "nope.txt" in missing.stderr and "does not exist" in missing.stderr
