"""Corpora: streaming vocabulary, id cache, Unicode and bytes, BOM and line endings, batching."""

import os

import numpy as np
import pytest

from charrnn.io.corpus import (
    CorpusError,
    StreamBatches,
    WindowBatches,
    batches_for,
    load_corpus,
    read_codes,
    scan_vocab,
)


def decode(corpus):
    return "".join(corpus.vocab.symbols[i] for i in corpus.ids)


def test_round_trip_with_bom_and_crlf(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffline one\r\nline two\r\n".encode("utf-8"))
    corpus = load_corpus(str(path), str(tmp_path / "ck"))
    assert decode(corpus) == "line one\r\nline two\r\n"  # BOM dropped, CR LF kept
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
    assert corpus.ids.dtype == np.uint16 and decode(corpus) == text


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
    assert decode(changed) == "xyz xyz\n" * 100 and set(changed.vocab.symbols) == set("xyz \n")


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
    assert decode(corpus) == "façade naïve\n"


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
    from charrnn.gpt import CharGPT, GPTConfig
    from charrnn.rnn import CharRNN, ModelConfig

    ids = np.arange(100)
    rnn = CharRNN(ModelConfig(5, "gru", 4, 1), rng=np.random.default_rng(0))
    gpt = CharGPT(GPTConfig(5, hidden_size=4, num_layers=1, num_heads=1, context_length=8),
                  rng=np.random.default_rng(0))
    assert type(batches_for(rnn, ids, 2, 8, seed=0)) is StreamBatches
    assert type(batches_for(gpt, ids, 2, 8, seed=0)) is WindowBatches
