"""`charrnn viz`: the text features, the unit rankings, gate saturation and the look-back curve against brute
force; what small models learn (a quote unit, an RNN that forgets faster than an LSTM); and the page: parsed as
HTML, nothing outside it, every character escaped, loaded by a headless browser where there is one."""

import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from models import random_model

from charrnn.cli.commands import main
from charrnn.core.model import Model, ModelConfig, cross_entropy
from charrnn.core.optim import clip_gradients, make_optimizer
from charrnn.core.sample import prime_state
from charrnn.core.trace import trace
from charrnn.core.vocab import Vocab
from charrnn.runs.streams import Streams
from charrnn.runs.viz import analysis, make_page
from charrnn.runs.viz.features import FEATURES
from charrnn.runs.viz.page import LEVELS, quantize
from charrnn.store import checkpoint

# -- features and measurements ------------------------------------------------------------------------------------


def test_features_of_a_small_text():
    text = 'Ab "cd (e)" f\n(g [h] "i\nj") K) l'
    expected = {  # the state after each character; a stray ")" opens nothing
        "inside quotes": "00011111110000000000011110000000",
        "inside brackets": "00000001100000111111111111000000",
        "start of a word": "10001000100010010010001010001001",
        "upper case": "10000000000000000000000000001000",
        "just after a newline": "10000000000000100000000010000000",
    }
    for name, bits in expected.items():
        assert "".join("1" if v else "0" for v in FEATURES[name][0](text)) == bits, name
    position = FEATURES["position in the line"][0](text)
    assert position[:3].tolist() == [1, 2, 3] and position[13] == 0 and position[14] == 1
    assert FEATURES["inside quotes"][0]("a “b ”c")[[0, 2, 3, 5, 6]].tolist() == [False, True, True, False, False]


def brute_balanced_accuracy(v: np.ndarray, labels: np.ndarray) -> float:
    best = 0.5
    for threshold in np.unique(v):
        above = v > threshold
        rate = (above[labels].mean() + (~above[~labels]).mean()) / 2
        best = max(best, rate, 1 - rate)
    return best


def test_threshold_probes_equal_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.2
    values = rng.normal(size=(8, 60)) + labels * rng.normal(0, 2, size=(8, 1))
    values[3] = np.round(values[3])  # ties: a threshold never splits equal values
    values[5] = 7.0  # a constant unit knows nothing
    scores, thresholds, signs = analysis.threshold_probes(values, np.stack([labels, ~labels]))
    np.testing.assert_allclose(scores[0], scores[1])  # the complement of a feature: the same probe, turned over
    assert (signs[0] == -signs[1])[scores[0] > 0.5].all()
    score, threshold, sign = scores[0], thresholds[0], signs[0]
    for u in range(8):
        assert score[u] == pytest.approx(brute_balanced_accuracy(values[u], labels)), u
        predicted = sign[u] * (values[u] - threshold[u]) > 0
        assert (predicted[labels].mean() + (~predicted[~labels]).mean()) / 2 == pytest.approx(score[u])
    assert score[5] == 0.5


def test_rankings_put_the_best_unit_first_with_its_direction():
    labels = np.arange(40) % 5 == 0
    position = np.arange(40.0) % 13
    values = np.random.default_rng(1).normal(size=(6, 40))
    values[4] = -labels.astype(float) + 0.01 * values[4]  # perfect, inverted
    values[2] = 3 * position + 1
    features = {"fifth": (labels, True), "position": (position, False), "never": (np.zeros(40, bool), True),
                "flat": (np.ones(40), False)}
    ranked = analysis.rank_units(values, features)
    assert ranked["fifth"][0] == {"unit": 4, "score": 1.0, "sign": -1} and len(ranked["fifth"]) == analysis.RANKED
    assert ranked["position"][0] == {"unit": 2, "score": pytest.approx(1.0), "sign": 1}
    assert ranked["never"] is None and ranked["flat"] is None  # the text never shows them
    np.testing.assert_allclose(analysis.correlations(values, position),
                               [np.corrcoef(v, position)[0, 1] for v in values])


