"""LSTM layer over a chunk.  Shapes: T time, N batch, H hidden, G gates (4, or 3 when coupled).

Standard gates i, f, g, o (PyTorch order):
    i, f, o = sigmoid(.)   g = tanh(.)   c' = f*c + i*g   h' = o*tanh(c')
Peephole connections (Gers & Schmidhuber, 2000) add p_i*c and p_f*c to the i and f pre-activations and p_o*c'
to o's.  Coupled input-forget gates drop f and use f = 1 - i (gates i, g, o).

The layout is gate-major, (G, T, N, H): each gate's (N, H) block of a step is contiguous, so every element-wise
call on a gate runs as one loop.  In the (T, N, G*H) layout a gate's block is N strided rows, which NumPy loops
over one by one (a step of LSTM 1x256 took ~10% longer).  The one recurrent GEMM of a step adds into each gate's
block (charrnn.fast.packed, weights packed once a chunk), or, through np.matmul, writes the gates side by side,
(N, G*H), added through a gate-major view.  Every gate comes from one exp (charrnn.core.cells.gates):
pre-activations arrive pre-scaled by -1 (sigmoid gates) or -2 (g), see gate_scale, so one in-place exp, add
and divide cover all gates of a step.  tanh(c') stays np.tanh: one call where the exp form takes four, which
the sampler's batch-1 step would pay for.
"""

from __future__ import annotations

import numpy as np

from charrnn.core.cells.gates import SIGMOID, TANH, activation_slope, gate_major, quiet, squash
from charrnn.fast import packed
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
        "peephole": peephole,
        "coupled": coupled,
    }
    if peephole:
        prep["peep"] = {g: SIGMOID * p["peephole"][k] for k, g in enumerate(peephole_names(coupled))}
    return prep


def step(a, h, c, h_out, c_out, tc_out, prep, rec, tmp):
    """One time step of N streams.  a (G, N, H): scaled input-side pre-activations, overwritten with the gate
    activations.  h, c (N, H) in; h_out, c_out, tc_out = tanh(c') out (h_out may be h and c_out may be c).
    rec (N, G*H) is scratch for the recurrent GEMM, or None when a already includes h @ W_sT (the chunk's packed
    GEMM, or the sampler's fused GEMV)."""
    k, peephole = prep["gate"], prep["peephole"]
    if rec is not None:
        np.matmul(h, prep["W_sT"], out=rec)  # the one GEMM per step
        a += gate_major(rec, len(a))
    if peephole:
        a[k["i"]] += np.multiply(prep["peep"]["i"], c, out=tmp)
        if not prep["coupled"]:
            a[k["f"]] += np.multiply(prep["peep"]["f"], c, out=tmp)
    squash(a[prep["first"]], prep["numerator"])
    i, g = a[k["i"]], a[k["g"]]
    g -= 1  # tanh = 2 / (1 + e^-2x) - 1
    if prep["coupled"]:  # c' = c + i (g - c)
        np.subtract(g, c, out=tmp)
        tmp *= i
        np.add(c, tmp, out=c_out)
    else:  # c' = f c + i g
        np.multiply(a[k["f"]], c, out=c_out)
        np.multiply(i, g, out=tmp)
        c_out += tmp
    o = a[k["o"]]
    if peephole:
        o += np.multiply(prep["peep"]["o"], c_out, out=tmp)
        squash(o)
    np.tanh(c_out, out=tc_out)
    np.multiply(o, tc_out, out=h_out)


PAIRED_GATES = "oifg"  # the sampler's gate order: i, f beside g and the cell state c, see paired_step


def paired_order(hidden: int) -> np.ndarray:
    """Indices taking the gate columns (or rows) of PyTorch's order i, f, g, o to PAIRED_GATES' o, i, f, g."""
    return np.roll(np.arange(4 * hidden), hidden)


