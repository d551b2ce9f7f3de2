"""Vanilla (Elman) RNN layer over a chunk, as in min-char-rnn.  Shapes: T time, N batch, H hidden.

    h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
"""

from __future__ import annotations

import numpy as np

from charrnn.fast.gemm import recurrent
from charrnn.fast.workspace import Workspace, scaled_transpose, sum_rows


def gate_count(coupled: bool = False) -> int:
    return 1


def gate_scale(hidden: int, dtype, coupled: bool = False) -> np.ndarray:
    return np.ones(hidden, dtype=dtype)


def input_bias(p: dict) -> np.ndarray:
    return p["bias_ih"] + p["bias_hh"]


def prepare(p: dict, peephole: bool = False, coupled: bool = False) -> dict:
    return {"W_sT": scaled_transpose(p["weight_hh"])}  # "scaled" by the gate scale, 1


def step(a, h_out):
    """One time step of N streams: a (1, N, H) the pre-activations, recurrent part included (gate-major like
    the other cells'), h_out (N, H) out."""
    np.tanh(a[0], out=h_out)  # h' = tanh(a)


def forward(xw, state0, p, ws: Workspace, peephole=False, coupled=False):
    """xw (1, T, N, H): W_ih x + b_ih + b_hh, to which the recurrent GEMM adds W_hh h.  state0 = (h0,).
    Returns hs (T+1, N, H) with hs[0] = h0, (hT,) and a cache."""
    _, T, N, H = xw.shape
    (h0,) = state0
    prep = prepare(p)
    hs = ws.get("hs", (T + 1, N, H), xw.dtype)
    hs[0] = h0
    gemm = recurrent(ws, "W_hh", prep["W_sT"], hs[:T], [xw])
    for t in range(T):
        gemm.add(t)  # a_t = W_ih x_t + b + W_hh h_{t-1}
        step(xw[:, t], hs[t + 1])  # h_t = tanh(a_t)
    return hs, (hs[T].copy(),), (hs, p)


def backward(dhs, dstateT, cache, ws: Workspace):
    """dhs (T+1, N, H): in dhs[1:], the gradient of the outputs hs[1:] from above.  Overwritten: each dhs[t]
    gathers the whole gradient of hs[t], through the recurrence too, and dhs[0] becomes h0's.  dstateT = (dhT,)
    or None.  Returns d_rows (T, N, H), the gradient of W_ih x + b_ih + b_hh, (dh0,) and weight_hh/bias grads."""
    hs, p = cache
    T1, N, H = hs.shape
    T = T1 - 1
    da = ws.get("da", (T, N, H), hs.dtype)
    np.multiply(hs[1:], hs[1:], out=da)
    np.subtract(1, da, out=da)  # tanh' = 1 - h'^2, for the whole chunk
    dhs[0].fill(0)
    if dstateT is not None:
        np.add(dhs[T], dstateT[0], out=dhs[T])
    gemm = recurrent(ws, "W_hh^T", p["weight_hh"], da, [dhs[None, :T]])
    for t in range(T - 1, -1, -1):
        np.multiply(da[t], dhs[t + 1], out=da[t])  # d(pre_t) = dh_t (1 - h_t^2)
        gemm.add(t)  # dh_{t-1} += d(pre_t) W_hh
    rows = da.reshape(T * N, H)
    grads = {"weight_hh": rows.T @ hs[:-1].reshape(T * N, H), "bias_hh": sum_rows(rows)}
    grads["bias_ih"] = grads["bias_hh"].copy()
    return da, (dhs[0].copy(),), grads