def test_saturation_counts_steps_beyond_each_threshold():
    gate = np.array([[[0.05, 0.5], [0.95, 0.5], [0.5, 0.99], [0.01, 0.1]]])  # (L 1, T 4, H 2)
    fractions = analysis.saturation({"f": gate})["f"]
    np.testing.assert_allclose(fractions, [[[0.5, 0.0], [0.25, 0.25]]])  # (L, left/right, H)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_look_back_equals_the_gradient_of_each_loss_over_the_whole_text(cell):
    """Windows started from the state the pass reached give what one pass over the whole text gives, loss by
    loss."""
    model = random_model(cell, V=6, H=5)
    idx = np.random.default_rng(2).integers(0, 6, 30)
    state0 = tuple(np.random.default_rng(3).normal(size=s.shape) for s in model.initial_state(1))
    tr = trace(model, idx, state0)
    span = 8
    curve = analysis.look_back(model, idx, tr.states, state0, span=span, windows=1000)
    norms = []
    for t in range(span - 1, len(idx) - 1):
        logits, _, cache = model.forward(idx[None], state0)
        _, d = cross_entropy(logits[t : t + 1], idx[t + 1 : t + 2])
        dlogits = np.zeros_like(logits)
        dlogits[t] = d[0]
        dx = model.input_gradient(dlogits, cache)[:, 0]
        norms.append(np.linalg.norm(dx[t - np.arange(span)], axis=1))
    np.testing.assert_allclose(curve, np.mean(norms, axis=0), rtol=1e-9)


def test_quantized_values_round_trip_within_a_level():
    values = np.random.default_rng(4).normal(size=(5, 50)) * [[1], [10], [0.1], [0], [3]]
    levels, scale = quantize(values)
    decoded = np.array([[LEVELS.index(c) for c in row] for row in levels]) / 63 * 2 - 1
    assert (np.abs(decoded * scale[:, None] - values) <= scale[:, None] / 63 + 1e-12).all()  # half a level's width


# -- what small models learn --------------------------------------------------------------------------------------


def quoted_text(rng: np.random.Generator, words: int) -> str:
    """Words of one lexicon outside quotes and of another inside; a quoted span runs ~16 words, over lines."""
    text, inside = "", False
    for _ in range(words):
        if rng.random() < 0.06:
            text = text + '"' if not inside else text.rstrip(" ") + '" '
            inside = not inside
        text += rng.choice(["bam", "bim", "bom"] if inside else ["tik", "tok", "tak", "sup"])
        text += "\n" if rng.random() < 0.1 else " "
    return text


def fit(text: str, cell: str, steps: int = 200) -> tuple[Model, Vocab]:
    """A small model trained on text: one layer of 16, Adam, 16 streams of 32 characters."""
    vocab = Vocab.from_text(text)
    model = Model.create(ModelConfig(vocab_size=len(vocab), cell=cell, hidden=16, layers=1), np.random.default_rng(0))
    optimizer = make_optimizer("adam", model.params)
    streams = Streams(vocab.encode(text), 16, 32)
    state = model.initial_state(16)
    for step in range(steps):
        if step % streams.chunks == 0:
            state = model.initial_state(16)
        _, grads, state = model.loss_and_grads(*streams.batch(step % streams.chunks), state)
        clip_gradients(grads, 5.0)
        optimizer.step(model.params, grads, 1e-2)
    return model, vocab


@pytest.fixture(scope="module")
def quotes():
    """(text to look at, LSTM, RNN), both trained on text of the same kind."""
    corpus = quoted_text(np.random.default_rng(0), 3000)
    return quoted_text(np.random.default_rng(1), 400), fit(corpus, "lstm"), fit(corpus, "rnn")


def look(model: Model, vocab: Vocab, text: str):
    idx = vocab.encode(text)
    _, state0 = prime_state(model, vocab, "")
    tr = trace(model, idx, state0)
    return tr, analysis.look_back(model, idx, tr.states, state0)


def test_the_ranking_finds_a_quote_unit_in_a_trained_lstm(quotes):
    text, (model, vocab), _ = quotes
    tr, _ = look(model, vocab, text)
    values = np.concatenate([tr.states["h"][0].T, tr.states["c"][0].T])
    best = analysis.rank_units(values, {"quotes": (FEATURES["inside quotes"][0](text), True)})["quotes"]
    assert best[0]["score"] > 0.95  # 0.985-0.999 over seeds 0-3; an RNN's best is 0.76-0.87


def test_an_rnn_looks_back_less_far_than_an_lstm(quotes):
    """The vanishing gradient, measured: relative to k = 0, the RNN's curve is 50-700x lower at k = 20 and
    10^5-10^6x lower at k = 40 than the LSTM's (seeds 0-3)."""
    text, lstm, rnn = quotes
    (_, lstm_curve), (_, rnn_curve) = look(*lstm, text), look(*rnn, text)
    for k in (20, 40):
        assert rnn_curve[k] / rnn_curve[0] < lstm_curve[k] / lstm_curve[0] / 10, k


# -- the page -----------------------------------------------------------------------------------------------------

NASTY = 'say "</script><b>hi</b>" & <!-- \'quote\' --> 😀\ttab\r\x01 ]]> </style> @@DATA@@\n'


