"""A new run that starts from a trained model's weights (char-rnn's -init_from): fine-tuning on another corpus.

The model's shape comes from the checkpoint; training is the new run's own (optimiser, schedule, length, B, T),
from step 0 with a fresh optimiser.  A corpus with characters the checkpoint never saw extends the vocabulary:
every known character keeps its trained input weights and decoder row under its new index (a vocabulary stays
sorted), and each new one starts as in a fresh model (init_params: uniform weights, zero bias).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from charrnn.core.model import ModelConfig, init_params
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.store.checkpoint import Checkpoint
from charrnn.store.schema import as_text

INPUT, DECODER = "weight_ih_l0", ("decoder.weight", "decoder.bias")  # the parameters indexed by character


@dataclass
class InitFrom:
    """The trained checkpoint a new run starts from, and where it was read."""

    path: Path
    checkpoint: Checkpoint

    def vocab_for(self, corpus: Vocab) -> Vocab:
        """The new run's vocabulary: the checkpoint's, plus the corpus's characters it lacks."""
        return Vocab(self.checkpoint.vocab.chars + corpus.chars)

    def params_for(self, cfg: ModelConfig, vocab: Vocab, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The checkpoint's parameters for a model of cfg (its shape, vocab's size): copies, with each known
        character's input column and decoder row moved to its index in vocab and fresh values for new ones."""
        old = self.checkpoint
        if replace(old.model.cfg, vocab_size=len(vocab), dropout=cfg.dropout) != cfg:
            raise CharrnnError(f"the model of {self.path} ({old.model.cfg}) differs in shape from {cfg}")
        params = {name: p.copy() for name, p in old.model.params.items()}
        if vocab != old.vocab:
            at = vocab.encode_code_points(old.vocab.code_points)  # each old index's new index
            if np.any(at < 0):
                raise CharrnnError(f"the vocabulary lacks characters of {self.path}'s; see vocab_for")
            fresh = init_params(cfg, rng)
            fresh[INPUT][:, at] = params[INPUT]
            for name in DECODER:
                fresh[name][at] = params[name]
            params.update({name: fresh[name] for name in (INPUT, *DECODER)})
        return params

    def provenance(self) -> dict:
        """What a checkpoint of the new run records about where it started."""
        meta = self.checkpoint.meta
        return {"path": as_text(str(self.path)), "step": (meta.get("progress") or {}).get("step"),
                "corpus": (meta.get("corpus") or {}).get("name"), "vocab_size": len(self.checkpoint.vocab)}
