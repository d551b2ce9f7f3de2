"""What a model computes inside, character by character: every layer's states, its gates and its predictions over
a text, which `charrnn viz` shows.  Shapes: T time, L layers, H hidden, V vocabulary.

The Stepper reads the text one character at a time, as sampling does, and each step's states are copied out.  The
sigmoid gates are then recomputed from those states for the whole text at once, a few GEMMs per layer
(x_t: the layer's input at step t, the character's one-hot vector for layer 0):
    LSTM   i, f, o = sigmoid(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)  (peepholes add p_i c_{t-1}, p_f c_{t-1}, p_o c_t)
    GRU    r, z    = sigmoid(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
A vanilla RNN has none.  A coupled LSTM's f is 1 - i, so it shows i and o only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.core.cells import STATE_NAMES, lstm
from charrnn.core.model import Model
from charrnn.core.stepper import Stepper


@dataclass
class Trace:
    """A text's pass through a model: after reading character t, the logits for character t + 1 and the states."""

    logits: np.ndarray  # (T, V)
    states: dict[str, np.ndarray]  # "h" (and "c" for an LSTM) -> (L, T, H)
    gates: dict[str, np.ndarray]  # each sigmoid gate's name -> (L, T, H) activations


def sigmoid_gates(model: Model) -> dict[str, int]:
    """The model's sigmoid gates: name -> block in PyTorch's gate order (i, f, g, o; i, g, o coupled; r, z, n)."""
    cfg = model.cfg
    if cfg.cell == "lstm":
        return {g: k for k, g in enumerate(lstm.gate_names(cfg.coupled)) if g != "g"}
    return {"r": 0, "z": 1} if cfg.cell == "gru" else {}


def trace(model: Model, idx: np.ndarray, state: tuple[np.ndarray, ...]) -> Trace:
    """Run the characters idx (T,) from state (the model's state tuple at batch 1)."""
    L, H, T = model.cfg.layers, model.cfg.hidden, len(idx)
    names = STATE_NAMES[model.cfg.cell]
    states = {name: np.empty((L, T, H), model.dtype) for name in names}
    logits = np.empty((T, model.cfg.vocab_size), model.dtype)
    stepper = Stepper(model, state)
    for t in range(T):
        logits[t] = stepper.step(idx[t : t + 1])[0]
        for name, s in zip(names, stepper.state, strict=True):
            states[name][:, t] = s[:, 0]
    return Trace(logits, states, gates(model, idx, state, states))


def gates(model: Model, idx: np.ndarray, state0: tuple[np.ndarray, ...], states: dict[str, np.ndarray]):
    """The sigmoid gates' activations (L, T, H) at every step, from the states a pass went through."""
    which, H = sigmoid_gates(model), model.cfg.hidden
    out = {g: np.empty(states["h"].shape, model.dtype) for g in which}
    for k in range(model.cfg.layers):
        p = model.layer(k)
        h = states["h"][k]
        h_prev = np.concatenate([state0[0][k], h[:-1]])  # (T, H): the state each step starts from
        inp = p["weight_ih"].T[idx] if k == 0 else states["h"][k - 1] @ p["weight_ih"].T  # W_ih x_t
        for g, block in which.items():
            rows = slice(block * H, (block + 1) * H)
            pre = inp[:, rows] + h_prev @ p["weight_hh"][rows].T + p["bias_ih"][rows] + p["bias_hh"][rows]
            if model.cfg.peephole:
                c = states["c"][k]
                c_prev = np.concatenate([state0[1][k], c[:-1]])
                pre += p["peephole"][lstm.peephole_names(model.cfg.coupled).index(g)] * (c if g == "o" else c_prev)
            out[g][k] = (1 + np.tanh(pre / 2)) / 2  # sigmoid, with no overflow at large |pre|
    return out