@pytest.fixture(scope="module")
def nasty_checkpoint(tmp_path_factory) -> Path:
    """An untrained model whose vocabulary holds every character of NASTY, with a short recorded history."""
    vocab = Vocab.from_text(NASTY)
    model = Model.create(ModelConfig(vocab_size=len(vocab), hidden=8, layers=2), np.random.default_rng(0))
    path = tmp_path_factory.mktemp("viz") / "model.npz"
    history = [{"step": s, "epoch": s / 4, "train_loss": 3.0 / s, "val_loss": 3.2 / s if s % 2 == 0 else None,
                "chars_per_s": 1e3, "elapsed": float(s)} for s in (1, 2, 3, 4)]
    progress = {"step": 4, "epoch": 1, "chunk": 0, "epoch_progress": 1.0, "chars_seen": 4096, "elapsed": 4.0}
    checkpoint.save(path, model, vocab, {"history": history, "progress": progress})
    return path


class Page(HTMLParser):
    """The page's attributes, the text of the spans in div#text and of each script, its nesting checked as it
    is read."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "circle", "rect", "line", "polyline", "path"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open, self.attributes, self.spans, self.scripts = [], [], [], []
        self.text_depth = None  # how deep div#text is open, while it is

    def handle_starttag(self, tag, attrs):
        self.attributes += attrs
        if tag in self.VOID:
            return
        self.open.append(tag)
        if tag == "div" and ("id", "text") in attrs:
            self.text_depth = len(self.open)
        if tag == "script":
            self.scripts.append("")

    def handle_startendtag(self, tag, attrs):
        self.attributes += attrs

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        if len(self.open) == self.text_depth:
            self.text_depth = None
        self.open.pop()

    def handle_data(self, data):
        if self.text_depth is not None and self.open[-1] == "span":
            self.spans.append(data)
        if self.open and self.open[-1] == "script":
            self.scripts[-1] += data


def write_page(checkpoint_path: Path, text: str, tmp_path: Path, *args) -> tuple[str, object]:
    source = tmp_path / "text.txt"
    source.write_text(text, encoding="utf-8", newline="")
    out = tmp_path / "page.html"
    result = CliRunner().invoke(main, ["viz", str(checkpoint_path), str(source), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return out.read_text(encoding="utf-8"), result


def test_the_page_parses_stands_alone_and_escapes_every_character(nasty_checkpoint, tmp_path):
    page, result = write_page(nasty_checkpoint, NASTY * 3, tmp_path)
    assert "wrote" in result.stdout
    parsed = Page()
    parsed.feed(page)
    parsed.close()
    assert parsed.open == []  # every element closed, in order
    # nothing outside the file: no attribute that loads anything, no URL in the CSS or the script
    assert not [a for a in parsed.attributes if a[0] in ("src", "href", "action", "srcset", "poster", "data")]
    assert not re.search(r"url\(|@import|https?:|fetch\(|XMLHttpRequest|import\(", page)
    # the text's markup is nowhere raw: only the page's own two script elements end, no <b> at all
    assert page.count("</script>") == 2 and "<b>" not in page and "<!-- 'quote'" not in page
    assert "\x01" not in page and "\r" not in page and "@@" not in page
    markup = page[page.index('<div id="text">') : page.index('<div id="tip">')]
    contents = re.findall(r"<span>(.*?)</span>", markup, re.S)  # as written, before any parser reads it
    assert len(contents) == len(NASTY) * 3
    assert all(re.fullmatch(r"(?:[^<>&\"']|&(?:lt|gt|amp|quot|#x27);)+", c) for c in contents)
    shown = "".join(parsed.spans)
    visible = NASTY.replace("\n", "↵\n").replace("\t", "⇥\t").replace("\r", "␍").replace("\x01", "␁")
    assert shown == visible * 3  # every character in its own span, escaped and read back exactly
    data = json.loads(parsed.scripts[0])
    assert "".join(data["vocab"]) == "".join(sorted(set(NASTY))) and len(data["bits"]) == len(NASTY) * 3
    assert len(data["levels"]) == 2 * 2 * 8 and all(len(row) == len(NASTY) * 3 for row in data["levels"])
    assert not re.search(r"[<>&]", parsed.scripts[0]) and parsed.scripts[0].isascii()


def test_the_page_shows_what_it_measured(nasty_checkpoint, tmp_path):
    ck = checkpoint.load(nasty_checkpoint)
    page, facts = make_page(ck, "model.npz", iter([NASTY[:20], NASTY[20:] + "Z"]), "text.txt", length=30)
    assert facts["text"] == "text.txt: the first 30 characters" and "skipped" not in facts
    assert page.count("<span>") == 30 and "step 4" in facts["checkpoint"]
    for heading in ("Units that track features", "Gate saturation", "How far back", "Training"):
        assert heading in page
    assert page.count('class="saturation"') == 2 * 3  # two layers, gates i, f, o
    assert page.count("<polyline") == 1 + 2  # the look-back curve; training and validation loss
    _, facts = make_page(ck, "model.npz", iter(["ZZ" + NASTY + "Z"]), "text.txt")
    assert facts["skipped"] == "3 character(s) outside the vocabulary: 'Z' (U+005A)"


def test_the_cli_never_writes_over_a_file_it_does_not_own(nasty_checkpoint, tmp_path):
    source = tmp_path / "text.txt"
    source.write_bytes(NASTY.encode())
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>", encoding="utf-8")
    args = ["viz", str(nasty_checkpoint), str(source)]
    refused = CliRunner().invoke(main, [*args, "-o", str(mine)])
    assert refused.exit_code == 1 and "not a page charrnn viz wrote; pass --force" in refused.stderr
    assert mine.read_text(encoding="utf-8") == "<p>my notes</p>"
    assert CliRunner().invoke(main, [*args, "-o", str(mine), "--force"]).exit_code == 0
    assert CliRunner().invoke(main, [*args, "-o", str(mine)]).exit_code == 0  # its own page now: replaced
    itself = CliRunner().invoke(main, [*args, "-o", str(source), "--force"])
    assert itself.exit_code == 1 and "is an input" in itself.stderr and source.read_bytes() == NASTY.encode()
    empty = tmp_path / "empty.txt"
    empty.write_text("ZZZ", encoding="utf-8")
    none = CliRunner().invoke(main, ["viz", str(nasty_checkpoint), str(empty), "-o", str(tmp_path / "x.html")])
    assert none.exit_code == 1 and none.stderr == f"Error: {empty} has no character in the model's vocabulary\n"
    empty.write_text("", encoding="utf-8")
    none = CliRunner().invoke(main, ["viz", str(nasty_checkpoint), str(empty), "-o", str(tmp_path / "x.html")])
    assert none.exit_code == 1 and none.stderr == f"Error: {empty} is empty\n"
    assert CliRunner().invoke(main, [*args, "--length", "0"]).exit_code == 2


# -- the page in a browser ----------------------------------------------------------------------------------------

BROWSER = shutil.which("chromium")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with nothing of its own going to the network, bounded in time."""
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=60)


