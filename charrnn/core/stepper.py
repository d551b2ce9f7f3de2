"""One character per stream through the whole stack, for sampling: the fast path behind `charrnn sample`.

Model.forward is built for chunks: each call derives the gathered input table and the gate-scaled weights,
which at T=1 costs more than the step itself.  A Stepper derives them once, owns every buffer it writes, and then
spends a step on what the maths needs: a handful of NumPy calls per layer, no allocation at batch 1.

The hidden states of all layers sit side by side in one row per stream, [h_0 | h_1 | ... | h_{L-1} | 1].  Layer
k > 0 of an LSTM or RNN reads its input and its own previous state as one slice [h_{k-1} | h_k], so its input and
recurrent GEMVs are a single GEMV with the stacked weights [W_ih^T; W_hh^T]; the top layer's slice runs on to the
trailing 1, which carries its bias into that GEMV, as it carries the decoder's bias into the decoder GEMV.  Layer
0 is the recurrent GEMV plus a row of the input table (a view at batch 1: np.take there costs more than the
add).  A GRU's candidate gate needs W_hn h apart, so its cell step keeps its own recurrent GEMV.  A standard
LSTM's gates come out in the order o, i, f, g beside its cell state, for lstm.paired_step.  At batch 1 a step is
bound by reading the weights (3.2 MB for LSTM 2x256) and by NumPy's cost per call.
Shapes: N streams, H hidden, G gates, V vocabulary, L layers.
"""

from __future__ import annotations

import functools

import numpy as np

from charrnn.core.cells import lstm
from charrnn.core.cells.gates import gate_major, quiet
from charrnn.core.model import Model


def gemv(x: np.ndarray, W: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.matmul's arguments for out = x @ W, x (N, D), W (D, M).  For one stream the weights are stored
    transposed, (M, D), so that each output is a dot product over contiguous memory: OpenBLAS runs that GEMV
    faster inside the step (LSTM 2x256: 42 instead of 46 us a step here, 1x512: 36 instead of 43), though not
    always when timed alone, and at batch 1 sampling is bound by the GEMVs."""
    if x.shape[0] == 1:
        return np.ascontiguousarray(W.T), x[0], out[0]
    return x, np.ascontiguousarray(W), out


class Stepper:
    """A model's step function with its weights prepared and its state and scratch arrays preallocated."""

    def __init__(self, model: Model, state: tuple[np.ndarray, ...]):
        """state: the model's state tuple, one (L, N, H) array per state name; copied, then updated in place."""
        cfg, dt = model.cfg, model.dtype
        L, H, GH = cfg.layers, cfg.hidden, cfg.gates * cfg.hidden
        N = state[0].shape[1]
        # A negative gate scale is an exp-form gate (charrnn.core.cells.gates), whose exp may overflow
        self.exp_gates = bool((model.cell.gate_scale(1, dt, cfg.coupled) < 0).any())
        self.row = np.ones((N, L * H + 1), dt)  # [h_0 | ... | h_{L-1} | 1]
        hs = self.row[:, : L * H].reshape(N, L, H).transpose(1, 0, 2)  # (L, N, H), a view of the row
        hs[...] = state[0]
        paired = model.cell is lstm and not (cfg.peephole or cfg.coupled)
        if paired:  # per layer and stream [o | i | f | g | c]: pre-activations, then the cell state
            cells = np.empty((L, N, 5 * H), dt)
            cells[:, :, 4 * H :] = state[1]
            self.state = (hs, cells[:, :, 4 * H :])
        else:
            self.state = (hs, *(np.array(s, dtype=dt, copy=True, order="C") for s in state[1:]))
        order = lstm.paired_order(H) if paired else slice(None)  # the gates' order in every GEMV's output
        fused = cfg.cell != "gru"  # the stepper does the recurrent GEMV; the cell step only adds activations
        self.layers = []  # per layer: (the GEMV's matmul arguments or None, its output, what to add, the step)
        for k in range(L):
            W_in, bias = model.input_weights(k)
            prep = model.cell.prepare(model.layer(k), cfg.peephole, cfg.coupled)
            xw = cells[k, :, : 4 * H] if paired else np.empty((N, GH), dt)
            add = None  # added to the GEMV's output: layer 0's input row, or a bias no GEMV carries
            if k == 0:
                self.table = np.ascontiguousarray(W_in[:, order])  # (V, GH), bias folded in: table[idx] is added
                x, W = (self.row[:, :H], prep["W_sT"]) if fused else (None, None)  # xw = h_0 W_hh + table[idx]
            elif fused and k == L - 1:  # xw = [h_{k-1} | h_k | 1] [W_ih; W_hh; bias]
                x, W = self.row[:, (k - 1) * H :], np.vstack([W_in, prep["W_sT"], bias])
            elif fused:  # xw = [h_{k-1} | h_k] [W_ih; W_hh] + bias
                x, W, add = self.row[:, (k - 1) * H : (k + 1) * H], np.vstack([W_in, prep["W_sT"]]), bias
            else:  # a GRU's input GEMV; its cell step does the recurrent one
                x, W, add = self.row[:, (k - 1) * H : k * H], W_in, bias
            mm = None if x is None else gemv(x, W[:, order], xw)
            h, c = hs[k], self.state[-1][k]  # views of the state, updated in place (c is h without a cell state)
            if paired:
                one = N == 1  # a batch of one as 1-D views: NumPy's calls take them with less work
                step = lstm.paired_step(cells[k, 0] if one else cells[k], h[0] if one else h)
            else:
                rec = None if fused else np.empty((N, GH), dt)  # the cell step's own recurrent GEMM (GRU)
                tmp, aux = np.empty((N, H), dt), np.empty((N, H), dt)  # aux: tanh(c') or W_hn h + b_hn
                gates = gate_major(xw, cfg.gates)  # the view the cell steps take
                args = {"lstm": (gates, h, c, h, c, aux, prep, rec, tmp), "gru": (gates, h, h, aux, prep, rec, tmp),
                        "rnn": (gates, h, h, prep, rec)}[cfg.cell]
                step = functools.partial(model.cell.step, *args)
            add = None if add is None else np.ascontiguousarray(add[order])
            self.layers.append((mm, xw[0] if N == 1 else xw, add, step))
        self.logits = np.empty((N, cfg.vocab_size), dt)
        decoder = np.vstack([model.params["decoder.weight"].T, model.params["decoder.bias"]])  # (H + 1, V)
        self.decoder = gemv(self.row[:, (L - 1) * H :], decoder, self.logits)  # [h_{L-1} | 1] @ decoder

    def step(self, idx: np.ndarray) -> np.ndarray:
        """idx (N,) characters in -> logits (N, V) for the next ones.  The logits array is reused by the next
        call; the state advances in place."""
        rows = self.table[idx[0]] if len(idx) == 1 else self.table[idx]  # layer 0's inputs: a view at batch 1
        if self.exp_gates:
            with quiet():
                self._layers(rows)
        else:  # np.tanh only (the RNN): no 2.7 us errstate, a tenth of its batch-1 step
            self._layers(rows)
        np.matmul(*self.decoder)
        return self.logits

    def _layers(self, rows: np.ndarray) -> None:
        for k, (mm, xw, add, step) in enumerate(self.layers):
            if mm is None:  # layer 0 of a GRU: its cell step does the recurrent GEMM
                np.copyto(xw, rows)
            else:
                np.matmul(*mm)
                if k == 0:
                    np.add(xw, rows, xw)
                elif add is not None:
                    np.add(xw, add, xw)
            step()
