"""What a checkpoint holds, as plain facts: one JSON-ready dict that `charrnn inspect` prints as tables or JSON.

Everything comes from the validated checkpoint (charrnn.store.checkpoint.load); metadata a checkpoint lacks (say, one
written outside the training loop) shows as None rather than failing, and non-finite numbers become None so
the JSON stays valid.
"""

from __future__ import annotations

import math
from pathlib import Path

from charrnn.core.model import LN2, param_shapes
from charrnn.runs.units import finite
from charrnn.store import checkpoint


def loss_facts(nats, step=None) -> dict | None:
    """A loss in nats/char as the facts show it, in nats and bits per character; None where there is none."""
    nats = finite(nats)
    if nats is None:
        return None
    return {"nats_per_char": nats, "bits_per_char": nats / LN2, "step": step}


def describe(path) -> dict:
    """Load and validate the checkpoint at path; return its facts (raises CharrnnError if it is not one)."""
    path = Path(path)
    ck = checkpoint.load(path)
    meta, cfg = ck.meta, ck.model.cfg
    train, progress = meta.get("train") or {}, meta.get("progress") or {}
    schedule, corpus = meta.get("schedule") or {}, meta.get("corpus") or {}
    history = [{k: finite(v) for k, v in h.items()} for h in meta.get("history") or []]
    validated = [h for h in history if h.get("val_loss") is not None]
    chars_seen, elapsed = progress.get("chars_seen"), progress.get("elapsed")
    shapes = param_shapes(cfg)
    return {
        "path": str(path),
        "file_size": path.stat().st_size,
        "format": meta.get("format"),
        "format_version": meta.get("version"),
        "charrnn_version": meta.get("charrnn_version"),
        "model": {
            "cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "vocab_size": cfg.vocab_size,
            "dropout": cfg.dropout, "peephole": cfg.peephole, "coupled": cfg.coupled, "dtype": cfg.dtype,
            "parameters": [{"name": n, "shape": list(s), "count": math.prod(s)} for n, s in shapes.items()],
            "total_parameters": ck.model.num_params(),
        },
        "vocabulary": {"size": len(ck.vocab), "chars": "".join(ck.vocab.chars)},
        "training": {
            "steps": progress.get("step"), "epochs": finite(progress.get("epoch_progress")),
            "chars_seen": chars_seen, "elapsed_s": finite(elapsed),
            "chars_per_s": chars_seen / elapsed if chars_seen and elapsed else None,
            "batch_size": train.get("batch_size"), "seq_len": train.get("seq_len"), "seed": train.get("seed"),
            "rotate": train.get("rotate"), "resumable": ck.resumable,
            "engine": meta.get("engine"),  # what ran its last steps: name, device, processes
        },
        "validation": {
            "best": loss_facts(meta.get("best_val_loss"), meta.get("best_step")),
            "last": loss_facts(validated[-1]["val_loss"], validated[-1].get("step")) if validated else None,
            "val_frac": train.get("val_frac"),
        },
        "optimizer": {k: train.get(k) for k in ("optimizer", "lr", "weight_decay", "clip", "clip_mode")},
        "schedule": {"name": schedule.get("name", train.get("lr_schedule")), "lr_now": finite(schedule.get("lr")),
                     "total_steps": schedule.get("total_steps"),
                     **{k: train.get(k) for k in ("warmup", "lr_decay", "lr_decay_after", "lr_min")}},
        "corpus": {k: corpus.get(k) for k in ("name", "size", "sha256", "chars", "train_chars", "val_chars")},
        "init_from": origin if isinstance(origin := meta.get("init_from"), dict) else None,  # a fine-tuning run's
        "history": history,
    }
