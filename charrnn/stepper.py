"""One character per stream through the whole stack, for sampling: the fast path behind `charrnn sample`.

Model.forward is built for chunks: each call derives the gathered input table and the gate-scaled weights,
which at T=1 costs more than the step itself.  A Stepper derives them once, owns every buffer it writes, and then
spends a step on what the maths needs: per layer one row gather or input GEMV, the cell's own step function
(one recurrent GEMV and a few element-wise ops, shared with the chunk forward), then the decoder GEMV.
Shapes: N streams, H hidden, G gates, V vocabulary, L layers.
"""

from __future__ import annotations

import numpy as np

from charrnn.model import Model


class Stepper:
    """A model's step function with its weights prepared and its state and scratch arrays preallocated."""

    def __init__(self, model: Model, state: tuple[np.ndarray, ...]):
        """state: the model's state tuple, one (L, N, H) array per state name; copied, then updated in place."""
        cfg, dt = model.cfg, model.dtype
        self.cell, self.cfg = model.cell, cfg
        self.state = tuple(np.array(s, dtype=dt, copy=True, order="C") for s in state)
        N, H, GH = self.state[0].shape[1], cfg.hidden, cfg.gates * cfg.hidden
        self.layers = []
        for k in range(cfg.layers):
            W_in, bias = model.input_weights(k)
            self.layers.append({
                "W_in": np.ascontiguousarray(W_in), "bias": bias,
                "prep": model.cell.prepare(model.layer(k), cfg.peephole, cfg.coupled),
                "xw": np.empty((N, GH), dt), "rec": np.empty((N, GH), dt),
                "tmp": np.empty((N, H), dt), "aux": np.empty((N, H), dt),  # tanh(c') or W_hn h + b_hn
            })
        self.W_decT = np.ascontiguousarray(model.params["decoder.weight"].T)  # (H, V)
        self.b_dec = model.params["decoder.bias"]
        self.logits = np.empty((N, cfg.vocab_size), dt)

    def step(self, idx: np.ndarray) -> np.ndarray:
        """idx (N,) characters in -> logits (N, V) for the next ones.  The logits array is reused by the next
        call; the state advances in place."""
        inp, cell = None, self.cfg.cell
        for k, layer in enumerate(self.layers):
            xw, h = layer["xw"], self.state[0][k]
            if k == 0:
                np.take(layer["W_in"], idx, axis=0, out=xw)
            else:
                np.matmul(inp, layer["W_in"], out=xw)
                xw += layer["bias"]
            if cell == "lstm":
                c = self.state[1][k]
                self.cell.step(xw, h, c, h, c, layer["aux"], layer["prep"], layer["rec"], layer["tmp"])
            elif cell == "gru":
                self.cell.step(xw, h, h, layer["aux"], layer["prep"], layer["rec"], layer["tmp"])
            else:
                self.cell.step(xw, h, h, layer["prep"], layer["rec"])
            inp = h
        np.matmul(inp, self.W_decT, out=self.logits)
        self.logits += self.b_dec
        return self.logits
