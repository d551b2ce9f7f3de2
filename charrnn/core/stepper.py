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
bound by reading the weights (3.2 MB for LSTM 2x256) and by NumPy's cost per call; the weights' layout and BLAS's
threads for those GEMVs are this machine's measured choices (charrnn.fast.tuning).
Shapes: N streams, H hidden, G gates, V vocabulary, L layers.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from charrnn.core.cells import gru, lstm, rnn
from charrnn.core.cells.gates import gate_major, quiet
from charrnn.core.model import Model
from charrnn.fast import blas, machine, tuning


def gemv(x: np.ndarray, W: np.ndarray, out: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.matmul's arguments for out = x @ W, x (N, D), W (D, M).  For one stream the weights are stored in the
    layout this machine's verdict chose (charrnn.fast.tuning, "sampler layout"), which OpenBLAS runs as different
    kernels: "transposed", (M, D), each output a dot product over contiguous memory (on a Zen 3 42 instead of 46
    us a step of LSTM 2x256 when that was measured), or "plain", (D, M).  At batch 1 sampling is bound by them."""
    if x.shape[0] == 1 and layout == "transposed":
        return np.ascontiguousarray(W.T), x[0], out[0]
    return x, np.ascontiguousarray(W), out


def batch1_choices() -> tuple[str, bool]:
    """The batch-1 GEMVs' layout, and whether they run on one BLAS thread, as this machine's verdict chose them
    (charrnn.fast.tuning); with the fast path off, the weights transposed on BLAS's threads."""
    if not machine.enabled():
        return "transposed", False
    chosen = machine.verdict()
    return chosen.value("sampler layout"), chosen.value("sampler threads") == "one"


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
        layout, one_thread = batch1_choices()
        order = paired_order(H) if paired else slice(None)  # the gates' order in every GEMV's output
        fused = cfg.cell != "gru"  # the recurrent GEMV rides on the input's (a GRU's stays apart: gru_step)
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
            mm = None if x is None else gemv(x, W[:, order], xw, layout)
            h, c = hs[k], self.state[-1][k]  # views of the state, updated in place (c is h without a cell state)
            gates = gate_major(xw, cfg.gates)  # the view the cell steps take
            if paired:
                one = N == 1  # a batch of one as 1-D views: NumPy's calls take them with less work
                step = paired_step(cells[k, 0] if one else cells[k], h[0] if one else h)
            elif cfg.cell == "gru":
                step = gru_step(gates, h, prep)
            elif cfg.cell == "lstm":  # peephole or coupled
                tmp, tc = np.empty((N, H), dt), np.empty((N, H), dt)
                step = functools.partial(lstm.step, gates, c, h, c, tc, prep, tmp)
            else:
                step = functools.partial(rnn.step, gates, h)
            add = None if add is None else np.ascontiguousarray(add[order])
            self.layers.append((mm, xw[0] if N == 1 else xw, add, step))
        # BLAS's other threads, handed a GEMV each step, lost 10-50x when another process held their core; the
        # choice holds for GEMVs as large as it was measured on (setting BLAS's threads costs 4 us a step)
        measured = min(D * M for D, M in tuning.GEMV_SHAPES)
        big = any(mm is not None and mm[0].size + mm[1].size >= measured for mm, *_ in self.layers)
        self.threads = blas.single_threaded() if one_thread and N == 1 and big else contextlib.nullcontext()
        self.logits = np.empty((N, cfg.vocab_size), dt)
        decoder = np.vstack([model.params["decoder.weight"].T, model.params["decoder.bias"]])  # (H + 1, V)
        self.decoder = gemv(self.row[:, (L - 1) * H :], decoder, self.logits, layout)  # [h_{L-1} | 1] @ decoder

    def step(self, idx: np.ndarray) -> np.ndarray:
        """idx (N,) characters in -> logits (N, V) for the next ones.  The logits array is reused by the next
        call; the state advances in place."""
        rows = self.table[idx[0]] if len(idx) == 1 else self.table[idx]  # layer 0's inputs: a view at batch 1
        with self.threads:
            if self.exp_gates:
                with quiet():
                    self._layers(rows)
            else:  # np.tanh only (the RNN): no 2.7 us errstate, a tenth of its batch-1 step
                self._layers(rows)
            np.matmul(*self.decoder)
        return self.logits

    def _layers(self, rows: np.ndarray) -> None:
        for k, (mm, xw, add, step) in enumerate(self.layers):
            if mm is None:  # layer 0 of a GRU: its step (gru_step) does the recurrent GEMV
                np.copyto(xw, rows)
            else:
                np.matmul(*mm)
                if k == 0:
                    np.add(xw, rows, xw)
                elif add is not None:
                    np.add(xw, add, xw)
            step()


PAIRED_GATES = "oifg"  # the sampler's gate order: i, f beside g and the cell state c, see paired_step


def paired_order(hidden: int) -> np.ndarray:
    """Indices taking the gate columns (or rows) of PyTorch's order i, f, g, o to PAIRED_GATES' o, i, f, g."""
    return np.roll(np.arange(4 * hidden), hidden)


def paired_step(buf: np.ndarray, h_out: np.ndarray):
    """The sampler's step of a standard LSTM (no peephole, not coupled) as a function of no arguments.

    buf (N, 5H) holds each stream's [o | i | f | g | c]: the caller writes the scaled pre-activations of o, i, f, g
    (gate_scale, in PAIRED_GATES' order) into buf[:, :4H] and c lives in buf[:, 4H:].  Then [i | f] * [g | c] is
    one multiply, and every view is bound once: at batch 1 a step costs what NumPy's calls cost (~1 us each on
    the Zen 3, whatever the 1,024 elements), so this one makes 8 calls, where lstm.step makes 10 and slices its
    arguments.  h_out (N, H) receives h'.  A batch of one may come as 1-D views, buf (5H,) and h_out (H,)."""
    H = buf.shape[-1] // 5
    pre, o, i_f, g, g_c, c = (buf[..., a:b] for a, b in
                              ((0, 4 * H), (0, H), (H, 3 * H), (3 * H, 4 * H), (3 * H, 5 * H), (4 * H, 5 * H)))
    products = np.empty(i_f.shape, buf.dtype)
    ig, fc = products[..., :H], products[..., H:]
    tc = np.empty(c.shape, buf.dtype)
    numerator = -lstm.gate_scale(H, buf.dtype)[paired_order(H)]  # 1 for the sigmoid gates, 2 for g (see squash)
    one = np.ones(4 * H, buf.dtype)  # an array, not the scalar 1: NumPy takes it with less work per call
    one_g = one[:H]
    exp, add, divide, subtract, multiply, tanh = np.exp, np.add, np.divide, np.subtract, np.multiply, np.tanh

    def step() -> None:
        exp(pre, pre)  # squash, as in gates.squash: [o, i, f, g + 1] = numerator / (1 + e^a)
        add(pre, one, pre)
        divide(numerator, pre, pre)
        subtract(g, one_g, g)  # tanh = 2 / (1 + e^-2x) - 1
        multiply(i_f, g_c, products)  # [i g | f c]
        add(ig, fc, c)  # c' = i g + f c
        tanh(c, tc)
        multiply(o, tc, h_out)  # h' = o tanh(c')

    return step


def gru_step(gates: np.ndarray, h: np.ndarray, prep: dict):
    """The sampler's step of a GRU layer as a function of no arguments: its recurrent GEMV apart (n needs
    W_hn h + b_hn on its own), then the cell's step.  gates (3, N, H): r and z's scaled input pre-activations and
    n's input part, a view of the layer's GEMV output; h (N, H) the layer's state, advanced in place."""
    N, H = h.shape
    rec = np.empty((N, 3 * H), h.dtype)
    rec_gates, r_z = gate_major(rec, 3), gates[:2]
    rec_r_z, rec_n = rec_gates[:2], rec_gates[2]
    ghn, tmp = np.empty((N, H), h.dtype), np.empty((N, H), h.dtype)
    W_sT, b_hn = prep["W_sT"], prep["b_hn"]

    def step() -> None:
        np.matmul(h, W_sT, out=rec)  # W_hh h, r and z's rows gate-scaled
        np.add(r_z, rec_r_z, out=r_z)  # a_r, a_z += W_hr h, W_hz h
        np.add(rec_n, b_hn, out=ghn)  # W_hn h + b_hn
        gru.step(gates, h, h, ghn, tmp)

    return step
