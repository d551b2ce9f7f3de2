"""LSTM layer over a chunk.  Shapes: T time, N batch, H hidden, G gates (4, or 3 when coupled).

Standard gates i, f, g, o (PyTorch order):
    i, f, o = sigmoid(.)   g = tanh(.)   c' = f*c + i*g   h' = o*tanh(c')
Peephole connections (Gers & Schmidhuber, 2000) add p_i*c and p_f*c to the i and f pre-activations and p_o*c'
to o's.  Coupled input-forget gates drop f and use f = 1 - i (gates i, g, o).

The layout is gate-major, (G, T, N, H): each gate's (N, H) block of a step is contiguous, so every element-wise
call on a gate runs as one loop.  In the (T, N, G*H) layout a gate's block is N strided rows, which NumPy loops
over one by one (a step of LSTM 1x256 took ~10% longer).  The one recurrent GEMM of a step adds into each gate's
block through charrnn.fast.gemm, which picks how.  Every gate comes from one exp (charrnn.core.cells.gates):
pre-activations arrive pre-scaled by -1 (sigmoid gates) or -2 (g), see gate_scale, so one in-place exp, add
and divide cover all gates of a step.  tanh(c') stays np.tanh: one call where the exp form takes four, which
the sampler's batch-1 step would pay for.
"""

from __future__ import annotations

import numpy as np

from charrnn.core.cells.gates import SIGMOID, TANH, activation_slope, gate_major, quiet, squash
from charrnn.fast.gemm import recurrent
from charrnn.fast.workspace import Workspace, scaled_transpose, sum_rows, time_blocks


def gate_count(coupled: bool = False) -> int:
    return 3 if coupled else 4


def gate_names(coupled: bool = False) -> str:
    return "igo" if coupled else "ifgo"


def gate_scale(hidden: int, dtype, coupled: bool = False) -> np.ndarray:
    """(G*H,) factor applied to pre-activations: the exponent's factor of each gate's nonlinearity."""
    return np.repeat(np.array([TANH if g == "g" else SIGMOID for g in gate_names(coupled)], dtype=dtype), hidden)


def input_bias(p: dict) -> np.ndarray:
    """The part of the biases that can be folded into the chunk's input projection (unscaled)."""
    return p["bias_ih"] + p["bias_hh"]


def peephole_names(coupled: bool = False) -> str:
    return "io" if coupled else "ifo"


def prepare(p: dict, peephole: bool = False, coupled: bool = False) -> dict:
    """What every step needs, derived once per chunk (or once per sampling run)."""
    H, dtype = p["weight_hh"].shape[1], p["weight_hh"].dtype
    names = gate_names(coupled)
    G = len(names)
    scale = gate_scale(H, dtype, coupled)
    W_sT = scaled_transpose(p["weight_hh"], scale)  # (H, G*H), gate-scaled
    first = slice(0, G - 1) if peephole else slice(0, G)  # the gates the first exp activates; o waits for c'
    prep = {
        "W_sT": W_sT,
        "first": first,
        # (G', 1, 1), minus each gate's exponent factor: sigmoid = 1 / (1 + e^-x), tanh + 1 = 2 / (1 + e^-2x)
        "numerator": -scale[::H][first, None, None],
        "gate": {g: k for k, g in enumerate(names)},
        "coupled": coupled,
        "peep": None,
    }
    if peephole:  # the peephole weights, scaled like the gates they feed (all sigmoid)
        prep["peep"] = {g: SIGMOID * p["peephole"][k] for k, g in enumerate(peephole_names(coupled))}
    return prep


