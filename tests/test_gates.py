"""The exp-form gate nonlinearities against NumPy's own, over the whole float range, in both dtypes."""

import warnings

import numpy as np
import pytest

from charrnn.core.cells.gates import SIGMOID, TANH, quiet, squash
from charrnn.core.model import Model, ModelConfig
from charrnn.core.stepper import Stepper

# Dense around 0, then out to where exp overflows (|x| > 88 in float32, > 709 in float64) and to inf.
GRID = np.concatenate([np.linspace(-12, 12, 20001), [-1e4, -800.0, -100.0, -45.0, 45.0, 100.0, 800.0, 1e4],
                       [-np.inf, np.inf, 0.0, 1e-30, -1e-30]])


def reference_sigmoid(x):
    """In extended precision (x86's 80-bit long double), so the reference's own error stays below float64's."""
    return 1 / (1 + np.exp(-np.asarray(x, np.longdouble)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_squash_is_sigmoid_and_tanh_without_warnings(dtype):
    x = GRID.astype(dtype)
    ulp = np.finfo(dtype).eps
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a warning nor an error escapes quiet()
        with np.errstate(all="raise"), quiet():
            sig = squash(SIGMOID * x)
            th = squash(TANH * x, 2.0) - 1
    assert sig.dtype == th.dtype == dtype
    tiny = np.finfo(dtype).tiny  # below it, 0: e^-x overflowed
    np.testing.assert_allclose(sig, reference_sigmoid(x), rtol=8 * ulp, atol=tiny)
    np.testing.assert_allclose(th, np.tanh(x.astype(np.longdouble)), rtol=0, atol=4 * ulp)
    assert sig[x == -np.inf][0] == 0 and sig[x == np.inf][0] == 1  # saturates exactly
    assert th[x == -np.inf][0] == -1 and th[x == np.inf][0] == 1


def test_squash_takes_one_numerator_per_gate():
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)
    out = squash(np.stack([SIGMOID * x[0], TANH * x[1]]), np.array([1.0, 2.0])[:, None, None])
    np.testing.assert_allclose(out[0], reference_sigmoid(x[0]), rtol=1e-15)
    np.testing.assert_allclose(out[1] - 1, np.tanh(x[1]), atol=1e-15)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_saturated_pre_activations_stay_finite_and_quiet(cell):
    """Weights so large that exp overflows in every step: the chunk forward and the sampler's step give finite
    logits and no warning (a user running with np.seterr(all="raise") must not see FloatingPointError)."""
    rng = np.random.default_rng(0)
    model = Model.create(ModelConfig(vocab_size=5, cell=cell, hidden=8, layers=2), rng)
    for name, p in model.params.items():
        if not name.startswith("decoder"):
            p *= 1e4
    x = rng.integers(0, 5, (3, 6))
    with np.errstate(all="raise"):
        logits, _, _ = model.forward(x, model.initial_state(3))
        stepped = Stepper(model, model.initial_state(3)).step(x[:, 0])
    assert np.isfinite(logits).all() and np.isfinite(stepped).all()
    np.testing.assert_allclose(stepped, logits[:3], rtol=1e-5, atol=1e-5)
