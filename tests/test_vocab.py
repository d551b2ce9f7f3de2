"""Vocab: one symbol per code point, smallest index dtype, exact round trips, unknown characters named."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.core.vocab import Vocab, index_dtype
from charrnn.errors import CharrnnError


def chars_without_surrogates(n):
    """n distinct characters, skipping U+D800..U+DFFF so the text is also valid UTF-8."""
    return [chr(c) for c in range(0x10FFFF) if not 0xD800 <= c <= 0xDFFF][:n]


# --- building ---------------------------------------------------------------------------------------------


def test_vocab_is_sorted_set_of_code_points():
    text = "ßébaé😀a\n ß"
    v = Vocab.from_text(text)
    assert v.chars == ["\n", " ", "a", "b", "ß", "é", "😀"]
    assert len(v) == 7
    assert v.code_points.dtype == np.int32
    np.testing.assert_array_equal(v.code_points, [10, 32, 97, 98, 0xDF, 0xE9, 0x1F600])


def test_multibyte_characters_are_one_symbol_each():
    v = Vocab.from_text("é😀ß")
    idx = v.encode("é😀ß😀")
    assert idx.shape == (4,)  # characters, not UTF-8 bytes (which would be 2 + 4 + 2 + 4)
    assert list(idx) == [1, 2, 0, 2]


def test_combining_sequence_is_two_symbols():
    # "é" as e + U+0301 is two code points, and stays two: no normalisation behind the user's back.
    v = Vocab.from_text("e\u0301")
    assert v.chars == ["e", "\u0301"]
    assert v.decode(v.encode("e\u0301")) == "e\u0301"


def test_empty_vocab_refused():
    with pytest.raises(CharrnnError, match="empty"):
        Vocab.from_text("")


def test_equality_and_membership():
    assert Vocab.from_text("abc") == Vocab.from_text("cba")
    assert Vocab.from_text("abc") != Vocab.from_text("abd")
    v = Vocab.from_text("ab😀")
    assert "😀" in v and "a" in v
    assert "c" not in v and "ab" not in v and "\U0010ffff" not in v


# --- index dtype ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, dtype",
    [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32), (2**32, np.uint32)],
)
def test_index_dtype_boundaries(size, dtype):
    assert index_dtype(size) == np.dtype(dtype)


def test_index_dtype_too_large():
    with pytest.raises(CharrnnError, match="too large"):
        index_dtype(2**32 + 1)


@pytest.mark.parametrize("size, dtype", [(256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)])
def test_encode_dtype_at_boundaries(size, dtype):
    chars = chars_without_surrogates(size)
    v = Vocab(chars)
    assert len(v) == size
    assert v.dtype == np.dtype(dtype)
    text = "".join(chars)
    idx = v.encode(text)
    assert idx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(idx, np.arange(size))  # chars are already sorted, so index == position
    assert v.decode(idx) == text


def test_encode_empty_text():
    v = Vocab.from_text("ab")
    idx = v.encode("")
    assert idx.shape == (0,) and idx.dtype == np.uint8
    assert v.decode(idx) == ""


# --- round trip -------------------------------------------------------------------------------------------


def test_round_trip_mixed_text():
    text = "Größe: 5 €, naïve café 😀🎉\n\tend"
    v = Vocab.from_text(text)
    assert v.decode(v.encode(text)) == text


def test_decode_accepts_any_integer_dtype():
    v = Vocab.from_text("abc")
    for dtype in (np.uint8, np.int16, np.int32, np.int64, np.uint64):
        assert v.decode(np.array([2, 0, 1], dtype=dtype)) == "cab"
    assert v.decode([2, 0, 1]) == "cab"


@pytest.mark.parametrize("bad", [[3], [-1], [0, 1, 99]])
def test_decode_out_of_range(bad):
    v = Vocab.from_text("abc")
    with pytest.raises(CharrnnError, match="out of range"):
        v.decode(np.array(bad))


@pytest.mark.parametrize("code_point", [0xD800, 0xDBFF, 0xDC00, 0xDFFF])
def test_a_lone_surrogate_is_refused_as_a_symbol(code_point):
    # A Python str may hold one (unicode_escape decodes "\\ud800" to it), but no text can: sampling it could not
    # be printed or written as UTF-8.
    with pytest.raises(CharrnnError, match=f"lone surrogate U\\+{code_point:04X}"):
        Vocab.from_text(f"a{chr(code_point)}b")
    with pytest.raises(CharrnnError, match="lone surrogate"):
        Vocab.from_code_points(np.array([97, code_point], np.int32))


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_round_trip_property(text):
    v = Vocab.from_text(text)
    idx = v.encode(text)
    assert idx.shape == (len(text),)
    assert v.decode(idx) == text


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_vocab_is_exactly_sorted_set_property(text):
    v = Vocab.from_text(text)
    assert v.chars == sorted(set(text))
    assert list(v.code_points) == sorted({ord(c) for c in text})
    assert v.dtype == index_dtype(len(set(text)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 0xD7FF), st.integers(0xE000, 0x10FFFF)).map(chr), min_size=1).map("".join))
def test_round_trip_property_any_code_point(text):
    # Every code point but the surrogates (refused above), astral ones too.
    v = Vocab.from_text(text)
    assert v.decode(v.encode(text)) == text


# --- unknown characters -----------------------------------------------------------------------------------


def test_unknown_characters_named_with_offset():
    v = Vocab.from_text("abc ")
    with pytest.raises(CharrnnError) as info:
        v.encode("abc éx😀 aé")
    msg = str(info.value)
    assert "3 character(s)" in msg
    for ch in "éx😀":
        assert repr(ch) in msg
    assert "U+00E9" in msg and "U+1F600" in msg
    assert re.search(r"offset 4\b", msg)  # "é" is the 5th character (character offset, not byte offset)


def test_unknown_character_beyond_largest_code_point():
    # Code points above the vocabulary's maximum are outside the lookup table; still an error, not an IndexError.
    v = Vocab.from_text("ab")
    with pytest.raises(CharrnnError, match=r"'\\U0010ffff'.*offset 2\b"):
        v.encode("ab\U0010ffff")


def test_unknown_characters_listing_is_bounded():
    v = Vocab.from_text("a")
    with pytest.raises(CharrnnError, match="and 5 more"):
        v.encode("a" + "bcdefghijklmnop")


def test_unknown_lists_first_appearance_order():
    v = Vocab.from_text("ab")
    assert v.unknown("azbyzx") == ["z", "y", "x"]


# --- code-point serialisation -----------------------------------------------------------------------------


def test_code_points_round_trip():
    v = Vocab.from_text("hello, wörld 😀")
    cps = v.code_points
    assert cps.dtype == np.int32 and cps.ndim == 1
    v2 = Vocab.from_code_points(cps.copy())
    assert v2 == v
    assert v2.dtype == v.dtype
    np.testing.assert_array_equal(v2.code_points, cps)
    assert v2.decode(v.encode("wörld 😀")) == "wörld 😀"


def test_code_points_round_trip_through_npz(tmp_path):
    v = Vocab.from_text("abc\x00\x01é")  # leading NUL survives, unlike a NumPy string array
    np.savez(tmp_path / "v.npz", vocab=v.code_points)
    with np.load(tmp_path / "v.npz", allow_pickle=False) as z:
        assert Vocab.from_code_points(z["vocab"]) == v


@pytest.mark.parametrize(
    "cps",
    [
        [98, 97],  # unsorted
        [97, 97, 98],  # duplicate
        [-1, 97],  # negative
        [97, 0x110000],  # beyond Unicode
        [],  # empty
        [[97, 98]],  # not 1-D
        [97.0, 98.0],  # not integers
    ],
)
def test_from_code_points_refuses_bad_arrays(cps):
    with pytest.raises(CharrnnError):
        Vocab.from_code_points(np.array(cps))


def test_from_code_points_accepts_largest_code_point():
    v = Vocab.from_code_points(np.array([0, 0x10FFFF], dtype=np.int32))
    assert v.chars == ["\x00", "\U0010ffff"]
