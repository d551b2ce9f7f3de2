"""GRU layer over a chunk.  Shapes: T time, N batch, H hidden; gates r, z, n (PyTorch order and equations):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

Gate-major layout (3, T, N, H), so each gate's block of a step is contiguous (see charrnn.core.cells.lstm).
r and z come from one exp (charrnn.core.cells.gates), on pre-activations pre-scaled by -1; n's pre-activation
is only complete after r * (W_hn h + b_hn), so it stays unscaled and goes through np.tanh.
"""

from __future__ import annotations

import numpy as np

from charrnn.core.cells.gates import SIGMOID, activation_slope, gate_major, quiet, squash
from charrnn.fast import packed
from charrnn.fast.workspace import Workspace, scaled_transpose, sum_rows, time_blocks


def gate_count(coupled: bool = False) -> int:
    return 3


def gate_scale(hidden: int, dtype, coupled: bool = False) -> np.ndarray:
    """(3H,) factor applied to pre-activations: the exponent's factor for the sigmoid gates r and z, 1 for n."""
    return np.repeat(np.array([SIGMOID, SIGMOID, 1.0], dtype=dtype), hidden)


def input_bias(p: dict) -> np.ndarray:
    """b_ih plus the r, z parts of b_hh; b_hn stays inside r * (W_hn h + b_hn)."""
    b = p["bias_ih"].copy()
    H = b.shape[0] // 3
    b[: 2 * H] += p["bias_hh"][: 2 * H]
    return b


def prepare(p: dict, peephole: bool = False, coupled: bool = False) -> dict:
    """What every step needs, derived once per chunk (or once per sampling run)."""
    H = p["weight_hh"].shape[1]
    scale = gate_scale(H, p["weight_hh"].dtype)
    W_sT = scaled_transpose(p["weight_hh"], scale)  # (H, 3H), gate-scaled
    return {"W_sT": W_sT, "b_hn": p["bias_hh"][2 * H :]}


def step(a, h, h_out, ghn, prep, rec, tmp):
    """One time step of N streams.  a (3, N, H): scaled input-side pre-activations, overwritten with r, z, n.
    h (N, H) in; h_out (may be h) and ghn = W_hn h + b_hn (kept for backward) out.  rec (N, 3H) scratch for the
    recurrent GEMM, or None when the chunk's packed GEMM has already added h @ W_sT into a[:2] and ghn (holding
    b_hn before)."""
    r_z = a[:2]
    if rec is not None:
        np.matmul(h, prep["W_sT"], out=rec)  # the one GEMM per step
        rec = gate_major(rec, 3)
        r_z += rec[:2]
        np.add(rec[2], prep["b_hn"], out=ghn)
    squash(r_z)
    r, z, n = a
    np.multiply(r, ghn, out=tmp)
    n += tmp
    np.tanh(n, out=n)
    np.subtract(h, n, out=tmp)  # h' = n + z (h - n)
    tmp *= z
    np.add(n, tmp, out=h_out)


def forward(xw, state0, p, ws: Workspace, peephole=False, coupled=False):
    """xw (3, T, N, H): gate_scale * (W_ih x + input_bias); overwritten with the activations r, z, n.
    state0 = (h0,).  Returns hs (T+1, N, H) with hs[0] = h0, (hT,) and a cache."""
    G, T, N, H = xw.shape
    (h0,) = state0
    dtype = xw.dtype
    prep = prepare(p)
    hs = ws.get("hs", (T + 1, N, H), dtype)
    ghn = ws.get("ghn", (T, N, H), dtype)  # W_hn h + b_hn, kept for backward
    rec = ws.get("rec", (N, G * H), dtype)
    tmp = ws.get("tmp", (N, H), dtype)
    hs[0] = h0
    recurrent = packed.recurrent(ws, "W_sT packed", prep["W_sT"], hs[:T], [xw[0], xw[1], ghn])
    if recurrent is not None:
        ghn[...] = prep["b_hn"]  # the packed GEMM adds W_hn h to it
    with quiet():
        for t in range(T):
            if recurrent is not None:
                recurrent.add(t)
            step(xw[:, t], hs[t], hs[t + 1], ghn[t], prep, None if recurrent else rec, tmp)
    return hs, (hs[T].copy(),), (xw, hs, ghn, p)


