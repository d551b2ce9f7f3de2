"""A plain reference model: one example, one step, one layer at a time, straight from the equations.

Slow and obvious on purpose; the fast chunked layers in charrnn must agree with it.  Weights use PyTorch's
layout and gate order, input characters are explicit one-hot vectors.
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def rnn_step(x, state, p):
    (h,) = state
    return (np.tanh(p["weight_ih"] @ x + p["bias_ih"] + p["weight_hh"] @ h + p["bias_hh"]),)


def gru_step(x, state, p):
    (h,) = state
    H = h.shape[0]
    gi = p["weight_ih"] @ x + p["bias_ih"]
    gh = p["weight_hh"] @ h + p["bias_hh"]
    r = sigmoid(gi[:H] + gh[:H])
    z = sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
    n = np.tanh(gi[2 * H :] + r * gh[2 * H :])
    return ((1 - z) * n + z * h,)


def lstm_step(x, state, p, peephole=False, coupled=False):
    h, c = state
    H = h.shape[0]
    a = p["weight_ih"] @ x + p["bias_ih"] + p["weight_hh"] @ h + p["bias_hh"]
    if coupled:
        a_i, a_g, a_o = a[:H], a[H : 2 * H], a[2 * H :]
        if peephole:
            a_i = a_i + p["peephole"][0] * c
        i = sigmoid(a_i)
        f = 1 - i
    else:
        a_i, a_f, a_g, a_o = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        if peephole:
            a_i = a_i + p["peephole"][0] * c
            a_f = a_f + p["peephole"][1] * c
        i, f = sigmoid(a_i), sigmoid(a_f)
    c_new = f * c + i * np.tanh(a_g)
    if peephole:
        a_o = a_o + p["peephole"][-1] * c_new
    h_new = sigmoid(a_o) * np.tanh(c_new)
    return h_new, c_new


def run(model, x, state, masks=None):
    """Logits (T*N, V) in time-major order and the final state, for a charrnn Model's parameters.
    x: (N, T) character indices, or (N, T, V) input vectors (one-hot, or perturbed for a gradient check)."""
    cfg = model.cfg
    N, T = x.shape[:2]
    V = cfg.vocab_size
    state = [s.copy() for s in state]
    logits = np.zeros((T, N, V))
    for n in range(N):
        for t in range(T):
            inp = x[n, t] if x.ndim == 3 else np.eye(V)[x[n, t]]
            for k in range(cfg.layers):
                p = model.layer(k)
                layer_state = tuple(s[k, n] for s in state)
                if cfg.cell == "lstm":
                    new = lstm_step(inp, layer_state, p, cfg.peephole, cfg.coupled)
                else:
                    new = {"rnn": rnn_step, "gru": gru_step}[cfg.cell](inp, layer_state, p)
                for s, v in zip(state, new, strict=True):
                    s[k, n] = v
                inp = new[0] if masks is None else new[0] * masks[k][t, n]
            logits[t, n] = model.params["decoder.weight"] @ inp + model.params["decoder.bias"]
    return logits.reshape(T * N, V), tuple(state)
