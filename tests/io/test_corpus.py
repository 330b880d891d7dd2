"""Corpora (io/corpus.py): streaming vocabulary, the id cache, Unicode and bytes, BOM and line endings, several
files and directories with each file's tail held out in proportion, batching."""

import json
import os

import numpy as np
import pytest

import charrnn.io.corpus as corpus_module
from charrnn.io.corpus import (
    CorpusError,
    StreamBatches,
    Vocab,
    WindowBatches,
    batches_for,
    corpus_files,
    load_corpus,
    read_codes,
    scan_vocab,
)


def decode(vocab, ids):
    return "".join(vocab.symbols[i] for i in ids)


def test_round_trip_with_bom_and_crlf(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffline one\r\nline two\r\n".encode("utf-8"))
    corpus = load_corpus(str(path), str(tmp_path / "ck"))
    assert decode(corpus.vocab, corpus.ids) == "line one\r\nline two\r\n"  # BOM dropped, CR LF kept
    assert corpus.ids.dtype == np.uint8


def test_cjk_gets_a_wide_id_cache_and_chunk_boundaries_are_safe(tmp_path):
    rng = np.random.default_rng(0)
    text = "".join(chr(c) for c in rng.integers(0x4E00, 0x4E00 + 3000, 20_000)) + "\n"
    path = tmp_path / "cjk.txt"
    path.write_text(text, encoding="utf-8")
    vocab, counts = scan_vocab(str(path))
    assert len(vocab) > 2000 and counts.sum() == len(text)
    pieces = list(read_codes(str(path), chunk_bytes=1001))  # splits multi-byte characters across chunks
    assert "".join(chr(c) for piece in pieces for c in piece) == text
    corpus = load_corpus(str(path), str(tmp_path / "ck"))
    assert corpus.ids.dtype == np.uint16 and decode(corpus.vocab, corpus.ids) == text


def test_cache_is_reused_then_rebuilt_when_the_corpus_changes(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabc\n" * 100)
    ck = str(tmp_path / "ck")
    first = load_corpus(str(path), ck)
    cache = [f for f in os.listdir(ck) if f.endswith(".ids.npy")]
    assert len(cache) == 1 and isinstance(first.ids, np.memmap)
    stamp = os.stat(os.path.join(ck, cache[0])).st_mtime_ns
    load_corpus(str(path), ck)
    assert os.stat(os.path.join(ck, cache[0])).st_mtime_ns == stamp  # reused
    path.write_text("xyz xyz\n" * 100)
    changed = load_corpus(str(path), ck)
    assert decode(changed.vocab, changed.ids) == "xyz xyz\n" * 100 and set(changed.vocab.symbols) == set("xyz \n")


def test_a_cache_without_digests_is_hashed_once_then_keeps_them(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabc\n" * 100)
    ck = str(tmp_path / "ck")
    first = load_corpus(str(path), ck)
    meta_path = os.path.join(ck, next(f for f in os.listdir(ck) if f.endswith(".json")))
    with open(meta_path) as f:
        meta = json.load(f)
    del meta["sha256"]  # as a cache written before the digests were kept
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    hashed, hash_file = [], corpus_module.file_digest
    monkeypatch.setattr(corpus_module, "file_digest", lambda p: hashed.append(p) or hash_file(p))
    assert load_corpus(str(path), ck).digests == load_corpus(str(path), ck).digests == first.digests
    assert len(hashed) == 1  # the second start read the digest from the cache


def test_invalid_utf8_names_the_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"x" * 5000 + b"\xc3\x28" + b"y" * 10)
    with pytest.raises(CorpusError, match="at byte 5000; use --bytes"):
        scan_vocab(str(path))
    vocab, _ = scan_vocab(str(path), bytes_mode=True)
    assert vocab.bytes_mode and 0xC3 in vocab.symbols


def test_other_encodings(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("façade naïve\n".encode("latin-1"))
    corpus = load_corpus(str(path), str(tmp_path / "ck"), encoding="latin-1")
    assert decode(corpus.vocab, corpus.ids) == "façade naïve\n"


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


def test_stream_batches_are_contiguous_streams():
    ids = np.arange(1000)
    batches = StreamBatches(ids, batch_size=4, seq_length=10)
    assert batches.stream_length == 249 and batches.chunks_per_epoch == 24
    x0, y0 = batches.chunk(0)
    x1, _ = batches.chunk(1)
    assert x0.shape == (10, 4)
    np.testing.assert_array_equal(x0[:, 2], np.arange(498, 508))  # stream 2 starts at 2 * 249
    np.testing.assert_array_equal(y0, x0 + 1)  # targets are the next character
    np.testing.assert_array_equal(x1[0], x0[-1] + 1)  # chunk 1 continues where chunk 0 ended


def test_window_batches_are_random_windows_fixed_by_seed_epoch_and_chunk():
    ids = np.arange(1000)
    batches = WindowBatches(ids, batch_size=4, seq_length=10, seed=7)
    assert batches.chunks_per_epoch == StreamBatches(ids, 4, 10).chunks_per_epoch == 24
    x, y = batches.chunk(3, epoch=2)
    assert x.shape == y.shape == (10, 4)
    np.testing.assert_array_equal(x, x[0] + np.arange(10)[:, None])  # each column a window of the text
    np.testing.assert_array_equal(y, x + 1)
    starts = np.concatenate([batches.chunk(j, e)[0][0] for e in range(3) for j in range(24)])
    assert starts.min() >= 0 and starts.max() + 10 <= 999  # every target inside the text
    assert len(set(starts.tolist())) > 200  # places all over it
    again = WindowBatches(ids, 4, 10, seed=7)
    for j, e in [(3, 2), (0, 0), (23, 5)]:  # the same windows for a resumed run
        np.testing.assert_array_equal(again.chunk(j, e)[0], batches.chunk(j, e)[0])
    assert not np.array_equal(batches.chunk(3, 1)[0], x)  # another epoch, other windows
    assert not np.array_equal(WindowBatches(ids, 4, 10, seed=8).chunk(3, 2)[0], x)


def test_recurrent_models_read_streams_and_gpt_random_windows():
    from charrnn.models.gpt import CharGPT, GPTConfig
    from charrnn.models.rnn import CharRNN, ModelConfig

    ids = np.arange(100)
    rnn = CharRNN(ModelConfig(5, "gru", 4, 1), rng=np.random.default_rng(0))
    gpt = CharGPT(GPTConfig(5, hidden_size=4, num_layers=1, num_heads=1, context_length=8),
                  rng=np.random.default_rng(0))
    assert type(batches_for(rnn, ids, 2, 8, seed=0)) is StreamBatches
    assert type(batches_for(gpt, ids, 2, 8, seed=0)) is WindowBatches
