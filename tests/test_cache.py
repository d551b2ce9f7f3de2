"""The encoded-corpus cache: written for big files, memory-mapped on the next read, invalidated by changes."""

import json
import os
import stat

import numpy as np
import pytest

import charrnn.store.corpus
from charrnn.core.vocab import Vocab
from charrnn.runs.streams import Streams
from charrnn.store.corpus import read_corpus

TEXT = "Ünïcode and ASCII, mixed: 😀 — " * 400 + "plain ascii tail " * 2000


@pytest.fixture
def big(tmp_path, monkeypatch):
    monkeypatch.setattr(charrnn.store.corpus, "CACHE_MIN_BYTES", 1000)
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", 4096)  # several ASCII and non-ASCII blocks
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "big.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_cache_is_written_then_memory_mapped(big):
    first = read_corpus(big)
    assert (big.parent / "big.txt.charrnn-cache.npy").exists()
    second = read_corpus(big)
    assert isinstance(second.data, np.memmap)
    assert second.vocab == first.vocab and second.sha256 == first.sha256 and second.size == first.size
    np.testing.assert_array_equal(second.data, first.data)
    assert second.vocab.decode(second.data) == TEXT
    uncached = read_corpus(big, cache=False)
    assert not isinstance(uncached.data, np.memmap) and uncached.sha256 == first.sha256


def test_changed_file_or_encoding_invalidates(big):
    read_corpus(big)
    big.write_text(TEXT + "new words\n", encoding="utf-8")
    changed = read_corpus(big)
    assert changed.vocab.decode(changed.data) == TEXT + "new words\n"
    big.write_text("caf\u00e9 " * 500, encoding="utf-8")
    as_utf8 = read_corpus(big)
    as_latin1 = read_corpus(big, encoding="latin-1")  # the same bytes, other characters
    assert as_utf8.vocab != as_latin1.vocab and as_latin1.vocab.decode(as_latin1.data).startswith("cafÃ©")


def test_damaged_cache_is_rebuilt(big):
    read_corpus(big)
    (big.parent / "big.txt.charrnn-cache.json").write_text("{broken")
    again = read_corpus(big)
    assert again.vocab.decode(again.data) == TEXT
    meta = json.loads((big.parent / "big.txt.charrnn-cache.json").read_text())
    assert meta["chars"] == len(TEXT)


def test_given_vocabulary_reindexes_cached_data(big):
    read_corpus(big)
    wider = Vocab(set(TEXT) | set("#@!"))
    corpus = read_corpus(big, vocab=wider)
    assert corpus.vocab == wider and wider.decode(corpus.data) == TEXT


def test_reindexed_cached_data_stays_memory_mapped(big):
    """A resumed or fine-tuning run with a wider vocabulary reads the cache through a table: no in-memory copy
    (a gigabyte corpus would cost one to eight bytes a character), the same batches as an encoded copy."""
    read_corpus(big)
    wider = Vocab(set(TEXT) | set("#@!"))
    corpus = read_corpus(big, vocab=wider)
    train, val = corpus.split(0.1)
    assert isinstance(corpus.data.base, np.memmap) and np.shares_memory(train.base, corpus.data.base)
    copy = wider.encode(TEXT)
    streams, direct = Streams(train, 8, 16), Streams(copy[: len(train)], 8, 16)
    for chunk, offset in [(0, 0), (3, 0), (2, 117)]:
        for got, want in zip(streams.batch(chunk, offset=offset), direct.batch(chunk, offset=offset), strict=True):
            assert got.dtype == wider.dtype
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.asarray(val), copy[len(train) :])


def test_cache_file_gets_the_permissions_of_a_new_file(big):
    before = os.umask(0o022)
    try:
        read_corpus(big)
    finally:
        os.umask(before)
    assert stat.S_IMODE((big.parent / "big.txt.charrnn-cache.npy").stat().st_mode) == 0o644
