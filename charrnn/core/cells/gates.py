"""Gate nonlinearities from one exp, in place:  sigmoid(x) = 1 / (1 + e^-x),  tanh(x) = 2 / (1 + e^-2x) - 1.

The factor in the exponent (SIGMOID = -1 or TANH = -2) is folded into a gate's weights and biases (the cells'
gate_scale), so pre-activations arrive as -x or -2x and all gates of a step are one np.exp, one add and one
divide.  Why not np.tanh: on an AVX2 machine (a 2-core Zen 3) NumPy's float32 tanh costs 4-5 ns an element and
its exp 2.5, while the add and the divide cost 0.2 each.  A lone tanh (the LSTM's tanh(c')) stays np.tanh: one
call there, where the exp form takes four, matters more at batch 1 than the element cost.
sigmoid comes out within a few ulp, tanh within a few ulp of 1 (tests/test_activations.py).  A pre-activation
beyond exp's range gives inf (or 0) and then exactly 0 or 1 (or -1), so callers run them under `quiet()`.
"""

from __future__ import annotations

import numpy as np

SIGMOID, TANH = -1.0, -2.0  # the exponent's factor for each kind of gate


def quiet() -> np.errstate:
    """exp overflowing to inf or underflowing to 0 is the right answer here, not a fault to report."""
    return np.errstate(over="ignore", under="ignore")


def squash(a: np.ndarray, numerator=1.0) -> np.ndarray:
    """a = numerator / (1 + exp(a)), in place: sigmoid(x) for a = -x and numerator 1, tanh(x) + 1 for a = -2x and
    numerator 2 (the caller subtracts the 1, on the tanh gates only).  numerator may be an array that
    broadcasts, one value per gate."""
    np.exp(a, out=a)
    a += 1
    return np.divide(numerator, a, out=a)


def gate_major(a: np.ndarray, gates: int) -> np.ndarray:
    """(..., G*H), the gates side by side as a GEMM writes or reads them, as a (G, ..., H) view: gate by gate,
    as the cells' element-wise steps take them.  No copy.  Some steps call it at every time step, (N, G*H) the
    case kept short."""
    if a.ndim == 2:
        return a.reshape(a.shape[0], gates, -1).transpose(1, 0, 2)
    *lead, GH = a.shape
    return a.reshape(*lead, gates, GH // gates).transpose(len(lead), *range(len(lead)), len(lead) + 1)


def activation_slope(acts: np.ndarray, tanh_gate: int, out: np.ndarray) -> np.ndarray:
    """Derivative of each gate's nonlinearity from its output y, for the whole chunk at once, in place (no
    chunk-sized temporaries): sigmoid y (1 - y) everywhere, then tanh 1 - y^2 over the one tanh gate.
    acts and out are gate-major, (G, ...)."""
    np.subtract(1, acts, out=out)
    out *= acts
    y, slope = acts[tanh_gate], out[tanh_gate]
    np.multiply(y, y, out=slope)
    np.subtract(1, slope, out=slope)
    return out