def fold(P, tmp, acts, h_prev, ghn):
    """For a block of steps, every factor of a gate's gradient that does not depend on the recurrent dh, in P:
    d(pre_z) = dh (h - n) z(1-z);  d(pre_n) = dh (1 - z)(1 - n^2);  d(pre_r) = d(pre_n) (W_hn h + b_hn) r(1-r).
    P, acts (3, b, N, H); tmp, h_prev (the states before each step), ghn (b, N, H)."""
    activation_slope(acts, 2, P)
    _, z, n = acts
    np.subtract(h_prev, n, out=tmp)
    P[1] *= tmp
    np.subtract(1, z, out=tmp)
    P[2] *= tmp
    P[0] *= ghn


def backward(dhs, dstateT, cache, ws: Workspace):
    """dhs (T, N, H), dstateT = (dhT,) or None.  Returns dX (T, N, 3H), the gradient of W_ih x + b_ih with the
    gates side by side, (dh0,) and the gradients of weight_hh, bias_hh and bias_ih.  A step writes its
    d(W_hh h + b_hh) straight into its row of dG (T, N, 3H), which that step's GEMM with W_hh reads and the
    weight gradient's one whole-chunk GEMM reads after the loop."""
    acts, hs, ghn, p = cache
    G, T, N, H = acts.shape
    dtype = acts.dtype
    W = p["weight_hh"]  # (3H, H)

    P = ws.get("slope", acts.shape, dtype)  # every factor of a gate's gradient but the recurrent dh
    tmp_all = ws.get("tmp_all", (T, N, H), dtype)
    dX = ws.get("dX", (T, N, G * H), dtype)  # gradient of the input-side pre-activations
    dG = ws.get("dG", (T, N, G * H), dtype)  # gradient of W_hh h + b_hh; r and z are the same in both

    dh = ws.get("dh", (N, H), dtype)
    dh_z = ws.get("dh_z", (N, H), dtype)
    dh_next = ws.get("dh_next", (N, H), dtype)
    if dstateT is None:
        dh_next.fill(0)
    else:
        dh_next[...] = dstateT[0]
    r_all, z_all = acts[0], acts[1]
    recurrent = packed.recurrent(ws, "W packed", W, dG, [dh_next])
    for block in reversed(time_blocks(T, G * N * H)):  # L2-sized blocks: fold, then run, while in cache
        fold(P[:, block], tmp_all[block], acts[:, block], hs[block], ghn[block])
        for t in range(block.stop - 1, block.start - 1, -1):
            g, dn, pt = gate_major(dG[t], G), dX[t, :, 2 * H :], P[:, t]
            np.add(dhs[t], dh_next, out=dh)
            np.multiply(dh, pt[1], out=g[1])  # d(pre_z)
            np.multiply(dh, pt[2], out=dn)  # d(pre_n)
            np.multiply(dn, pt[0], out=g[0])  # d(pre_r)
            np.multiply(dn, r_all[t], out=g[2])  # d(W_hn h + b_hn) = d(pre_n) r
            if recurrent is None:
                np.matmul(dG[t], W, out=dh_next)
                np.multiply(dh, z_all[t], out=dh_z)
                dh_next += dh_z  # dh = dG @ W_hh + dh z
            else:
                np.multiply(dh, z_all[t], out=dh_next)
                recurrent.add(t)  # dh_next += dG[t] @ W_hh
    dX[:, :, : 2 * H] = dG[:, :, : 2 * H]

    rows = dG.reshape(T * N, G * H)
    grads = {
        "weight_hh": rows.T @ hs[:-1].reshape(T * N, H),
        "bias_hh": sum_rows(rows),
        "bias_ih": sum_rows(dX.reshape(T * N, G * H)),
    }
    return dX, (dh_next.copy(),), grads
