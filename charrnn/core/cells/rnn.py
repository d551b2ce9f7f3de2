"""Vanilla (Elman) RNN layer over a chunk, as in min-char-rnn.  Shapes: T time, N batch, H hidden.

    h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
"""

from __future__ import annotations

import numpy as np

from charrnn.fast import packed
from charrnn.fast.workspace import Workspace, scaled_transpose, sum_rows


def gate_count(coupled: bool = False) -> int:
    return 1


def gate_scale(hidden: int, dtype, coupled: bool = False) -> np.ndarray:
    return np.ones(hidden, dtype=dtype)


def input_bias(p: dict) -> np.ndarray:
    return p["bias_ih"] + p["bias_hh"]


def prepare(p: dict, peephole: bool = False, coupled: bool = False) -> dict:
    return {"W_sT": scaled_transpose(p["weight_hh"])}  # "scaled" by the gate scale, 1


def step(a, h, h_out, prep, rec):
    """One time step of N streams: a (1, N, H) input-side pre-activations (gate-major like the other cells'),
    h (N, H) in, h_out (may be h) out.  rec (N, H) is scratch for the recurrent GEMM, or None when a already
    includes h @ W_hh^T (the chunk's packed GEMM, or the sampler's fused GEMV)."""
    a = a[0]
    if rec is None:
        np.tanh(a, out=h_out)
        return
    np.matmul(h, prep["W_sT"], out=rec)  # the one GEMM per step
    np.add(rec, a, out=h_out)
    np.tanh(h_out, out=h_out)


def forward(xw, state0, p, ws: Workspace, peephole=False, coupled=False):
    """xw (1, T, N, H): W_ih x + b_ih + b_hh (to which the packed GEMM, when it runs, adds h @ W_hh^T).
    state0 = (h0,).
    Returns hs (T+1, N, H) with hs[0] = h0, (hT,) and a cache."""
    _, T, N, H = xw.shape
    (h0,) = state0
    prep = prepare(p)
    hs = ws.get("hs", (T + 1, N, H), xw.dtype)
    rec = ws.get("rec", (N, H), xw.dtype)
    hs[0] = h0
    recurrent = packed.recurrent(ws, "W_sT packed", prep["W_sT"], hs[:T], [xw[0]])  # xw[0, t] += h_t @ W_hh^T
    for t in range(T):
        if recurrent is not None:
            recurrent.add(t)
        step(xw[:, t], hs[t], hs[t + 1], prep, None if recurrent else rec)
    return hs, (hs[T].copy(),), (hs, p)


def backward(dhs, dstateT, cache, ws: Workspace):
    """dhs (T, N, H), dstateT = (dhT,) or None.  Returns d_rows (T, N, H), the gradient of W_ih x + b_ih + b_hh,
    (dh0,) and weight_hh/bias grads."""
    hs, p = cache
    T1, N, H = hs.shape
    T = T1 - 1
    W = p["weight_hh"]
    da = ws.get("da", (T, N, H), hs.dtype)
    np.multiply(hs[1:], hs[1:], out=da)
    np.subtract(1, da, out=da)  # tanh' = 1 - h'^2, for the whole chunk
    dh_next = ws.get("dh_next", (N, H), hs.dtype)
    if dstateT is None:
        dh_next.fill(0)
    else:
        dh_next[...] = dstateT[0]
    recurrent = packed.recurrent(ws, "W packed", W, da, [dh_next])
    for t in range(T - 1, -1, -1):
        dh_next += dhs[t]
        da[t] *= dh_next
        if recurrent is None:
            np.matmul(da[t], W, out=dh_next)
        else:
            dh_next.fill(0)
            recurrent.add(t)
    grads = {
        "weight_hh": da.reshape(T * N, H).T @ hs[:-1].reshape(T * N, H),
        "bias_hh": sum_rows(da.reshape(T * N, H)),
    }
    grads["bias_ih"] = grads["bias_hh"].copy()
    return da, (dh_next.copy(),), grads
