"""Looking inside a model: `charrnn viz` writes one self-contained HTML page of what a model does with a text.

features   simple features of a text, one value per character: inside quotes, position in the line, ...
analysis   the units ranked against the features, gate saturation, the look-back curve
svg        small inline SVG charts
page       the measurements and the page, from the template page.html (its CSS and script inline)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from charrnn.core.model import LN2
from charrnn.core.vocab import Vocab, describe_chars
from charrnn.errors import CharrnnError
from charrnn.runs.score import encode
from charrnn.runs.viz.features import code_points
from charrnn.runs.viz.page import measure, render
from charrnn.store.checkpoint import Checkpoint

DEFAULT_LENGTH = 3000  # characters shown: a page of about 1 MB per 1,000 units
GENERATOR = '<meta name="generator" content="charrnn viz">'  # in the head of every page: one of ours


def known_prefix(pieces: Iterable[str], vocab: Vocab, length: int) -> tuple[str, Counter]:
    """The text's first `length` characters that the model knows (reading no further), and the characters
    dropped before them for being outside its vocabulary."""
    kept, skipped, need = [], Counter(), length
    for piece in pieces:
        e = encode(vocab, [piece])[0]
        if len(e.idx) > need:  # cut the piece right after its need-th known character
            cut = np.flatnonzero(vocab.encode_code_points(code_points(piece)) >= 0)[need - 1] + 1
            e = encode(vocab, [piece[:cut]])[0]
        kept.append(vocab.decode(e.idx))
        skipped += e.unknown
        need -= len(e.idx)
        if need == 0:
            break
    return "".join(kept), skipped


def make_page(ck: Checkpoint, checkpoint_name: str, pieces: Iterable[str], text_name: str,
              length: int = DEFAULT_LENGTH) -> tuple[str, dict]:
    """The page for the first `length` characters of a text (pieces of it, as they are read), and its facts."""
    text, skipped = known_prefix(pieces, ck.vocab, length)
    if not text:
        raise CharrnnError(f"{text_name} has no character in the model's vocabulary" if skipped else
                           f"{text_name} is empty")
    cfg, meta = ck.model.cfg, ck.meta
    step = (meta.get("progress") or {}).get("step")
    m = measure(ck.model, ck.vocab, text, meta.get("history") or [])
    facts = {
        "checkpoint": checkpoint_name + (f" (step {step:,})" if step is not None else ""),
        "model": f"{cfg.cell.upper()} {cfg.layers}x{cfg.hidden}, vocabulary {cfg.vocab_size}",
        "text": f"{text_name}: the first {len(text):,} characters" if len(text) == length else
                f"{text_name}: {len(text):,} characters",
        "surprisal": f"{float(np.mean(m['bits'])):.3f} bits/char on these characters "
                     f"({float(np.mean(m['bits'])) * LN2:.3f} nats/char)",
    }
    if skipped:
        facts["skipped"] = (f"{sum(skipped.values()):,} character(s) outside the vocabulary: "
                            f"{describe_chars([ch for ch, _ in skipped.most_common()])}")
    return render(m, text, ck.vocab, facts), facts
