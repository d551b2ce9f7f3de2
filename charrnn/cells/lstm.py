"""LSTM layer over a chunk.  Shapes: T time, N batch, H hidden, G gates (4, or 3 when coupled).

Standard gates i, f, g, o (PyTorch order):
    i, f, o = sigmoid(.)   g = tanh(.)   c' = f*c + i*g   h' = o*tanh(c')
Peephole connections (Gers & Schmidhuber, 2000) add p_i*c and p_f*c to the i and f pre-activations and p_o*c'
to o's.  Coupled input-forget gates drop f and use f = 1 - i (gates i, g, o).

The layout is time-major, so every per-step slice xw[t], hs[t] is contiguous for BLAS.  Sigmoid gates are
computed as sigmoid(x) = (1 + tanh(x/2)) / 2: their pre-activations arrive pre-scaled by 1/2 (see gate_scale), so
one in-place tanh call covers all gates of a step.
"""

from __future__ import annotations

import numpy as np

from charrnn.cells.workspace import Workspace, activation_slope


def gate_count(coupled: bool = False) -> int:
    return 3 if coupled else 4


def gate_names(coupled: bool = False) -> str:
    return "igo" if coupled else "ifgo"


def gate_scale(hidden: int, dtype, coupled: bool = False) -> np.ndarray:
    """(G*H,) factor applied to pre-activations: 1/2 for sigmoid gates (the tanh trick), 1 for g."""
    return np.repeat(np.array([1.0 if g == "g" else 0.5 for g in gate_names(coupled)], dtype=dtype), hidden)


def input_bias(p: dict) -> np.ndarray:
    """The part of the biases that can be folded into the chunk's input projection (unscaled)."""
    return p["bias_ih"] + p["bias_hh"]


def peephole_names(coupled: bool = False) -> str:
    return "io" if coupled else "ifo"


def prepare(p: dict, peephole: bool = False, coupled: bool = False) -> dict:
    """What every step needs, derived once per chunk (or once per sampling run)."""
    H, dtype = p["weight_hh"].shape[1], p["weight_hh"].dtype
    scale = gate_scale(H, dtype, coupled)
    first = slice(0, scale.size - H) if peephole else slice(0, scale.size)  # with peepholes, o waits for c'
    prep = {
        "W_sT": np.ascontiguousarray((p["weight_hh"] * scale[:, None]).T),  # (H, GH), gate-scaled
        "first": first,  # the gates activated by the first tanh call
        "scale": scale[first],
        "shift": np.where(scale == 0.5, 0.5, 0.0).astype(dtype)[first],  # sigmoid = 0.5 tanh(x/2) + 0.5
        "sl": {g: slice(k * H, (k + 1) * H) for k, g in enumerate(gate_names(coupled))},
        "peephole": peephole,
        "coupled": coupled,
    }
    if peephole:
        prep["peep"] = {g: 0.5 * p["peephole"][k] for k, g in enumerate(peephole_names(coupled))}
    return prep


def step(a, h, c, h_out, c_out, tc_out, prep, rec, tmp):
    """One time step of N streams.  a (N, G*H): scaled input-side pre-activations, overwritten with the gate
    activations.  h, c (N, H) in; h_out, c_out, tc_out = tanh(c') out (h_out may be h and c_out may be c).
    rec (N, G*H) is scratch for the recurrent GEMM, or None when a already includes h @ W_sT (the sampler's
    fused GEMV)."""
    sl, peephole = prep["sl"], prep["peephole"]
    if rec is not None:
        np.matmul(h, prep["W_sT"], out=rec)  # the one GEMM per step
        a += rec
    if peephole:
        a[:, sl["i"]] += np.multiply(prep["peep"]["i"], c, out=tmp)
        if not prep["coupled"]:
            a[:, sl["f"]] += np.multiply(prep["peep"]["f"], c, out=tmp)
    first = a[:, prep["first"]] if peephole else a
    np.tanh(first, out=first)
    first *= prep["scale"]
    first += prep["shift"]
    i, g = a[:, sl["i"]], a[:, sl["g"]]
    if prep["coupled"]:  # c' = c + i (g - c)
        np.subtract(g, c, out=tmp)
        tmp *= i
        np.add(c, tmp, out=c_out)
    else:  # c' = f c + i g
        np.multiply(a[:, sl["f"]], c, out=c_out)
        np.multiply(i, g, out=tmp)
        c_out += tmp
    o = a[:, sl["o"]]
    if peephole:
        o += np.multiply(prep["peep"]["o"], c_out, out=tmp)
        np.tanh(o, out=o)
        o *= 0.5
        o += 0.5
    np.tanh(c_out, out=tc_out)
    np.multiply(o, tc_out, out=h_out)


