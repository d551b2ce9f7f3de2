"""Models for tests: random weights, so that every code path carries signal without training."""

import numpy as np

from charrnn.core.model import Model, ModelConfig


def random_model(cell="lstm", V=11, H=8, layers=2, dtype="float64", seed=0, scale=0.5, **options) -> Model:
    """PyTorch's initialisation plus normal(0, scale) noise on every parameter, biases included."""
    model = Model.create(ModelConfig(vocab_size=V, cell=cell, hidden=H, layers=layers, dtype=dtype, **options),
                         np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    for p in model.params.values():
        p += rng.normal(0, scale, p.shape).astype(p.dtype)
    return model