def flat_png(path: Path) -> bool:
    """Whether a PNG is one flat colour, read without decoding it: whatever filter a row of a flat image uses,
    its bytes after the first pixel all have one value (0, or the colour for filter None)."""
    data, at, idat = path.read_bytes(), 8, b""
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", data[at + 8 : at + 18])
        elif kind == b"IDAT":
            idat += data[at + 8 : at + 8 + size]
        at += 12 + size
    pixel = {2: 3, 6: 4}[colour] * depth // 8  # RGB or RGBA
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * pixel)
    rest = rows[:, 1 + pixel :]
    return bool((rest == rest[:, :1]).all())


def png(pixels: np.ndarray) -> bytes:
    """A PNG of (height, width, 3) uint8 pixels, each row filtered with Up (as Chromium's mostly are)."""
    rows = pixels.reshape(len(pixels), -1).astype(np.int16)
    up = np.diff(rows, axis=0, prepend=0) % 256
    raw = np.column_stack([np.full(len(rows), 2), up]).astype(np.uint8).tobytes()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_a_flat_image_is_told_from_one_with_anything_on_it(tmp_path):
    image = np.full((20, 30, 3), 240, np.uint8)
    (tmp_path / "flat.png").write_bytes(png(image))
    image[7, 12] = (0, 0, 0)
    (tmp_path / "dot.png").write_bytes(png(image))
    assert flat_png(tmp_path / "flat.png") and not flat_png(tmp_path / "dot.png")


@pytest.mark.skipif(BROWSER is None, reason="no headless browser (Debian's chromium) on this machine")
def test_a_headless_browser_runs_the_page_without_error(nasty_checkpoint, tmp_path):
    page, _ = write_page(nasty_checkpoint, NASTY * 20, tmp_path)
    shot = tmp_path / "shot.png"
    dom = chromium(tmp_path, "--window-size=900,700", f"--screenshot={shot}", "--dump-dom",
                   (tmp_path / "page.html").as_uri()).stdout
    assert 'data-status="ready"' in dom, re.findall(r'<p id="status">[^<]*', dom)
    assert not flat_png(shot)
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("JSON.parse(", "JSON.parse(nope + "), encoding="utf-8")
    assert 'data-status="error"' in chromium(tmp_path, "--dump-dom", broken.as_uri()).stdout  # errors are seen