def forward(xw, state0, p, ws: Workspace, peephole=False, coupled=False):
    """Run the layer over a chunk.

    xw (T, N, G*H): scaled input projection with biases, gate_scale * (W_ih x + b_ih + b_hh); overwritten
    with the gate activations, which backward needs.  state0 = (h0, c0), each (N, H).
    Returns hs (T+1, N, H) with hs[0] = h0 (so hs[:-1] is each step's previous state), (hT, cT) and a cache.
    """
    T, N, GH = xw.shape
    h0, c0 = state0
    H, dtype = h0.shape[1], xw.dtype
    prep = prepare(p, peephole, coupled)
    hs = ws.get("hs", (T + 1, N, H), dtype)
    cs = ws.get("cs", (T + 1, N, H), dtype)
    tcs = ws.get("tcs", (T, N, H), dtype)
    rec = ws.get("rec", (N, GH), dtype)
    tmp = ws.get("tmp", (N, H), dtype)
    hs[0] = h0
    cs[0] = c0
    for t in range(T):
        step(xw[t], hs[t], cs[t], hs[t + 1], cs[t + 1], tcs[t], prep, rec, tmp)
    cache = (xw, hs, cs, tcs, p, peephole, coupled)
    return hs, (hs[T].copy(), cs[T].copy()), cache


def backward(dhs, dstateT, cache, ws: Workspace):
    """dhs (T, N, H) gradient of the outputs hs[1:]; dstateT = (dhT, dcT) or None.

    Returns dxw (T, N, G*H), the gradient of the unscaled pre-activations (W_ih x + b_ih + b_hh), which is
    also the gradient of b_ih and b_hh; (dh0, dc0); and the gradients of weight_hh, bias_hh and peephole.
    Weight gradients are whole-chunk GEMMs after the loop.
    """
    acts, hs, cs, tcs, p, peephole, coupled = cache
    T, N, GH = acts.shape
    H = GH // gate_count(coupled)
    dtype = acts.dtype
    sl = {g: slice(k * H, (k + 1) * H) for k, g in enumerate(gate_names(coupled))}
    W = p["weight_hh"]  # (GH, H)

    G = GH // H
    dA = activation_slope(acts, sl["g"], ws.get("slope", acts.shape, dtype))
    # Fold in, for the whole chunk, everything a gate's gradient needs besides the recurrent dh and dc':
    # d(pre_o) = dh tanh(c') o(1-o);  d(pre_i) = dc' g i(1-i);  d(pre_f) = dc' c f(1-f);  d(pre_g) = dc' i (1-g^2)
    dA[:, :, sl["o"]] *= tcs
    i_all, g_all, c_prev_all = acts[:, :, sl["i"]], acts[:, :, sl["g"]], cs[:-1]
    if coupled:  # c' = c + i (g - c): d(pre_i) = dc' (g - c) i(1-i), and dc = dc' (1 - i)
        keep = ws.get("keep", tcs.shape, dtype)
        np.subtract(g_all, c_prev_all, out=keep)
        dA[:, :, sl["i"]] *= keep
        np.subtract(1, i_all, out=keep)
    else:
        dA[:, :, sl["i"]] *= g_all
        dA[:, :, sl["f"]] *= c_prev_all
        keep = acts[:, :, sl["f"]]  # dc = dc' f
    dA[:, :, sl["g"]] *= i_all
    o_dtanh = ws.get("o_dtanh", tcs.shape, dtype)  # o (1 - tanh(c')^2): how dh reaches dc'
    np.multiply(tcs, tcs, out=o_dtanh)
    np.subtract(1, o_dtanh, out=o_dtanh)
    o_dtanh *= acts[:, :, sl["o"]]
    dA_gates = dA.reshape(T, N, G, H)  # a view: [t, :, :G-1] are the gates driven by dc', o is last

    dh = ws.get("dh", (N, H), dtype)
    dh_next = ws.get("dh_next", (N, H), dtype)
    dc = ws.get("dc", (N, H), dtype)
    tmp = ws.get("tmp", (N, H), dtype)
    if dstateT is None:
        dh_next.fill(0)
        dc.fill(0)
    else:
        dh_next[...] = dstateT[0]
        dc[...] = dstateT[1]
    if peephole:
        pe = dict(zip(peephole_names(coupled), p["peephole"], strict=True))
    for t in range(T - 1, -1, -1):
        da = dA[t]
        np.add(dhs[t], dh_next, out=dh)
        np.multiply(dh, o_dtanh[t], out=tmp)
        dc += tmp  # dc' = dc_next + dh o (1 - tanh(c')^2)
        do = da[:, sl["o"]]
        do *= dh
        if peephole:
            dc += do * pe["o"]
        np.multiply(dA_gates[t, :, : G - 1], dc[:, None, :], out=dA_gates[t, :, : G - 1])
        dc *= keep[t]
        if peephole:
            dc += da[:, sl["i"]] * pe["i"]
            if not coupled:
                dc += da[:, sl["f"]] * pe["f"]
        np.matmul(da, W, out=dh_next)  # dh = d(pre) @ W_hh

    grads = {
        "weight_hh": dA.reshape(T * N, GH).T @ hs[:-1].reshape(T * N, H),
        "bias_hh": dA.sum(axis=(0, 1)),
    }
    grads["bias_ih"] = grads["bias_hh"].copy()
    if peephole:
        grads["peephole"] = np.stack(
            [
                np.einsum("tnh,tnh->h", dA[:, :, sl[g]], cs[1:] if g == "o" else cs[:-1])
                for g in peephole_names(coupled)
            ]
        )
    return dA, (dh_next.copy(), dc.copy()), grads
