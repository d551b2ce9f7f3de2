"""Optimisers against their published update rules, exact state round trips, and gradient clipping."""

import numpy as np
import pytest

from charrnn.core.optim import OPTIMIZERS, clip_gradients, global_norm, make_optimizer
from charrnn.errors import CharrnnError

NAMES = ["adam", "adamw", "rmsprop", "adagrad", "sgd"]


def make_params(rng, dtype=np.float64):
    """A weight matrix and a bias vector, like a layer's parameters."""
    return {"weight": rng.standard_normal((4, 3)).astype(dtype), "bias": rng.standard_normal(3).astype(dtype)}


def random_grads(rng, params):
    return {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}


def copy(arrays):
    return {k: v.copy() for k, v in arrays.items()}


# --- learning ---------------------------------------------------------------------------------------------


def least_squares():
    """Linear regression y = x W + c with a little noise: loss 0.5 mean ||x W + c - y||^2 and its gradient."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6))
    Y = X @ rng.standard_normal((6, 3)) + rng.standard_normal(3) + 0.01 * rng.standard_normal((64, 3))

    def loss_and_grads(p):
        r = X @ p["weight"] + p["bias"] - Y  # residuals (N, K)
        return 0.5 * np.sum(r * r) / len(X), {"weight": X.T @ r / len(X), "bias": r.sum(0) / len(X)}

    return loss_and_grads


@pytest.mark.parametrize("name, lr", [("adam", 0.05), ("adamw", 0.05), ("rmsprop", 0.01), ("adagrad", 0.5),
                                      ("sgd", 0.05)])
def test_optimizer_reduces_least_squares_loss(name, lr):
    loss_and_grads = least_squares()
    p = {"weight": np.zeros((6, 3)), "bias": np.zeros(3)}
    opt = make_optimizer(name, p, weight_decay=1e-4 if name == "adamw" else 0.0)
    initial, _ = loss_and_grads(p)
    for _ in range(300):
        _, g = loss_and_grads(p)
        opt.step(p, g, lr)
    final, _ = loss_and_grads(p)
    assert opt.t == 300
    assert final < 1e-3 < initial / 1000  # the noise floor is ~1.2e-4


def test_default_optimizer_is_adam():
    p = {"w": np.zeros(2)}
    assert type(make_optimizer("adam", p)).__name__ == "Adam"
    assert next(iter(OPTIMIZERS)) == "adam"
    assert sorted(OPTIMIZERS) == sorted(NAMES)


def test_make_optimizer_unknown_name():
    with pytest.raises(CharrnnError, match=r"unknown optimizer 'lbfgs'.*adam"):
        make_optimizer("lbfgs", {"w": np.zeros(2)})


# --- update rules against hand computations (float64) -----------------------------------------------------


def run(name, steps=4, lr=0.01, seed=1):
    """Run an optimiser for a few steps on random gradients; return the gradients used and the parameter history."""
    rng = np.random.default_rng(seed)
    p = make_params(rng)
    history = [copy(p)]
    opt = make_optimizer(name, p)
    grads = []
    for _ in range(steps):
        g = random_grads(rng, p)
        grads.append(copy(g))
        opt.step(p, g, lr)
        history.append(copy(p))
    return grads, history


def test_adam_first_step_matches_published_formula():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    grads, history = run("adam", steps=1, lr=lr)
    for k, g in grads[0].items():
        m = (1 - b1) * g  # m_1 = b1 m_0 + (1 - b1) g, m_0 = 0
        v = (1 - b2) * g * g  # v_1 = b2 v_0 + (1 - b2) g^2
        m_hat, v_hat = m / (1 - b1), v / (1 - b2)  # bias correction at t = 1
        expected = history[0][k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(history[1][k], expected, rtol=0, atol=1e-12)
        # The first Adam step moves every coordinate by about lr, whatever the gradient's scale.
        np.testing.assert_allclose(np.abs(history[0][k] - history[1][k]), lr, rtol=1e-5)


def assert_follows(name: str, lr: float, update, state0, rtol: float = 1e-13, atol: float = 1e-15) -> None:
    """Five steps of optimiser `name` equal the reference update(p, g, state, t) -> (p, state), run from
    state0 for every parameter, after every step."""
    grads, history = run(name, steps=5, lr=lr)
    for k in history[0]:
        p, state = history[0][k].copy(), state0
        for t, g in enumerate(grads, start=1):
            p, state = update(p, g[k], state, t)
            np.testing.assert_allclose(history[t][k], p, rtol=rtol, atol=atol)


def test_adam_later_steps_match_published_formula():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8

    def update(p, g, state, t):
        m, v = state
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        return p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps), (m, v)

    assert_follows("adam", lr, update, (0.0, 0.0), rtol=0, atol=1e-12)


def test_adagrad_matches_min_char_rnn():
    lr = 0.1

    def update(p, g, mem, t):
        mem = mem + g * g
        return p - lr * g / np.sqrt(mem + 1e-8), mem

    assert_follows("adagrad", lr, update, 0.0)


def test_rmsprop_matches_char_rnn():
    lr = 0.002

    def update(p, g, v, t):
        v = 0.95 * v + 0.05 * g**2
        return p - lr * g / (np.sqrt(v) + 1e-8), v

    assert_follows("rmsprop", lr, update, 0.0)


def test_sgd_momentum_matches_formula():
    lr = 0.1

    def update(p, g, v, t):
        v = 0.9 * v + g
        return p - lr * v, v

    assert_follows("sgd", lr, update, 0.0)


# --- weight decay -----------------------------------------------------------------------------------------


def test_adamw_decay_is_decoupled_and_skips_biases():
    lr, wd = 0.01, 0.1
    p = make_params(np.random.default_rng(2))
    p0 = copy(p)
    opt = make_optimizer("adamw", p, weight_decay=wd)
    opt.step(p, {k: np.zeros_like(v) for k, v in p.items()}, lr)
    # With zero gradient the Adam part is zero: the matrix shrinks by exactly lr*wd*p, the bias does not move.
    np.testing.assert_array_equal(p["weight"], p0["weight"] - (lr * wd) * p0["weight"])
    assert not np.array_equal(p["weight"], p0["weight"])
    np.testing.assert_array_equal(p["bias"], p0["bias"])
    # Decoupled: the moments never see the decay term.
    assert not np.any(opt.state["m.weight"]) and not np.any(opt.state["v.weight"])


def test_adamw_moments_see_only_the_gradient():
    lr, wd, b1 = 0.01, 0.1, 0.9
    rng = np.random.default_rng(3)
    p = make_params(rng)
    g = random_grads(rng, p)
    adamw, adam = make_optimizer("adamw", copy(p), weight_decay=wd), make_optimizer("adam", copy(p), weight_decay=wd)
    adamw.step(copy(p), copy(g), lr)
    adam.step(copy(p), copy(g), lr)
    np.testing.assert_allclose(adamw.state["m.weight"], (1 - b1) * g["weight"], rtol=1e-15)
    # Adam's weight decay is an L2 penalty through the gradient (matrices only).
    np.testing.assert_allclose(adam.state["m.weight"], (1 - b1) * (g["weight"] + wd * p["weight"]), rtol=1e-14)
    np.testing.assert_allclose(adam.state["m.bias"], (1 - b1) * g["bias"], rtol=1e-15)


def test_no_weight_decay_by_default():
    p = make_params(np.random.default_rng(4))
    p0 = copy(p)
    opt = make_optimizer("adamw", p)
    opt.step(p, {k: np.zeros_like(v) for k, v in p.items()}, 0.1)
    for k in p:
        np.testing.assert_array_equal(p[k], p0[k])


# --- state round trip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_is_exact(name):
    rng = np.random.default_rng(5)
    wd = 0.01 if name in ("adam", "adamw") else 0.0
    p = make_params(rng)
    opt = make_optimizer(name, p, weight_decay=wd)
    for _ in range(3):
        opt.step(p, random_grads(rng, p), 0.01)
    saved_params = copy(p)
    saved = copy(opt.state_dict())  # what a checkpoint writes
    assert saved["optim.t"].dtype == np.int64 and int(saved["optim.t"]) == 3
    assert set(saved) == {"optim.t"} | {f"optim.{s}.{k}" for s in type(opt).slots for k in p}
    later = [random_grads(rng, p) for _ in range(4)]

    for g in later:  # the uninterrupted run
        opt.step(p, copy(g), 0.01)

    resumed_params = copy(saved_params)
    fresh = make_optimizer(name, resumed_params, weight_decay=wd)
    fresh.load_state_dict(saved)
    assert fresh.t == 3
    for g in later:
        fresh.step(resumed_params, copy(g), 0.01)
    for k in p:
        assert resumed_params[k].tobytes() == p[k].tobytes()  # bitwise
    for k, v in opt.state_dict().items():
        assert fresh.state_dict()[k].tobytes() == v.tobytes()

    # Without the state the continuation differs, so the comparison above means something.
    cold_params = copy(saved_params)
    cold = make_optimizer(name, cold_params, weight_decay=wd)
    for g in later:
        cold.step(cold_params, copy(g), 0.01)
    assert not np.array_equal(cold_params["weight"], p["weight"])


def test_load_state_dict_copies_not_aliases():
    rng = np.random.default_rng(6)
    p = make_params(rng)
    opt = make_optimizer("adam", p)
    opt.step(p, random_grads(rng, p), 0.01)
    saved = copy(opt.state_dict())
    fresh = make_optimizer("adam", copy(p))
    fresh.load_state_dict(saved)
    before = copy(saved)
    fresh.step(copy(p), random_grads(rng, p), 0.01)
    for k in saved:
        np.testing.assert_array_equal(saved[k], before[k])


def test_load_state_dict_wrong_shape():
    p = {"weight": np.zeros((4, 3))}
    opt = make_optimizer("adam", p)
    bad = {"optim.m.weight": np.zeros((3, 4)), "optim.v.weight": np.zeros((4, 3)), "optim.t": np.array(1)}
    with pytest.raises(CharrnnError, match=r"optim\.m\.weight.*shape"):
        opt.load_state_dict(bad)


# --- dtypes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    rng = np.random.default_rng(7)
    p = make_params(rng, np.float32)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    opt = make_optimizer(name, p, weight_decay=0.01)
    opt64 = make_optimizer(name, p64, weight_decay=0.01)
    for _ in range(3):
        g = random_grads(rng, p)
        g64 = {k: v.astype(np.float64) for k, v in g.items()}  # before step: coupled decay adds into g in place
        opt.step(p, g, 0.01)
        opt64.step(p64, g64, 0.01)
    for k in p:
        assert p[k].dtype == np.float32
        np.testing.assert_allclose(p[k], p64[k], rtol=1e-5, atol=1e-6)  # same update, float32 arithmetic
    for k, v in opt.state.items():
        assert v.dtype == np.float32, k


# --- clipping ---------------------------------------------------------------------------------------------


def grads_with_norm(norm, dtype=np.float64):
    rng = np.random.default_rng(8)
    g = {"weight": rng.standard_normal((5, 4)), "bias": rng.standard_normal(4)}
    scale = norm / np.sqrt(sum(np.sum(v * v) for v in g.values()))
    return {k: (v * scale).astype(dtype) for k, v in g.items()}


def test_global_norm():
    g = {"a": np.array([[3.0, 0.0], [0.0, 0.0]]), "b": np.array([4.0]), "c": np.zeros(0)}
    assert global_norm(g) == 5.0
    g = grads_with_norm(1.0)
    expected = np.linalg.norm(np.concatenate([v.ravel() for v in g.values()]))
    assert global_norm(g) == pytest.approx(expected, rel=1e-14)


def test_clip_by_norm_scales_to_exactly_clip():
    g = grads_with_norm(10.0)
    g0 = copy(g)
    norm = clip_gradients(g, 2.5)
    assert norm == pytest.approx(10.0, rel=1e-14)  # the pre-clip norm
    assert global_norm(g) == pytest.approx(2.5, rel=1e-14)
    for k in g:  # same direction, one common factor
        np.testing.assert_allclose(g[k], g0[k] * (2.5 / norm), rtol=1e-14)


def test_clip_by_norm_float32():
    g = grads_with_norm(100.0, np.float32)
    norm = clip_gradients(g, 5.0)
    assert norm == pytest.approx(100.0, rel=1e-5)
    assert all(v.dtype == np.float32 for v in g.values())
    assert global_norm(g) == pytest.approx(5.0, rel=1e-6)


@pytest.mark.parametrize("norm", [0.5, 2.5])  # below, and exactly at, the threshold
def test_clip_by_norm_leaves_small_gradients(norm):
    g = grads_with_norm(norm)
    g0 = copy(g)
    returned = clip_gradients(g, global_norm(g) if norm == 2.5 else 2.5)
    assert returned == pytest.approx(norm, rel=1e-14)
    for k in g:
        assert g[k].tobytes() == g0[k].tobytes()


def test_clip_by_value():
    g = {"weight": np.array([[-7.0, -1.0], [0.5, 9.0]]), "bias": np.array([5.0, -5.0, 4.999])}
    g0 = copy(g)
    norm = clip_gradients(g, 5.0, mode="value")
    assert norm == pytest.approx(global_norm(g0), rel=1e-15)  # the pre-clip norm
    np.testing.assert_array_equal(g["weight"], [[-5.0, -1.0], [0.5, 5.0]])
    np.testing.assert_array_equal(g["bias"], [5.0, -5.0, 4.999])


@pytest.mark.parametrize("clip", [0.0, -1.0])
@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clip_disabled(clip, mode):
    g = grads_with_norm(1e6)
    g0 = copy(g)
    assert clip_gradients(g, clip, mode=mode) == pytest.approx(1e6, rel=1e-14)
    for k in g:
        assert g[k].tobytes() == g0[k].tobytes()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clip_non_finite_norm_returned_and_grads_untouched(bad, mode):
    g = grads_with_norm(100.0)
    g["weight"][1, 2] = bad
    g0 = copy(g)
    norm = clip_gradients(g, 1.0, mode=mode)
    assert np.isnan(norm) if np.isnan(bad) else norm == np.inf
    for k in g:
        assert g[k].tobytes() == g0[k].tobytes()


def test_clip_unknown_mode():
    g = grads_with_norm(10.0)
    g0 = copy(g)
    with pytest.raises(CharrnnError, match="unknown clip mode 'elementwise'"):
        clip_gradients(g, 1.0, mode="elementwise")
    for k in g:
        np.testing.assert_array_equal(g[k], g0[k])


def test_load_state_dict_from_another_optimizer():
    p = {"weight": np.zeros((4, 3))}
    sgd = make_optimizer("sgd", p)
    sgd.step(p, {"weight": np.ones((4, 3))}, 0.1)
    with pytest.raises(CharrnnError, match=r"missing optim\.m\.weight"):
        make_optimizer("adam", p).load_state_dict(sgd.state_dict())
