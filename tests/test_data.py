"""Corpus reading (strict decoding, block splits, refusals), the train/val split, the B-stream chunker, eval batches."""

import codecs
import hashlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charrnn.store.corpus
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.runs.streams import Streams, eval_batches
from charrnn.store.corpus import Corpus, Remapped, corpus_from_text, read_corpus

MIXED = "Größe: 5 €\nnaïve café 😀🎉 — ok\n日本語のテキスト\n"


def write(tmp_path, content, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def offset_error(path, offset, **kw):
    """Reading path fails with a message naming exactly this byte offset."""
    with pytest.raises(CharrnnError) as info:
        read_corpus(path, **kw)
    assert re.search(rf"byte offset {offset}\b", str(info.value)), str(info.value)
    return str(info.value)


# --- reading ----------------------------------------------------------------------------------------------


def test_read_mixed_utf8(tmp_path):
    path = write(tmp_path, MIXED)
    raw = path.read_bytes()
    c = read_corpus(path)
    assert c.vocab == Vocab.from_text(MIXED)
    assert c.vocab.decode(c.data) == MIXED
    assert c.data.dtype == np.uint8
    assert c.data.nbytes == len(MIXED) < len(raw)  # one byte per character, not per UTF-8 byte
    assert c.size == len(raw)
    assert c.sha256 == hashlib.sha256(raw).hexdigest()
    assert c.name == "corpus.txt"


def test_read_matches_corpus_from_text(tmp_path):
    c = read_corpus(write(tmp_path, MIXED))
    m = corpus_from_text(MIXED)
    assert (c.size, c.sha256, c.vocab) == (m.size, m.sha256, m.vocab)
    np.testing.assert_array_equal(c.data, m.data)
    assert c.data.dtype == m.data.dtype


def test_read_more_than_256_symbols_uses_uint16(tmp_path):
    text = "".join(chr(c) for c in range(0x100, 0x100 + 300)) * 2
    c = read_corpus(write(tmp_path, text))
    assert len(c.vocab) == 300
    assert c.data.dtype == np.uint16
    assert c.vocab.decode(c.data) == text


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 11, 64])
def test_block_splits_decode_exactly(tmp_path, monkeypatch, block):
    # With tiny blocks every multi-byte character (2, 3 and 4 bytes) is split across blocks somewhere.
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", block)
    text = "ascii " + MIXED + "x" * 9 + "é😀"
    path = write(tmp_path, text)
    c = read_corpus(path)
    assert c.vocab.decode(c.data) == text
    assert c.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert c.size == len(text.encode("utf-8"))


@pytest.mark.parametrize("block", [1, 2, 64])
def test_a_leading_utf8_byte_order_mark_is_not_text(tmp_path, monkeypatch, block):
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", block)
    text = "a line\r\n\ufeffword joiner inside\r\n"  # a BOM within the text is a character (U+FEFF)
    path = write(tmp_path, codecs.BOM_UTF8 + text.encode("utf-8"))
    c = read_corpus(path)
    assert c.vocab.decode(c.data) == text
    assert c.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and c.size == len(text.encode()) + 3
    assert offset_error(write(tmp_path, codecs.BOM_UTF8 + b"ab\xff"), 5)  # offsets still count the file's bytes
    with pytest.raises(CharrnnError, match="is empty"):  # a byte-order mark alone holds no text
        read_corpus(write(tmp_path, codecs.BOM_UTF8))


def test_emoji_split_across_block_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", 7)
    text = "abcdef😀gh"  # the emoji's 4 bytes are offsets 6..9: one in the first block, three in the second
    assert len(text[:6].encode()) == 6
    c = read_corpus(write(tmp_path, text))
    assert c.vocab.decode(c.data) == text


def test_invalid_byte_offset(tmp_path):
    msg = offset_error(write(tmp_path, b"hello \xff world"), 6)
    assert "utf-8" in msg and "--encoding" in msg


def test_invalid_byte_after_multibyte_characters(tmp_path):
    # The offset counts bytes, not characters: "éé" is 4 bytes.
    offset_error(write(tmp_path, "éé".encode() + b"\xfe" + b"tail"), 4)


def test_truncated_character_at_end_of_file(tmp_path):
    offset_error(write(tmp_path, b"abc" + "€".encode()[:2]), 3)


