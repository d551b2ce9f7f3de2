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
from charrnn.fast.gemm import recurrent
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


def step(a, h, h_out, ghn, tmp):
    """One time step of N streams.  a (3, N, H): r and z's scaled pre-activations, recurrent part included (the
    chunk's GEMM, or the sampler's), and n's input part W_in x + b_in; overwritten with r, z, n.  h (N, H) in;
    ghn = W_hn h + b_hn in (kept for backward); h_out (may be h) out."""
    r_z = a[:2]
    squash(r_z)  # r, z = sigmoid(a_r), sigmoid(a_z)
    r, z, n = a
    np.multiply(r, ghn, out=tmp)
    n += tmp  # a_n = W_in x + b_in + r (W_hn h + b_hn)
    np.tanh(n, out=n)  # n = tanh(a_n)
    np.subtract(h, n, out=tmp)
    tmp *= z
    np.add(n, tmp, out=h_out)  # h' = (1 - z) n + z h = n + z (h - n)


def forward(xw, state0, p, ws: Workspace, peephole=False, coupled=False):
    """xw (3, T, N, H): gate_scale * (W_ih x + input_bias); the recurrent GEMM adds into r and z, and the steps
    overwrite it with the activations r, z, n.  state0 = (h0,).  Returns hs (T+1, N, H) with hs[0] = h0, (hT,)
    and a cache."""
    G, T, N, H = xw.shape
    (h0,) = state0
    dtype = xw.dtype
    prep = prepare(p)
    hs = ws.get("hs", (T + 1, N, H), dtype)
    ghn = ws.get("ghn", (T, N, H), dtype)  # W_hn h + b_hn, kept for backward
    tmp = ws.get("tmp", (N, H), dtype)
    hs[0] = h0
    ghn[...] = prep["b_hn"]  # the GEMM adds W_hn h to it
    gemm = recurrent(ws, "W_hh", prep["W_sT"], hs[:T], [xw[:2], ghn[None]])
    with quiet():
        for t in range(T):
            gemm.add(t)  # a_r, a_z += W_hr h, W_hz h (scaled);  ghn = W_hn h + b_hn
            step(xw[:, t], hs[t], hs[t + 1], ghn[t], tmp)  # r, z, n and h_t
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
    """dhs (T+1, N, H): in dhs[1:], the gradient of the outputs hs[1:] from above.  Overwritten: each dhs[t]
    gathers the whole gradient of hs[t], through the recurrence too, and dhs[0] becomes h0's.  dstateT = (dhT,)
    or None.  Returns dX (T, N, 3H), the gradient of W_ih x + b_ih with the gates side by side, (dh0,) and the
    gradients of weight_hh, bias_hh and bias_ih.  A step writes its d(W_hh h + b_hh) straight into its row of
    dG (T, N, 3H), which that step's GEMM with W_hh reads and the weight gradient's one whole-chunk GEMM reads
    after the loop."""
    acts, hs, ghn, p = cache
    G, T, N, H = acts.shape
    dtype = acts.dtype
    W = p["weight_hh"]  # (3H, H)

    P = ws.get("slope", acts.shape, dtype)  # every factor of a gate's gradient but the recurrent dh
    tmp_all = ws.get("tmp_all", (T, N, H), dtype)
    dX = ws.get("dX", (T, N, G * H), dtype)  # gradient of the input-side pre-activations
    dG = ws.get("dG", (T, N, G * H), dtype)  # gradient of W_hh h + b_hh; r and z are the same in both
    dh_z = ws.get("dh_z", (N, H), dtype)
    dhs[0].fill(0)
    if dstateT is not None:
        np.add(dhs[T], dstateT[0], out=dhs[T])
    r_all, z_all = acts[0], acts[1]
    gemm = recurrent(ws, "W_hh^T", W, dG, [dhs[None, :T]])
    for block in reversed(time_blocks(T, G * N * H)):  # L2-sized blocks: fold, then run, while in cache
        fold(P[:, block], tmp_all[block], acts[:, block], hs[block], ghn[block])
        for t in range(block.stop - 1, block.start - 1, -1):
            g, dn, pt, dh = gate_major(dG[t], G), dX[t, :, 2 * H :], P[:, t], dhs[t + 1]
            np.multiply(dh, pt[1], out=g[1])  # d(pre_z) = dh (h - n) z(1-z)
            np.multiply(dh, pt[2], out=dn)  # d(pre_n) = dh (1 - z)(1 - n^2)
            np.multiply(dn, pt[0], out=g[0])  # d(pre_r) = d(pre_n) (W_hn h + b_hn) r(1-r)
            np.multiply(dn, r_all[t], out=g[2])  # d(W_hn h + b_hn) = d(pre_n) r
            np.multiply(dh, z_all[t], out=dh_z)
            np.add(dhs[t], dh_z, out=dhs[t])  # dh_{t-1} += dh z
            gemm.add(t)  # dh_{t-1} += d(W_hh h + b_hh) W_hh
    dX[:, :, : 2 * H] = dG[:, :, : 2 * H]

    rows = dG.reshape(T * N, G * H)
    grads = {
        "weight_hh": rows.T @ hs[:-1].reshape(T * N, H),
        "bias_hh": sum_rows(rows),
        "bias_ih": sum_rows(dX.reshape(T * N, G * H)),
    }
    return dX, (dhs[0].copy(),), grads