def paired_step(buf: np.ndarray, h_out: np.ndarray):
    """The sampler's step of a standard LSTM (no peephole, not coupled) as a function of no arguments.

    buf (N, 5H) holds each stream's [o | i | f | g | c]: the caller writes the scaled pre-activations of o, i, f, g
    (gate_scale, in PAIRED_GATES' order) into buf[:, :4H] and c lives in buf[:, 4H:].  Then [i | f] * [g | c] is
    one multiply, and every view is bound once: at batch 1 a step costs what NumPy's calls cost (~1 us each on
    the Zen 3, whatever the 1,024 elements), so this one makes 8 calls, where step makes 10 and slices its
    arguments.  h_out (N, H) receives h'.  A batch of one may come as 1-D views, buf (5H,) and h_out (H,)."""
    H = buf.shape[-1] // 5
    pre, o, i_f, g, g_c, c = (buf[..., a:b] for a, b in
                              ((0, 4 * H), (0, H), (H, 3 * H), (3 * H, 4 * H), (3 * H, 5 * H), (4 * H, 5 * H)))
    products = np.empty(i_f.shape, buf.dtype)
    ig, fc = products[..., :H], products[..., H:]
    tc = np.empty(c.shape, buf.dtype)
    numerator = -gate_scale(H, buf.dtype)[paired_order(H)]  # 1 for the sigmoid gates, 2 for g (see squash)
    one = np.ones(4 * H, buf.dtype)  # an array, not the scalar 1: NumPy takes it with less work per call
    one_g = one[:H]
    exp, add, divide, subtract, multiply, tanh = np.exp, np.add, np.divide, np.subtract, np.multiply, np.tanh

    def step() -> None:
        exp(pre, pre)  # squash, as in activations.squash: numerator / (1 + e^a)
        add(pre, one, pre)
        divide(numerator, pre, pre)
        subtract(g, one_g, g)  # tanh = 2 / (1 + e^-2x) - 1
        multiply(i_f, g_c, products)  # [i g | f c]
        add(ig, fc, c)  # c' = i g + f c
        tanh(c, tc)
        multiply(o, tc, h_out)  # h' = o tanh(c')

    return step


def forward(xw, state0, p, ws: Workspace, peephole=False, coupled=False):
    """Run the layer over a chunk.

    xw (G, T, N, H): scaled input projection with biases, gate_scale * (W_ih x + b_ih + b_hh); overwritten
    with the gate activations, which backward needs.  state0 = (h0, c0), each (N, H).
    Returns hs (T+1, N, H) with hs[0] = h0 (so hs[:-1] is each step's previous state), (hT, cT) and a cache.
    """
    G, T, N, H = xw.shape
    h0, c0 = state0
    dtype = xw.dtype
    prep = prepare(p, peephole, coupled)
    hs = ws.get("hs", (T + 1, N, H), dtype)
    cs = ws.get("cs", (T + 1, N, H), dtype)
    tcs = ws.get("tcs", (T, N, H), dtype)
    rec = ws.get("rec", (N, G * H), dtype)
    tmp = ws.get("tmp", (N, H), dtype)
    hs[0] = h0
    cs[0] = c0
    recurrent = packed.recurrent(ws, "W_sT packed", prep["W_sT"], hs[:T], list(xw))  # xw[:, t] += h_t @ W_sT
    with quiet():
        for t in range(T):
            if recurrent is not None:
                recurrent.add(t)
            step(xw[:, t], hs[t], cs[t], hs[t + 1], cs[t + 1], tcs[t], prep, None if recurrent else rec, tmp)
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
    """dhs (T, N, H) gradient of the outputs hs[1:]; dstateT = (dhT, dcT) or None.

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
    dh = ws.get("dh", (N, H), dtype)
    dh_next = ws.get("dh_next", (N, H), dtype)
    d_rows = ws.get("d_rows", (T, N, G * H), dtype)
    d_pre = gate_major(d_rows, G)  # the same rows, gate by gate
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
    recurrent = packed.recurrent(ws, "W packed", W, d_rows, [dh_next])  # dh_next += d_rows[t] @ W_hh
    for block in reversed(time_blocks(T, G * N * H)):  # L2-sized blocks: fold, then run, while in cache
        fold(dA[:, block], o_dtanh[block], keep[block], acts[:, block], cs[block.start : block.stop + 1],
             tcs[block], k, coupled)
        for t in range(block.stop - 1, block.start - 1, -1):
            da, dp = dA[:, t], d_pre[:, t]  # the last factors multiply into the GEMM's row: no copy
            np.add(dhs[t], dh_next, out=dh)
            np.multiply(dh, o_dtanh[t], out=tmp)
            dc += tmp  # dc' = dc_next + dh o (1 - tanh(c')^2)
            np.multiply(da[k["o"]], dh, out=dp[k["o"]])
            if peephole:
                dc += dp[k["o"]] * pe["o"]
            np.multiply(da[: G - 1], dc, out=dp[: G - 1])  # the gates driven by dc' (o is last)
            dc *= keep[t]
            if peephole:
                dc += dp[k["i"]] * pe["i"]
                if not coupled:
                    dc += dp[k["f"]] * pe["f"]
            if recurrent is None:
                np.matmul(d_rows[t], W, out=dh_next)  # dh = d(pre) @ W_hh
            else:
                dh_next.fill(0)
                recurrent.add(t)

    rows = d_rows.reshape(T * N, G * H)
    grads = {"weight_hh": rows.T @ hs[:-1].reshape(T * N, H), "bias_hh": sum_rows(rows)}
    grads["bias_ih"] = grads["bias_hh"].copy()
    if peephole:
        grads["peephole"] = np.stack(
            [np.einsum("tnh,tnh->h", d_pre[k[g]], cs[1:] if g == "o" else cs[:-1]) for g in peephole_names(coupled)]
        )
    return d_rows, (dh_next.copy(), dc.copy()), grads