def step(a, c, h_out, c_out, tc_out, prep, tmp):
    """One time step of N streams.  a (G, N, H): the scaled pre-activations, recurrent part included (the
    chunk's GEMM, or the sampler's); overwritten with the gate activations.  c (N, H) in; h_out, c_out and
    tc_out = tanh(c') out (c_out may be c)."""
    k, peep = prep["gate"], prep["peep"]
    if peep:  # the pre-activations of i and f see the cell state
        a_i = a[k["i"]]
        a_i += np.multiply(peep["i"], c, out=tmp)  # a_i += p_i c
        if not prep["coupled"]:
            a_f = a[k["f"]]
            a_f += np.multiply(peep["f"], c, out=tmp)  # a_f += p_f c
    squash(a[prep["first"]], prep["numerator"])  # i, f, o = sigmoid(a);  g = tanh(a) + 1
    i, g = a[k["i"]], a[k["g"]]
    g -= 1  # g = tanh(a_g) = 2 / (1 + e^-2a) - 1
    if prep["coupled"]:
        np.subtract(g, c, out=tmp)
        tmp *= i
        np.add(c, tmp, out=c_out)  # c' = c + i (g - c) = (1 - i) c + i g
    else:
        np.multiply(a[k["f"]], c, out=c_out)  # c' = f c
        np.multiply(i, g, out=tmp)
        c_out += tmp  # c' += i g
    o = a[k["o"]]
    if peep:  # o sees the new cell state
        o += np.multiply(peep["o"], c_out, out=tmp)  # a_o += p_o c'
        squash(o)  # o = sigmoid(a_o)
    np.tanh(c_out, out=tc_out)  # tanh(c')
    np.multiply(o, tc_out, out=h_out)  # h' = o tanh(c')


def forward(xw, state0, p, ws: Workspace, peephole=False, coupled=False):
    """Run the layer over a chunk.

    xw (G, T, N, H): scaled input projection with biases, gate_scale * (W_ih x + b_ih + b_hh); the recurrent
    GEMM adds into it, and the steps overwrite it with the gate activations, which backward needs.
    state0 = (h0, c0), each (N, H).
    Returns hs (T+1, N, H) with hs[0] = h0 (so hs[:-1] is each step's previous state), (hT, cT) and a cache.
    """
    G, T, N, H = xw.shape
    h0, c0 = state0
    dtype = xw.dtype
    prep = prepare(p, peephole, coupled)
    hs = ws.get("hs", (T + 1, N, H), dtype)
    cs = ws.get("cs", (T + 1, N, H), dtype)
    tcs = ws.get("tcs", (T, N, H), dtype)
    tmp = ws.get("tmp", (N, H), dtype)
    hs[0] = h0
    cs[0] = c0
    gemm = recurrent(ws, "W_hh", prep["W_sT"], hs[:T], [xw])
    with quiet():
        for t in range(T):
            gemm.add(t)  # a_t = W_ih x_t + b + W_hh h_{t-1}, gate-scaled
            step(xw[:, t], cs[t], hs[t + 1], cs[t + 1], tcs[t], prep, tmp)  # the gates, c_t and h_t
    cache = (xw, hs, cs, tcs, p, peephole, coupled)
    return hs, (hs[T].copy(), cs[T].copy()), cache


def fold(dA, o_dtanh, keep, acts, cs, tcs, k, coupled):
    """For a block of steps, everything a gate's gradient needs besides the recurrent dh and dc', in place:
    d(pre_o) = dh tanh(c') o(1-o);  d(pre_i) = dc' g i(1-i);  d(pre_f) = dc' c f(1-f);  d(pre_g) = dc' i (1-g^2).
    dA, acts (G, b, N, H); o_dtanh, keep, tcs (b, N, H); cs (b+1, N, H), the cell states from c_{t-1} on."""
    activation_slope(acts, k["g"], dA)
    dA[k["o"]] *= tcs
    i, g, c_prev = acts[k["i"]], acts[k["g"]], cs[:-1]
    if coupled:  # c' = c + i (g - c): d(pre_i) = dc' (g - c) i(1-i), and dc = dc' (1 - i)
        np.subtract(g, c_prev, out=keep)
        dA[k["i"]] *= keep
        np.subtract(1, i, out=keep)
    else:  # keep is f, dc = dc' f
        dA[k["i"]] *= g
        dA[k["f"]] *= c_prev
    dA[k["g"]] *= i
    np.multiply(tcs, tcs, out=o_dtanh)
    np.subtract(1, o_dtanh, out=o_dtanh)
    o_dtanh *= acts[k["o"]]


