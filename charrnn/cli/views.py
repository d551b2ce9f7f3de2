"""Rich renderables for `charrnn inspect` and `charrnn eval`: built here from plain fact dicts, printed by cli.py.

Values from files (corpus names, vocabulary characters) go in as rich Text, never as markup, so a "[" in a file
name cannot restyle or hide anything.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from charrnn.cli.textplot import plot
from charrnn.core.model import LN2
from charrnn.runs.units import human_duration
from charrnn.store.memory import format_bytes

VISIBLE = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣", "␣": "\\u2423"}


def escape_chars(text: str) -> str:
    """Text with invisible and ambiguous characters made visible: newline, tab and carriage return as \\n, \\t,
    \\r; space as ␣ (and a real ␣ as \\u2423); a backslash as \\\\; other non-printable characters (controls,
    zero-width and non-breaking spaces) as \\xNN, \\uNNNN or \\UNNNNNNNN."""
    out = []
    for ch in text:
        if ch in VISIBLE:
            out.append(VISIBLE[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            cp = ord(ch)
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
    return "".join(out)


def _nats_at(loss: dict | None) -> tuple[float | None, int | None]:
    """(nats, step) of a loss in the facts (charrnn.runs.inspect.loss_facts)."""
    return (None, None) if loss is None else (loss["nats_per_char"], loss.get("step"))


VOCAB_PREVIEW = 96  # characters of the vocabulary shown before an ellipsis


def _n(v, fmt: str = ",") -> str:
    return "?" if v is None else format(v, fmt)


def loss_text(nats: float | None, step: int | None = None) -> str:
    """A loss as every command prints it: nats and bits per character, and the step it was measured at."""
    if nats is None:
        return "none recorded"
    at = f" (step {step:,})" if step is not None else ""
    return f"{nats:.4f} nats/char = {nats / LN2:.3f} bits/char{at}"


def started_from(origin: dict, vocab_size: int) -> str:
    """Where a fine-tuning run started (finetune.InitFrom.provenance): the checkpoint, its step and corpus, and
    the characters the new corpus added to its vocabulary of vocab_size."""
    step, old = origin.get("step"), origin.get("vocab_size")
    added = vocab_size - old if isinstance(old, int) else 0
    return (f"{origin.get('path')} (step {_n(step) if isinstance(step, int) else '?'} on "
            f"{origin.get('corpus') or '?'})" + (f", vocabulary {old} + {added} new" if added > 0 else ""))


def _facts(rows: list[tuple[str, str | Text]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value if isinstance(value, Text) else Text(value))
    return grid


def parameter_table(model: dict) -> Table:
    table = Table(title="parameters", title_justify="left", title_style="bold")
    table.add_column("tensor")
    table.add_column("shape", justify="right")
    table.add_column("count", justify="right")
    for p in model["parameters"]:
        table.add_row(p["name"], " × ".join(map(str, p["shape"])), f"{p['count']:,}")
    table.add_section()
    table.add_row(Text("total", style="bold"), "", Text(f"{model['total_parameters']:,}", style="bold"))
    return table


def loss_plot(history: list[dict], width: int = 60, height: int = 10) -> Text | None:
    """Train and validation loss against the step, or None before the first evaluation."""
    lines = plot({"train": [(h.get("step"), h.get("train_loss")) for h in history],
                  "validation": [(h.get("step"), h.get("val_loss")) for h in history]}, width, height, "step")
    if not lines:
        return None
    text = Text("\n".join(lines))
    text.highlight_regex("•", "cyan")
    text.highlight_regex("×", "magenta")
    return text


def _schedule(s: dict) -> str:
    parts = [s["name"]]
    if s["name"] == "step":
        parts.append(f"×{s['lr_decay']} per epoch after {s['lr_decay_after']} epochs")
    elif s["name"] == "cosine":
        parts.append(f"down to {s['lr_min']} × lr")
    if s.get("warmup"):
        parts.append(f"{s['warmup']:,} warm-up steps")
    if s["lr_now"] is not None:
        parts.append(f"lr now {s['lr_now']:.3g}")
    if s["total_steps"]:
        parts.append(f"{s['total_steps']:,} steps planned")
    return ", ".join(parts)


def _training(t: dict) -> str:
    speed = f", {t['chars_per_s']:,.0f} chars/s" if t["chars_per_s"] else ""
    wall = human_duration(t["elapsed_s"]) if t["elapsed_s"] is not None else "?"
    return (f"{_n(t['steps'])} steps, {_n(t['epochs'], '.2f')} epochs, {_n(t['chars_seen'])} characters seen, "
            f"{wall} wall time{speed}; B={_n(t['batch_size'])} T={_n(t['seq_len'])}, seed {_n(t['seed'], '')}"
            + (", epochs rotated" if t.get("rotate") else "")
            + (f"; last on {engine_text(t['engine'])}" if t.get("engine") else "")
            + ("" if t["resumable"] else "; no optimiser state (not resumable)"))


def engine_text(engine: dict) -> str:
    """What runs (or ran) a run's steps: "the torch engine on cuda:0, 8 processes"."""
    processes = engine.get("processes") or 1
    return (f"the {engine.get('name')} engine on {engine.get('device')}"
            + (f", {processes} processes" if processes > 1 else ""))


