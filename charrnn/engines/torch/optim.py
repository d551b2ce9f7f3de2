"""charrnn.core.optim's optimisers and clipping on tensors: the same formulas step for step, not torch.optim's, which
differ (its Adagrad adds eps outside the root, clip_grad_norm_ adds 1e-6 to the norm, weight decay reaches the
biases).  The state is charrnn's own slots under the same names (optim.m.<param>, ..., optim.t), so it moves
between the engines exactly, both ways.
"""

from __future__ import annotations

import math

import torch

from charrnn.core.optim import Optimizer
from charrnn.errors import CharrnnError


class TensorOptimizer:
    """A NumPy optimiser's state on a device, updated there.  The NumPy optimiser keeps the name, hyper-parameters
    and weight decay, and receives the state back for a checkpoint (store)."""

    def __init__(self, source: Optimizer, device: torch.device):
        self.source, self.t = source, source.t
        self.state = {k: torch.from_numpy(v).to(device, copy=True) for k, v in source.state.items()}
        self.update = getattr(self, "adam" if source.name == "adamw" else source.name)  # AdamW: Adam, decoupled

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], lr: float) -> None:
        """One update in place from each parameter's .grad.  Weight decay applies to weight matrices only."""
        self.t += 1
        decay = self.source.weight_decay
        for k, p in params.items():
            g = p.grad
            if decay and p.ndim > 1:
                if self.source.decoupled:
                    p.mul_(1 - lr * decay)  # AdamW: decay, then the step
                else:
                    g.add_(p, alpha=decay)  # L2 penalty through the gradient
            self.update(k, p, g, lr)

    def sgd(self, k, p, g, lr):
        v = self.state[f"v.{k}"]
        v.mul_(self.source.hyper["momentum"]).add_(g)  # v = mu v + g
        p.sub_(v * lr)

    def adagrad(self, k, p, g, lr):
        total = self.state[f"sum.{k}"]
        total.add_(g * g)
        p.sub_(g / (total + self.source.hyper["eps"]).sqrt_() * lr)

    def rmsprop(self, k, p, g, lr):
        alpha, eps = self.source.hyper["alpha"], self.source.hyper["eps"]
        v = self.state[f"v.{k}"]
        v.mul_(alpha).add_(g * g * (1 - alpha))  # v = a v + (1 - a) g^2
        p.sub_(g / (v.sqrt() + eps) * lr)

    def adam(self, k, p, g, lr):
        (b1, b2), eps = self.source.hyper["betas"], self.source.hyper["eps"]
        m, v = self.state[f"m.{k}"], self.state[f"v.{k}"]
        m.mul_(b1).add_(g * (1 - b1))
        v.mul_(b2).add_(g * g * (1 - b2))
        correction = math.sqrt(1 - b2**self.t)
        step = lr * correction / (1 - b1**self.t)  # bias corrections folded into the step size, as charrnn's
        p.sub_(m / (v.sqrt() + eps * correction) * step)

    def store(self) -> dict:
        """The state back in the NumPy optimiser; returns its checkpoint arrays (optim.<slot>.<param>, optim.t)."""
        for k, v in self.state.items():
            self.source.state[k][...] = v.cpu().numpy()
        self.source.t = self.t
        return self.source.state_dict()


@torch.no_grad()
def clip_gradients(grads: list[torch.Tensor], clip: float, mode: str = "norm") -> float:
    """As charrnn.core.optim.clip_gradients, in place: returns the pre-clip global norm; clip <= 0 is off, and a
    non-finite norm leaves the gradients as they are (the loop stops the run)."""
    norm = float(torch.nn.utils.get_total_norm(grads))
    if clip <= 0 or not math.isfinite(norm):
        return norm
    if mode == "norm":
        if norm > clip:
            for g in grads:
                g.mul_(clip / norm)
    elif mode == "value":
        for g in grads:
            g.clamp_(-clip, clip)
    else:
        raise CharrnnError(f"unknown clip mode {mode!r}; choose norm or value")
    return norm
