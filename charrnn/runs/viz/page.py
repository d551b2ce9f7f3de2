"""The page of `charrnn viz`: a model's pass over a text, measured (analysis) and written as one HTML file.

The text is read after the start character, as `charrnn score` reads a record, so every character has a
surprisal.  The page is self-contained: the template (page.html: CSS and script inline) with the text in its
markup, one character a span, escaped; the charts as inline SVG; and what the script needs (each unit's values,
the surprisals, the top five predictions) as JSON in a script element, with <, > and & written as \\u escapes so
that nothing in the text can end the element or open a tag.  Unit values go in as one character per value (64
levels of the unit's range), so a page weighs about (units + 12) bytes per character of text.
"""

from __future__ import annotations

import json
import re
from html import escape
from importlib import resources

import numpy as np

from charrnn.core.cells import STATE_NAMES
from charrnn.core.logprob import log_softmax
from charrnn.core.model import LN2, Model
from charrnn.core.sample import prime_state
from charrnn.core.trace import trace
from charrnn.core.vocab import Vocab
from charrnn.runs.viz import analysis, svg
from charrnn.runs.viz.features import FEATURES

LEVELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # 64 levels, safe in JSON and HTML
TOP = 5  # predictions shown on hover
SHOWN = {"\n": "↵\n", "\t": "⇥\t", "\r": "␍"}  # how a character appears in the text (its data stays the same)
GATE_NAMES = {"i": "input gate", "f": "forget gate", "o": "output gate", "r": "reset gate", "z": "update gate"}


def quantize(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each unit's values (U, T) as a string of LEVELS characters over -scale .. scale, and its scale (U,)."""
    scale = np.abs(values).max(axis=1)
    scale[scale == 0] = 1
    levels = np.rint((values / scale[:, None] + 1) / 2 * (len(LEVELS) - 1)).astype(np.int64)
    alphabet = np.frombuffer(LEVELS.encode("ascii"), np.uint8)
    return [alphabet[row].tobytes().decode("ascii") for row in levels], scale


def shown(ch: str) -> str:
    """A character as the page's text shows it, escaped: control characters as their Unicode pictures."""
    if ch in SHOWN:
        return SHOWN[ch]
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return chr(0x2400 + ord(ch)) if ord(ch) < 0x20 else "␡"
    return escape(ch, quote=True)


def script_json(data) -> str:
    """JSON that is safe inside <script>: ASCII only, and <, >, & as \\u escapes (no '</script>', no '<!--')."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def measure(model: Model, vocab: Vocab, text: str, history: list[dict]) -> dict:
    """Everything the page shows, from one pass of the model over text (characters in its vocabulary)."""
    idx = vocab.encode(text)
    first, state0 = prime_state(model, vocab, "")  # the prediction of the first character, and the state
    tr = trace(model, idx, state0)
    logp = log_softmax(np.concatenate([first, tr.logits]))  # row t: the prediction of character t
    bits = -logp[np.arange(len(idx)), idx] / LN2
    top = np.argsort(-logp[1:], axis=1, kind="stable")[:, :TOP]  # after character t, the likeliest next ones
    top_p = np.exp(np.take_along_axis(logp[1:], top, axis=1))
    names = STATE_NAMES[model.cfg.cell]
    L, H = model.cfg.layers, model.cfg.hidden
    values = np.concatenate([tr.states[name][k].T for k in range(L) for name in names])  # (U, T), U = L*S*H
    labels = [f"l{k}.{name}[{j}]" for k in range(L) for name in names for j in range(H)]
    features = {name: (compute(text), binary) for name, (compute, binary) in FEATURES.items()}
    best = analysis.rank_units(values.astype(np.float64), features)
    ranking = [{"feature": name, "metric": "balanced accuracy" if binary else "|r|", "best": best[name]}
               for name, (_, binary) in features.items()]
    levels, scale = quantize(values)
    return {
        "length": len(idx),
        "bits": bits,
        "top": top, "top_p": top_p,
        "labels": labels, "levels": levels, "scale": scale,
        "ranking": ranking,
        "saturation": analysis.saturation(tr.gates),
        "look_back": analysis.look_back(model, idx, tr.states, state0),
        "history": history,
    }


def render(m: dict, text: str, vocab: Vocab, facts: dict[str, str]) -> str:
    """The HTML page: the template with the facts (name -> value, shown in a table), the text, the charts and
    the script's data filled in."""
    data = {
        "vocab": vocab.chars,
        "bits": np.round(m["bits"], 3).tolist(),
        "top": m["top"].ravel().tolist(),
        "topP": np.rint(m["top_p"] * 1000).astype(int).ravel().tolist(),  # per mille
        "labels": m["labels"], "levels": m["levels"], "scale": np.round(m["scale"], 5).tolist(),
        "levelChars": LEVELS,
        "ranking": m["ranking"],
    }
    parts = {
        "TITLE": escape(f"charrnn viz: {facts.get('text', '')}"),
        "FACTS": "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts.items()),
        "TEXT": "".join(f"<span>{shown(ch)}</span>" for ch in text),
        "RANKING": ranking_table(m["ranking"], m["labels"]),
        "SATURATION": saturation_section(m["saturation"]),
        "LOOKBACK": look_back_chart(m["look_back"]),
        "HISTORY": history_chart(m["history"]),
        "DATA": script_json(data),
    }
    template = resources.files("charrnn.runs.viz").joinpath("page.html").read_text(encoding="utf-8")
    return re.sub(r"@@([A-Z]+)@@", lambda match: parts[match.group(1)], template)  # one pass: nothing is rescanned


def ranking_table(ranking: list[dict], labels: list[str]) -> str:
    rows = []
    for r in ranking:
        if r["best"] is None:
            cells = '<td colspan="3" class="muted">not in this text</td>'
        else:
            cells = "".join(f'<td><button type="button" class="unit" data-unit="{b["unit"]}">'
                            f'{escape(labels[b["unit"]])}</button> {b["score"]:.3f}'
                            f'{"" if b["sign"] > 0 else " (inverted)"}</td>' for b in r["best"])
        rows.append(f"<tr><th>{escape(r['feature'])}</th><td class=\"muted\">{escape(r['metric'])}</td>{cells}</tr>")
    head = "<tr><th>feature</th><th>score</th>" + "".join(f"<th>#{i + 1}</th>" for i in range(analysis.RANKED))
    return f"<table class=\"ranking\"><thead>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def saturation_section(fractions: dict[str, np.ndarray]) -> str:
    if not fractions:
        return '<p class="muted">A vanilla RNN has no gates.</p>'
    layers = next(iter(fractions.values())).shape[0]
    rows = []
    for k in range(layers):
        plots = "".join(svg.saturation_plot(f[k], f"l{k} {GATE_NAMES[g]}") for g, f in fractions.items())
        rows.append(f'<div class="plots">{plots}</div>')
    return "".join(rows)


def look_back_chart(curve: np.ndarray) -> str:
    k = np.arange(len(curve))
    return svg.line_chart([("mean ‖d loss_t / d x_t−k‖", k, curve, "series-a")], "k (characters back)",
                          "gradient norm", log_y=True, title="how far back the model looks")


def history_chart(history: list[dict]) -> str:
    steps = np.array([h.get("step") for h in history], float)
    series = []
    for key, name, css in (("train_loss", "training", "series-a"), ("val_loss", "validation", "series-b")):
        series.append((name, steps, np.array([np.nan if h.get(key) is None else h[key] for h in history], float),
                       css))
    return svg.line_chart(series, "step", "loss (nats/char)", title="the run's loss")