def inspection(facts: dict, width: int = 80) -> Group:
    """Everything `charrnn inspect` shows, top to bottom; what the checkpoint lacks shows as "not recorded"."""
    m, t, v = facts["model"], facts["training"], facts["validation"]
    o, s, c = facts["optimizer"], facts["schedule"], facts["corpus"]
    options = [name for name in ("peephole", "coupled") if m[name]]
    chars = escape_chars(facts["vocabulary"]["chars"])
    preview = chars if len(chars) <= VOCAB_PREVIEW else chars[:VOCAB_PREVIEW] + "…"
    missing = "not recorded"
    rows = [
        ("file", f"{facts['path']} ({format_bytes(facts['file_size'])})"),
        ("format", f"{facts['format']} v{facts['format_version']}, written by charrnn {facts['charrnn_version']}"),
        ("model", f"{m['cell'].upper()}, {m['layers']} layer{'' if m['layers'] == 1 else 's'} × {m['hidden']} "
                  f"hidden, dropout {m['dropout']:g}, {m['dtype']}"
                  + (f", {' and '.join(options)} gates" if options else "")
                  + f" — {m['total_parameters']:,} parameters"),
        ("vocabulary", Text(f"{facts['vocabulary']['size']} symbols: {preview}", no_wrap=True, overflow="ellipsis")),
        ("training", _training(t) if t["steps"] is not None else missing),
        *([("init from", started_from(facts["init_from"], facts["vocabulary"]["size"]))]
          if facts["init_from"] else []),
        ("best val", loss_text(*_nats_at(v["best"]))),
        ("last val", loss_text(*_nats_at(v["last"]))),
        ("optimiser", f"{o['optimizer']}, lr {_n(o['lr'], 'g')}, clip {_n(o['clip'], 'g')} ({o['clip_mode']}), "
                      f"weight decay {_n(o['weight_decay'], 'g')}" if o["optimizer"] else missing),
        ("schedule", _schedule(s) if s["name"] else missing),
        ("corpus", f"{c['name']}, {format_bytes(c['size']) if c['size'] is not None else '?'}, {_n(c['chars'])} "
                   f"characters ({_n(c['train_chars'])} train / {_n(c['val_chars'])} validation)"
                   if c["name"] else missing),
        ("SHA-256", c["sha256"] or missing),
    ]
    parts = [_facts(rows), Text(""), parameter_table(m), Text("")]
    curve = loss_plot(facts["history"], width=max(20, min(60, width - 12)))
    parts += [Text("loss history (nats/char)", style="bold"), curve] if curve else \
             [Text("no loss history recorded", style="dim")]
    return Group(*parts)


def evaluation(result: dict, checkpoint: str) -> Table:
    """The result of `charrnn eval` as a small table."""
    skipped = result["skipped"]
    unknown = ", ".join(f"'{escape_chars(u['char'])}' ({u['code_point']}) ×{u['count']:,}"
                        for u in result["unknown"][:8])
    more = f" and {len(result['unknown']) - 8} more" if len(result["unknown"]) > 8 else ""
    perplexity = result["perplexity"]
    rows = [
        ("checkpoint", checkpoint),
        ("text", f"{result['file']} ({result['encoding']})"),
        ("loss", f"{result['loss']:.4f} nats/char"),
        ("bits/char", f"{result['bits_per_char']:.4f}"),
        ("perplexity", f"{perplexity:.4f}" if perplexity is not None else "overflow"),
        ("characters", f"{result['characters']:,} read, {result['scored']:,} scored "
                       f"(B={result['batch_size']} streams, T={result['seq_len']}, state carried)"),
        ("skipped", f"{skipped:,} outside the vocabulary: {unknown}{more}" if skipped else "none"),
    ]
    return _facts(rows)
