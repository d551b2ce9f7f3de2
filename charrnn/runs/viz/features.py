"""Simple features of a text that a unit of a model might track, one value per character: what the state holds
after reading that character.  Each is computed from the text alone, in a few NumPy passes.  The text is taken
to begin a line, as `charrnn viz` reads it after a newline."""

from __future__ import annotations

import numpy as np

OPENING, CLOSING = "([{", ")]}"
QUOTES = '"“”'  # a straight quote toggles; curly ones open and close


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


def char_class(text: str, test) -> np.ndarray:
    """A bool per character: test(ch), evaluated once per distinct character."""
    cps = code_points(text)
    distinct, inverse = np.unique(cps, return_inverse=True)
    return np.array([test(chr(c)) for c in distinct], bool)[inverse].reshape(cps.shape)


def inside_quotes(text: str) -> np.ndarray:
    """After the opening quote up to, not after, the closing one: a straight quote " opens when outside and
    closes when inside; “ opens and ” closes."""
    cps = code_points(text)
    straight, opening, closing = (cps == ord(q) for q in QUOTES)
    depth = np.cumsum(opening.astype(np.int64) - closing)  # curly quotes nest
    return (np.cumsum(straight) % 2 == 1) | (depth > 0)


def inside_brackets(text: str) -> np.ndarray:
    """After an opening bracket up to, not after, its closing one; a stray closing bracket opens nothing."""
    cps = code_points(text)
    step = np.isin(cps, code_points(OPENING)).astype(np.int64) - np.isin(cps, code_points(CLOSING))
    depth = np.cumsum(step)
    return (depth - np.minimum.accumulate(np.minimum(depth, 0))) > 0  # depth counted from its lowest point


def line_position(text: str) -> np.ndarray:
    """Characters since the last newline: 0 at a newline, 1 at the first character of a line."""
    cps = code_points(text)
    at = np.arange(len(cps))
    return (at - np.maximum.accumulate(np.where(cps == ord("\n"), at, -1))).astype(np.float64)


def word_start(text: str) -> np.ndarray:
    """The first character of a word (a run of letters and digits)."""
    word = char_class(text, str.isalnum)
    return word & ~np.concatenate([[False], word[:-1]])


def after_newline(text: str) -> np.ndarray:
    """The first character of a line."""
    cps = code_points(text)
    return np.concatenate([[True], cps[:-1] == ord("\n")])[: len(cps)]


# name -> (function, binary): a binary feature is ranked by a threshold probe, the others by correlation
FEATURES = {
    "inside quotes": (inside_quotes, True),
    "inside brackets": (inside_brackets, True),
    "position in the line": (line_position, False),
    "start of a word": (word_start, True),
    "upper case": (lambda text: char_class(text, str.isupper), True),
    "just after a newline": (after_newline, True),
}
