"""Optimisers and gradient clipping over dict[str, ndarray] parameters.

Every optimiser keeps its state as named arrays (`optim.m.<param>`, ...) plus a step count, so a checkpoint
saves and restores it exactly.  Updates are in place and reuse scratch buffers.
"""

from __future__ import annotations

import numpy as np

from charrnn.errors import CharrnnError


class Optimizer:
    """Base: subclasses name their per-parameter state arrays and implement update()."""

    name = ""
    slots: tuple[str, ...] = ()  # per-parameter state arrays
    squares: tuple[str, ...] = ()  # slots that sum squared gradients: never negative, as a square root is taken
    decoupled = False  # weight decay applied to the parameters directly (AdamW) instead of via the gradient
    defaults: dict = {}  # hyper-parameters, unless given

    def __init__(self, params: dict[str, np.ndarray], weight_decay: float = 0.0, **hyper):
        self.weight_decay = weight_decay
        self.hyper = {**self.defaults, **hyper}
        self.t = 0  # number of updates done
        self.state = {f"{s}.{k}": np.zeros_like(p) for s in self.slots for k, p in params.items()}
        self._scratch = {k: np.empty_like(p) for k, p in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        """Apply one update in place.  Weight decay applies to weight matrices only, not biases."""
        self.t += 1
        for k, p in params.items():
            g = grads[k]
            if self.weight_decay and p.ndim > 1:
                if self.decoupled:
                    p *= p.dtype.type(1 - lr * self.weight_decay)  # as PyTorch's AdamW: decay, then the step
                else:
                    g += self.weight_decay * p  # L2 penalty through the gradient
            self.update(k, p, g, lr)

    def update(self, k: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"optim.{k}": v for k, v in self.state.items()}
        out["optim.t"] = np.array(self.t, dtype=np.int64)
        return out

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        missing = [f"optim.{k}" for k in [*self.state, "t"] if f"optim.{k}" not in arrays]
        if missing:
            raise CharrnnError(f"optimiser state is missing {', '.join(missing[:3])} (saved by another optimiser?)")
        for k, v in self.state.items():
            src = arrays[f"optim.{k}"]
            if src.shape != v.shape:
                raise CharrnnError(f"optimiser state optim.{k} has shape {src.shape}, expected {v.shape}")
            v[...] = src
        self.t = int(arrays["optim.t"])


class SGD(Optimizer):
    """SGD with (PyTorch-style) momentum: v = mu v + g;  p -= lr v."""

    name, slots = "sgd", ("v",)
    defaults = {"momentum": 0.9}

    def update(self, k, p, g, lr):
        v = self.state[f"v.{k}"]
        v *= self.hyper["momentum"]
        v += g
        np.multiply(v, lr, out=self._scratch[k])
        p -= self._scratch[k]


class Adagrad(Optimizer):
    """min-char-rnn's optimiser: mem += g^2;  p -= lr g / sqrt(mem + eps), eps = 1e-8 inside the root (PyTorch's
    Adagrad adds it outside)."""

    name, slots, squares = "adagrad", ("sum",), ("sum",)
    defaults = {"eps": 1e-8}

    def update(self, k, p, g, lr):
        mem, s = self.state[f"sum.{k}"], self._scratch[k]
        np.multiply(g, g, out=s)
        mem += s
        np.add(mem, self.hyper["eps"], out=s)
        np.sqrt(s, out=s)
        np.divide(g, s, out=s)
        s *= lr
        p -= s


class RMSprop(Optimizer):
    """char-rnn's optimiser: v = a v + (1 - a) g^2;  p -= lr g / (sqrt(v) + eps), with a = 0.95."""

    name, slots, squares = "rmsprop", ("v",), ("v",)
    defaults = {"alpha": 0.95, "eps": 1e-8}

    def update(self, k, p, g, lr):
        alpha, eps = self.hyper["alpha"], self.hyper["eps"]
        v, s = self.state[f"v.{k}"], self._scratch[k]
        np.multiply(g, g, out=s)
        v *= alpha
        s *= 1 - alpha
        v += s
        np.sqrt(v, out=s)
        s += eps
        np.divide(g, s, out=s)
        s *= lr
        p -= s


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; weight decay as an L2 penalty."""

    name, slots, squares = "adam", ("m", "v"), ("v",)
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8}

    def update(self, k, p, g, lr):
        b1, b2 = self.hyper["betas"]
        eps = self.hyper["eps"]
        m, v, s = self.state[f"m.{k}"], self.state[f"v.{k}"], self._scratch[k]
        m *= b1
        np.multiply(g, 1 - b1, out=s)
        m += s  # m = b1 m + (1 - b1) g
        v *= b2
        np.multiply(g, g, out=s)
        s *= 1 - b2
        v += s  # v = b2 v + (1 - b2) g^2
        step = lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)  # bias corrections folded into the step size
        np.sqrt(v, out=s)
        s += eps * np.sqrt(1 - b2**self.t)
        np.divide(m, s, out=s)
        s *= step
        p -= s


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): p *= 1 - lr wd, then the Adam step."""

    name, decoupled = "adamw", True


OPTIMIZERS = {cls.name: cls for cls in (Adam, AdamW, RMSprop, Adagrad, SGD)}


def make_optimizer(name: str, params: dict[str, np.ndarray], weight_decay: float = 0.0) -> Optimizer:
    if name not in OPTIMIZERS:
        raise CharrnnError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, weight_decay=weight_decay)


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every gradient element (inf or nan if any element is)."""
    return float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))


def clip_gradients(grads: dict[str, np.ndarray], clip: float, mode: str = "norm") -> float:
    """Clip in place and return the pre-clip global norm, for display and divergence checks.

    norm: if ||g|| > clip then g <- g * clip / ||g||.  value: each element into [-clip, clip] (char-rnn,
    min-char-rnn).  clip <= 0 disables clipping.
    """
    norm = global_norm(grads)
    if clip <= 0 or not np.isfinite(norm):
        return norm
    if mode == "norm":
        if norm > clip:
            for g in grads.values():
                g *= g.dtype.type(clip / norm)
    elif mode == "value":
        for g in grads.values():
            np.clip(g, -clip, clip, out=g)
    else:
        raise CharrnnError(f"unknown clip mode {mode!r}; choose norm or value")
    return norm
