"""Looking inside a model: the trace's states, predictions and gates against the model's own pass and the cell
equations, and Model.input_gradient against finite differences of the plain reference model in float64."""

import naive
import numpy as np
import pytest
from models import random_model

from charrnn.core.model import cross_entropy
from charrnn.core.trace import sigmoid_gates, trace

CELL_OPTIONS = [("lstm", {}), ("lstm", {"peephole": True}), ("lstm", {"coupled": True}),
                ("lstm", {"peephole": True, "coupled": True}), ("gru", {}), ("rnn", {})]


def random_state(model, N=1, seed=3):
    return tuple(np.random.default_rng(seed).normal(size=s.shape) for s in model.initial_state(N))


@pytest.mark.parametrize(("cell", "options"), CELL_OPTIONS)
def test_trace_follows_the_models_own_pass(cell, options):
    model = random_model(cell, V=7, H=5, **options)
    idx = np.random.default_rng(2).integers(0, 7, 12).astype(np.uint8)
    state0 = random_state(model)
    tr = trace(model, idx, state0)
    logits, _, _ = model.forward(idx[None], state0)
    np.testing.assert_allclose(tr.logits, logits, atol=1e-12)
    for t in (0, 5, 11):  # the states after reading character t
        _, final, _ = model.forward(idx[None, : t + 1], state0)
        for name, s in zip(tr.states, final, strict=True):
            np.testing.assert_allclose(tr.states[name][:, t], s[:, 0], atol=1e-12)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize(("cell", "options"), CELL_OPTIONS)
def test_gates_reproduce_the_next_state_by_the_cell_equations(cell, options):
    """The gates the trace recomputes, put into the cell's equations with the candidate computed here, give the
    states the model reached: a gate in the wrong block, or a missing peephole, would not."""
    model = random_model(cell, V=7, H=5, **options)
    idx = np.random.default_rng(4).integers(0, 7, 15)
    state0 = random_state(model)
    tr = trace(model, idx, state0)
    assert set(tr.gates) == set(sigmoid_gates(model)) == {"lstm": set("ifo") - ({"f"} if options.get("coupled")
                                                                               else set()),
                                                          "gru": {"r", "z"}, "rnn": set()}[cell]
    H = model.cfg.hidden
    for k in range(model.cfg.layers):
        p = model.layer(k)
        x = np.eye(7)[idx] if k == 0 else tr.states["h"][k - 1]
        h = tr.states["h"][k]
        h_prev = np.concatenate([state0[0][k], h[:-1]])
        pre_x, pre_h = x @ p["weight_ih"].T + p["bias_ih"], h_prev @ p["weight_hh"].T + p["bias_hh"]
        g = {name: a[k] for name, a in tr.gates.items()}
        if cell == "lstm":
            c = tr.states["c"][k]
            c_prev = np.concatenate([state0[1][k], c[:-1]])
            block = 1 if options.get("coupled") else 2  # the candidate g: i, g, o coupled; i, f, g, o else
            candidate = np.tanh((pre_x + pre_h)[:, block * H : (block + 1) * H])
            forget = 1 - g["i"] if options.get("coupled") else g["f"]
            np.testing.assert_allclose(c, forget * c_prev + g["i"] * candidate, atol=1e-12)
            np.testing.assert_allclose(h, g["o"] * np.tanh(c), atol=1e-12)
        elif cell == "gru":
            n = np.tanh(pre_x[:, 2 * H :] + g["r"] * pre_h[:, 2 * H :])
            np.testing.assert_allclose(h, (1 - g["z"]) * n + g["z"] * h_prev, atol=1e-12)
            np.testing.assert_allclose(g["r"], sigmoid((pre_x + pre_h)[:, :H]), atol=1e-12)


@pytest.mark.parametrize(("cell", "options"), CELL_OPTIONS)
def test_input_gradient_matches_finite_differences(cell, options):
    """d loss / d x_t for every one-hot input, against central differences of the reference model, whose inputs
    may be any vectors."""
    model = random_model(cell, V=7, H=5, **options)
    N, T, V = 2, 4, 7
    x = np.random.default_rng(5).integers(0, V, (N, T))
    y = np.random.default_rng(6).integers(0, V, (N, T))
    state0 = random_state(model, N)
    logits, _, cache = model.forward(x, state0)
    _, dlogits = cross_entropy(logits, y.T.ravel())
    dx = model.input_gradient(dlogits, cache)
    assert dx.shape == (T, N, V)

    def loss(inputs):
        out, _ = naive.run(model, inputs, state0)
        return cross_entropy(out, y.T.ravel(), grad=False)[0]

    onehot = np.eye(V)[x]  # (N, T, V)
    eps = 1e-6
    for n, t, v in [(0, 0, 0), (1, 3, 2), (0, 2, x[0, 2]), (1, 1, 6), (0, 3, 4)]:
        plus, minus = onehot.copy(), onehot.copy()
        plus[n, t, v] += eps
        minus[n, t, v] -= eps
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        assert dx[t, n, v] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_input_gradient_leaves_backward_as_it_was():
    model = random_model("lstm", V=7, H=5)
    x = np.random.default_rng(7).integers(0, 7, (3, 6))
    y = np.random.default_rng(8).integers(0, 7, (3, 6))
    logits, _, cache = model.forward(x, model.initial_state(3))
    _, dlogits = cross_entropy(logits, y.T.ravel())
    grads, dstate = model.backward(dlogits.copy(), cache)
    model.input_gradient(dlogits.copy(), cache)
    again, dstate_again = model.backward(dlogits, cache)
    assert set(grads) == set(model.params)
    for k in grads:
        np.testing.assert_array_equal(grads[k], again[k])
    for a, b in zip(dstate, dstate_again, strict=True):
        np.testing.assert_array_equal(a, b)