def backward(dhs, dstateT, cache, ws: Workspace):
    """dhs (T+1, N, H): in dhs[1:], the gradient of the outputs hs[1:] from above.  Overwritten: each dhs[t]
    gathers the whole gradient of hs[t], through the recurrence too, and dhs[0] becomes h0's.  dstateT = (dhT,
    dcT) or None.

    Returns d_rows (T, N, G*H), the gradient of the unscaled pre-activations (W_ih x + b_ih + b_hh) with the
    gates side by side, which is also the gradient of b_ih and b_hh; (dh0, dc0); and the gradients of
    weight_hh, bias_hh and peephole.  A step's last multiplies write its gradient into its row of d_rows (through
    the gate-major view d_pre), the input of that step's GEMM with W_hh, with no copy; afterwards the rows make
    every weight gradient one whole-chunk GEMM.  (All of dA as a view of the rows instead was slower: the chunk-wide
    fold then runs strided, 226 against 184-203 ms a cell backward at B 32, H 512.)
    """
    acts, hs, cs, tcs, p, peephole, coupled = cache
    G, T, N, H = acts.shape
    dtype = acts.dtype
    k = {g: j for j, g in enumerate(gate_names(coupled))}
    W = p["weight_hh"]  # (GH, H)

    dA = ws.get("slope", acts.shape, dtype)  # every factor of a gate's gradient but the recurrent dh and dc'
    o_dtanh = ws.get("o_dtanh", tcs.shape, dtype)  # o (1 - tanh(c')^2): how dh reaches dc'
    keep = ws.get("keep", tcs.shape, dtype) if coupled else acts[k["f"]]  # dc = dc' * keep
    d_rows = ws.get("d_rows", (T, N, G * H), dtype)
    d_pre = gate_major(d_rows, G)  # the same rows, gate by gate
    dc = ws.get("dc", (N, H), dtype)
    tmp = ws.get("tmp", (N, H), dtype)
    dhs[0].fill(0)
    if dstateT is None:
        dc.fill(0)
    else:
        np.add(dhs[T], dstateT[0], out=dhs[T])
        dc[...] = dstateT[1]
    if peephole:
        pe = dict(zip(peephole_names(coupled), p["peephole"], strict=True))
    gemm = recurrent(ws, "W_hh^T", W, d_rows, [dhs[None, :T]])
    for block in reversed(time_blocks(T, G * N * H)):  # L2-sized blocks: fold, then run, while in cache
        fold(dA[:, block], o_dtanh[block], keep[block], acts[:, block], cs[block.start : block.stop + 1],
             tcs[block], k, coupled)
        for t in range(block.stop - 1, block.start - 1, -1):
            da, dp, dh = dA[:, t], d_pre[:, t], dhs[t + 1]  # the last factors multiply into dp, the GEMM's row
            np.multiply(dh, o_dtanh[t], out=tmp)
            dc += tmp  # dc' = dc_next + dh o (1 - tanh(c')^2)
            np.multiply(da[k["o"]], dh, out=dp[k["o"]])  # d(pre_o) = dh tanh(c') o(1-o)
            if peephole:
                dc += dp[k["o"]] * pe["o"]  # dc' += d(pre_o) p_o
            np.multiply(da[: G - 1], dc, out=dp[: G - 1])  # d(pre_i, pre_f, pre_g) = dc' (g i', c f', i g')
            dc *= keep[t]  # dc = dc' f
            if peephole:
                dc += dp[k["i"]] * pe["i"]  # dc += d(pre_i) p_i
                if not coupled:
                    dc += dp[k["f"]] * pe["f"]  # dc += d(pre_f) p_f
            gemm.add(t)  # dh_{t-1} += d(pre_t) W_hh

    rows = d_rows.reshape(T * N, G * H)
    grads = {"weight_hh": rows.T @ hs[:-1].reshape(T * N, H), "bias_hh": sum_rows(rows)}
    grads["bias_ih"] = grads["bias_hh"].copy()
    if peephole:
        grads["peephole"] = np.stack(
            [np.einsum("tnh,tnh->h", d_pre[k[g]], cs[1:] if g == "o" else cs[:-1]) for g in peephole_names(coupled)]
        )
    return d_rows, (dhs[0].copy(), dc.copy()), grads
