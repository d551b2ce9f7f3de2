"""Gate nonlinearities from one exp each, in place:  sigmoid(x) = 1 / (1 + e^-x),  tanh(x) = 2 / (1 + e^-2x) - 1.

The factor in the exponent (SIGMOID = -1 or TANH = -2) is folded into a gate's weights and biases (the cells'
gate_scale), so pre-activations arrive as -x or -2x and a whole step's gates are one np.exp, one add and one
divide.  Why not np.tanh: NumPy's float32 tanh costs twice its exp on an AVX2 machine (a 2-core Zen 3: 5.0 and
2.6 ns an element), and the add and divide cost 0.2 ns each.
Both forms are exact to a few ulp; a pre-activation beyond exp's range gives inf (or 0) and then exactly 0 or 1
(or -1), so callers run them under `quiet()`.
"""

from __future__ import annotations

import numpy as np

SIGMOID, TANH = -1.0, -2.0  # the exponent's factor for each kind of gate


def quiet() -> np.errstate:
    """exp overflowing to inf or underflowing to 0 is the right answer here, not a fault to report."""
    return np.errstate(over="ignore", under="ignore")


def squash(a: np.ndarray, numerator=1.0, out: np.ndarray | None = None) -> np.ndarray:
    """out = numerator / (1 + exp(a)): sigmoid(x) for a = -x and numerator 1, tanh(x) + 1 for a = -2x and
    numerator 2 (the caller subtracts the 1, on the tanh gates only).  numerator may be an array that
    broadcasts, one value per gate.  out defaults to a itself."""
    out = a if out is None else out
    np.exp(a, out=out)
    out += 1
    return np.divide(numerator, out, out=out)


def tanh(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = tanh(x) for an unscaled x (out may be x)."""
    np.multiply(x, TANH, out=out)
    squash(out, 2.0)
    out -= 1
    return out