@pytest.mark.parametrize("offset", [0, 6, 7, 8, 13, 14, 15, 20])
@pytest.mark.parametrize("prefix_char", ["a", "é"])
def test_invalid_byte_offset_across_blocks(tmp_path, monkeypatch, offset, prefix_char):
    # BLOCK = 7 puts block boundaries at 7, 14, 21: offsets 7 and 14 are just past one.
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", 7)
    width = len(prefix_char.encode())
    prefix = (prefix_char * (offset // width) + "a" * (offset % width)).encode()
    assert len(prefix) == offset
    offset_error(write(tmp_path, prefix + b"\xff" + b"rest of the text"), offset)


def test_bad_continuation_split_across_blocks(tmp_path, monkeypatch):
    # A lead byte ends block one, the next block does not continue it: the error is at the lead byte.
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", 7)
    offset_error(write(tmp_path, b"abcdef\xc3(more)"), 6)
    offset_error(write(tmp_path, b"abcde\xf0\x9f(more)"), 5)


def test_latin1_encoding(tmp_path):
    text = "café crème, naïve Größe\n"
    path = write(tmp_path, text.encode("latin-1"))
    offset_error(path, 3)  # "é" as latin-1 is the single byte 0xE9: invalid UTF-8
    c = read_corpus(path, encoding="latin-1")
    assert c.vocab.decode(c.data) == text
    assert c.size == len(text)
    assert c.sha256 == hashlib.sha256(text.encode("latin-1")).hexdigest()


def test_utf16_encoding_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", 3)
    text = "héllo 😀 wörld"
    c = read_corpus(write(tmp_path, text.encode("utf-16")), encoding="utf-16")
    assert c.vocab.decode(c.data) == text


def test_unknown_encoding(tmp_path):
    with pytest.raises(CharrnnError, match="unknown encoding 'no-such-codec'"):
        read_corpus(write(tmp_path, "abc"), encoding="no-such-codec")


@pytest.mark.parametrize("encoding", ["base64", "rot13", "hex"])
def test_non_text_codec_is_refused(tmp_path, encoding):
    # Real codec names, but bytes<->bytes or str<->str transforms: refused up front, not a traceback mid-read.
    with pytest.raises(CharrnnError, match=f"'{encoding}' is not a text encoding"):
        read_corpus(write(tmp_path, "aGVsbG8="), encoding=encoding)


def test_empty_file(tmp_path):
    with pytest.raises(CharrnnError, match="empty"):
        read_corpus(write(tmp_path, b""))


def test_directory(tmp_path):
    with pytest.raises(CharrnnError, match="directory"):
        read_corpus(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(CharrnnError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")


# The last is the usual way to meet NULs: a UTF-16 file read as UTF-8.
@pytest.mark.parametrize("content", [b"abc\x00def", "é\x00".encode(), b"\x00", "text".encode("utf-16-le")])
def test_nul_bytes_are_binary(tmp_path, content):
    with pytest.raises(CharrnnError, match="binary.*NUL"):
        read_corpus(write(tmp_path, content))


def test_nul_byte_after_block_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr(charrnn.store.corpus, "BLOCK", 4)
    with pytest.raises(CharrnnError, match="NUL"):
        read_corpus(write(tmp_path, b"abcdefgh\x00"))


def test_given_vocab_unknown_characters(tmp_path):
    path = write(tmp_path, "abcxyz é")
    with pytest.raises(CharrnnError) as info:
        read_corpus(path, vocab=Vocab.from_text("abc "))
    msg = str(info.value)
    assert "4 character(s) outside the vocabulary" in msg
    for ch in "xyzé":
        assert repr(ch) in msg


def test_given_vocab_is_used(tmp_path):
    vocab = Vocab.from_text("abcdefgh")  # a superset: indices follow it, not the file's own characters
    c = read_corpus(write(tmp_path, "hgf"), vocab=vocab)
    assert c.vocab is vocab
    assert list(c.data) == [7, 6, 5]


def test_remapped_reads_through_its_table_like_the_encoded_copy():
    base = np.array([2, 0, 1, 1, 2, 0, 2], dtype=np.uint8)
    table = np.array([5, 3, 9], dtype=np.uint8)
    data, copy = Remapped(base, table), table[base]
    assert len(data) == 7 and data.dtype == np.uint8
    part = data[2:6]
    assert isinstance(part, Remapped) and np.shares_memory(part.base, base)  # a slice is a view, not a copy
    np.testing.assert_array_equal(part[np.array([[0, 3], [1, 2]])], copy[2:6][[[0, 3], [1, 2]]])
    np.testing.assert_array_equal(np.asarray(data), copy)
    assert np.asarray(data, dtype=np.int64).dtype == np.int64
    np.testing.assert_array_equal(Streams(data, 2, 2).batch(0, offset=3)[1], Streams(copy, 2, 2).batch(0, offset=3)[1])


def test_corpus_from_text_empty():
    with pytest.raises(CharrnnError, match="empty"):
        corpus_from_text("")


# --- split ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, val_frac, n_val", [(100, 0.1, 10), (100, 0.0, 0), (7, 0.5, 4), (1000, 0.05, 50)])
def test_split(n, val_frac, n_val):
    data = np.arange(n, dtype=np.int64)
    c = Corpus("x", n, "", Vocab.from_text("a"), data)
    train, val = c.split(val_frac)
    assert len(val) == n_val
    np.testing.assert_array_equal(val, data[n - n_val :])  # the last val_frac, contiguous
    np.testing.assert_array_equal(np.concatenate([train, val]), data)


@pytest.mark.parametrize("val_frac", [-0.1, 1.0, 1.5, float("nan")])
def test_split_bad_val_frac(val_frac):
    c = corpus_from_text("abcdef")
    with pytest.raises(CharrnnError, match="val_frac"):
        c.split(val_frac)


# --- streams ----------------------------------------------------------------------------------------------


def test_streams_batches_match_direct_slicing():
    n, B, T = 103, 4, 5
    data = (np.arange(n) * 7 % 256).astype(np.uint8)  # repeated values, so also check against positions
    s = Streams(data, B, T)
    S = (n - 1) // B
    assert s.stream_len == S == 25
    assert s.chunks == S // T == 5
    for j in range(s.chunks):
        x, y = s.batch(j)
        assert x.shape == y.shape == (B, T)
        assert x.dtype == y.dtype == np.uint8
        for b in range(B):
            start = b * S + j * T
            np.testing.assert_array_equal(x[b], data[start : start + T])
            np.testing.assert_array_equal(y[b], data[start + 1 : start + T + 1])


def test_streams_targets_are_inputs_shifted():
    s = Streams(np.arange(200), 3, 8)
    for j in range(s.chunks):
        x, y = s.batch(j)
        np.testing.assert_array_equal(y, x + 1)  # the next character of the original data


def test_streams_chunks_are_contiguous():
    data = np.arange(500)
    s = Streams(data, 6, 7)
    for j in range(s.chunks - 1):
        x0, y0 = s.batch(j)
        x1, _ = s.batch(j + 1)
        np.testing.assert_array_equal(x0[:, -1] + 1, x1[:, 0])  # positions run on from chunk to chunk
        np.testing.assert_array_equal(y0[:, -1], x1[:, 0])


def test_streams_rotated_by_an_offset_wrap_around_the_split():
    n, B, T, r = 103, 4, 5, 90
    data = np.arange(n)
    s = Streams(data, B, T)
    S = s.stream_len
    for j in range(s.chunks):
        x, y = s.batch(j, offset=r)
        positions = (r + (np.arange(B) * S)[:, None] + j * T + np.arange(T)) % n
        np.testing.assert_array_equal(x, positions)
        np.testing.assert_array_equal(y, (positions + 1) % n)
    assert (s.batch(s.chunks - 1, offset=r)[0] < r).any()  # the last streams did wrap
    np.testing.assert_array_equal(s.batch(2, offset=n)[0], s.batch(2)[0])  # a whole turn is no rotation


@pytest.mark.parametrize("n, B, T", [(2, 1, 1), (11, 2, 5), (12, 2, 5), (101, 10, 10), (1000, 7, 13)])
def test_chunks_per_epoch(n, B, T):
    assert Streams(np.zeros(n), B, T).chunks == ((n - 1) // B) // T


def test_streams_last_target_is_in_range():
    n, B, T = 21, 4, 5  # exactly B*T + 1: the last target is the last character
    s = Streams(np.arange(n), B, T)
    assert s.chunks == 1
    _, y = s.batch(0)
    assert y[-1, -1] == n - 1


def test_streams_too_short_says_what_fits():
    with pytest.raises(CharrnnError) as info:
        Streams(np.zeros(50), 8, 10, split="val")
    msg = str(info.value)
    assert "val split has 50 characters" in msg
    assert "needs 81" in msg
    assert "--batch-size 4 would fit" in msg
    assert Streams(np.zeros(50), 4, 10).chunks == 1  # and the suggestion is true


def test_streams_too_short_for_any_batch():
    with pytest.raises(CharrnnError, match=r"train split has 5 characters.*even --batch-size 1 needs 11: use a"):
        Streams(np.zeros(5), 2, 10)
    assert Streams(np.zeros(11), 1, 10).chunks == 1  # and 11 is enough


@pytest.mark.parametrize("B, T", [(0, 5), (5, 0), (-1, 5)])
def test_streams_bad_sizes(B, T):
    with pytest.raises(CharrnnError, match="positive"):
        Streams(np.zeros(100), B, T)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_stream_positions_property(draw):
    B = draw.draw(st.integers(1, 8), label="B")
    T = draw.draw(st.integers(1, 12), label="T")
    n = draw.draw(st.integers(B * T + 1, B * T * 6 + 40), label="n")
    data = np.arange(n)  # each value is its own position
    s = Streams(data, B, T)
    S = (n - 1) // B
    assert s.chunks == S // T >= 1
    seen = []
    for j in range(s.chunks):
        x, y = s.batch(j)
        assert x.shape == (B, T)
        expected = (np.arange(B) * S)[:, None] + j * T + np.arange(T)  # data[b*S + j*T + t]
        np.testing.assert_array_equal(x, expected)
        np.testing.assert_array_equal(y, expected + 1)
        seen.append(x.ravel())
    seen = np.concatenate(seen)
    assert len(np.unique(seen)) == len(seen) == B * s.chunks * T  # no position twice in an epoch
    assert seen.max() < n - 1


# --- eval batches -----------------------------------------------------------------------------------------


def check_eval_coverage(n, batch_size, seq_len):
    """Run eval_batches on positions 0..n-1; return the batches after checking exact coverage."""
    data = np.arange(n)
    batches = list(eval_batches(data, batch_size, seq_len))
    if n < 2:
        assert batches == []
        return batches
    B = batches[0][0].shape[0]
    assert 1 <= B <= batch_size
    for x, y in batches:
        assert x.shape == y.shape and x.shape[0] == B and 1 <= x.shape[1] <= seq_len
        np.testing.assert_array_equal(y, x + 1)
    # all chunks but the last are full length
    lengths = [x.shape[1] for x, _ in batches]
    assert len(set(lengths[:-1])) <= 1 and lengths[-1] <= lengths[0]
    # each stream's inputs, chunk after chunk, are one contiguous run; streams follow each other
    rows = np.concatenate([x for x, _ in batches], axis=1)
    S = rows.shape[1]
    np.testing.assert_array_equal(rows.ravel(), np.arange(B * S))
    targets = np.concatenate([y for _, y in batches], axis=1).ravel()
    assert len(np.unique(targets)) == targets.size  # every target predicted once
    left_over = (n - 1) - targets.size  # characters never predicted: only the stream-cut remainder
    assert 0 <= left_over < B
    assert left_over == (n - 1) % B
    return batches


@pytest.mark.parametrize(
    "n, batch_size, seq_len, shapes",
    [
        (100, 4, 10, [(4, 10), (4, 10), (4, 4)]),  # S = 24: two full chunks and a shorter last one
        (101, 4, 10, [(4, 10), (4, 10), (4, 5)]),  # S = 25: nothing left over
        (25, 8, 10, [(2, 10), (2, 2)]),  # short split: 2 streams instead of 8
        (8, 4, 10, [(1, 7)]),  # shorter than one chunk: one stream, one short chunk
        (2, 4, 10, [(1, 1)]),
        (41, 4, 10, [(4, 10)]),
    ],
)
def test_eval_batches_shapes_and_coverage(n, batch_size, seq_len, shapes):
    batches = check_eval_coverage(n, batch_size, seq_len)
    assert [x.shape for x, _ in batches] == shapes


def test_eval_batches_left_over_count():
    # n - 1 = 102 targets over 4 streams: S = 25, 100 predicted, 2 left over at the very end.
    batches = list(eval_batches(np.arange(103), 4, 10))
    predicted = np.concatenate([y.ravel() for _, y in batches])
    assert predicted.size == 100
    assert sorted(set(range(1, 103)) - set(predicted.tolist())) == [101, 102]


@pytest.mark.parametrize("n", [0, 1])
def test_eval_batches_too_short(n):
    assert list(eval_batches(np.arange(n), 4, 10)) == []


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 400), batch_size=st.integers(1, 9), seq_len=st.integers(1, 20))
def test_eval_batches_property(n, batch_size, seq_len):
    check_eval_coverage(n, batch_size, seq_len)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 400), batch_size=st.integers(1, 9), seq_len=st.integers(1, 20), limit=st.integers(1, 500))
def test_eval_batches_limit_takes_the_start_of_every_stream(n, batch_size, seq_len, limit):
    """With a limit, each of the B streams predicts its first limit // B characters (at least one), never more
    than the whole split would: B windows spread evenly over the split."""
    data = np.arange(n)
    whole = list(eval_batches(data, batch_size, seq_len))
    cut = list(eval_batches(data, batch_size, seq_len, limit))
    B = whole[0][0].shape[0]
    rows = np.concatenate([x for x, _ in whole], axis=1)
    want = min(rows.shape[1], max(1, limit // B))
    got = np.concatenate([x for x, _ in cut], axis=1)
    np.testing.assert_array_equal(got, rows[:, :want])
