"""Moving weights to and from PyTorch: a plain `.npz` of exactly the tensors of a PyTorch state_dict.

The convention is the state_dict of a module with two children, `rnn` (torch.nn.LSTM, GRU or RNN with tanh,
input size V, batch_first either way) and `decoder` (torch.nn.Linear(H, V)):
    rnn.weight_ih_l0 (G*H, V), rnn.weight_hh_l0 (G*H, H), rnn.bias_ih_l0 (G*H,), rnn.bias_hh_l0 (G*H,), ...,
    decoder.weight (V, H), decoder.bias (V,)
with G = 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n) or 1 (RNN).  charrnn's parameters already use PyTorch's names,
shapes, gate order and equations, so the arrays move unchanged.  Peephole and coupled LSTMs have no PyTorch
cell and are refused.  No metadata, no pickle: the vocabulary stays in the checkpoint (its `vocab` array).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from charrnn.core.model import DTYPES, Model, ModelConfig, param_shapes
from charrnn.errors import CharrnnError
from charrnn.store.checkpoint import atomic_savez, member_names
from charrnn.store.files import check_output, short

TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
CELL_BY_GATES = {4: "lstm", 3: "gru", 1: "rnn"}


def torch_name(name: str) -> str:
    """charrnn parameter name -> state_dict key: weight_ih_l0 -> rnn.weight_ih_l0; decoder.* unchanged."""
    return name if name.startswith("decoder.") else f"rnn.{name}"


def to_torch(model: Model) -> dict[str, np.ndarray]:
    """The state_dict arrays for `rnn` + `decoder`, in PyTorch's order (layer by layer, then the decoder)."""
    cfg = model.cfg
    if cfg.peephole or cfg.coupled:
        kind = " and ".join(k for k, on in (("peephole", cfg.peephole), ("coupled", cfg.coupled)) if on)
        raise CharrnnError(f"this LSTM uses {kind} gates, which PyTorch's nn.LSTM does not have; only standard "
                           f"LSTM, GRU and RNN checkpoints can be exported")
    return {torch_name(name): model.params[name] for name in param_shapes(cfg)}


def torch_module_text(cfg: ModelConfig) -> str:
    """The PyTorch modules the exported tensors fit, as code."""
    return (f"rnn = torch.nn.{TORCH_CLASSES[cfg.cell]}({cfg.vocab_size}, {cfg.hidden}, num_layers={cfg.layers}); "
            f"decoder = torch.nn.Linear({cfg.hidden}, {cfg.vocab_size})")


def from_torch(tensors: dict[str, np.ndarray], dtype: str | None = None) -> Model:
    """A charrnn Model from state_dict arrays in the convention above (e.g. {k: v.numpy() for k, v in
    module.state_dict().items()}).  The cell type, sizes and layer count follow from the shapes; dtype from
    the arrays unless given.  Bidirectional, projected or bias-free RNNs are refused (unexpected/missing keys)."""
    tensors = {k: np.asarray(v) for k, v in tensors.items()}
    w_hh, w_ih = tensors.get("rnn.weight_hh_l0"), tensors.get("rnn.weight_ih_l0")
    if w_hh is None or w_ih is None or w_hh.ndim != 2 or w_ih.ndim != 2:
        raise CharrnnError("not a charrnn/PyTorch state dict: rnn.weight_ih_l0 and rnn.weight_hh_l0 are needed")
    hidden, vocab_size = w_hh.shape[1], w_ih.shape[1]
    if w_hh.shape[0] % hidden or w_hh.shape[0] // hidden not in CELL_BY_GATES:
        raise CharrnnError(f"rnn.weight_hh_l0 has shape {w_hh.shape}: not an LSTM, GRU or RNN")
    layers = len({m.group(1) for k in tensors if (m := re.fullmatch(r"rnn\.weight_hh_l(\d+)", k))})
    dtype = dtype or str(w_hh.dtype)
    if dtype not in DTYPES:
        raise CharrnnError(f"the weights are {dtype}; charrnn models are {' or '.join(DTYPES)}")
    cfg = ModelConfig(vocab_size=vocab_size, cell=CELL_BY_GATES[w_hh.shape[0] // hidden], hidden=hidden,
                      layers=layers, dtype=dtype)
    shapes = param_shapes(cfg)
    expected = {torch_name(n): n for n in shapes}
    extra = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if extra or missing:
        raise CharrnnError(f"the state dict does not fit a {cfg.layers}-layer {cfg.cell.upper()}: "
                           + "; ".join(p for p in (f"unexpected {', '.join(extra[:5])}" if extra else "",
                                                   f"missing {', '.join(missing[:5])}" if missing else "") if p))
    params = {}
    for key, name in expected.items():
        if tensors[key].shape != shapes[name]:
            raise CharrnnError(f"{key} has shape {tensors[key].shape}, expected {shapes[name]}")
        params[name] = np.array(tensors[key], dtype=dtype, order="C")  # a copy: the model owns its weights
    return Model(cfg, params)


def is_export(path: Path) -> bool:
    """Whether path holds what export writes: an .npz of rnn.* and decoder.* arrays."""
    names = member_names(path)
    return bool(names) and all(name.startswith(("rnn.", "decoder.")) for name in names)


def export(model: Model, out, force: bool = False) -> dict[str, np.ndarray]:
    """Write the model's PyTorch state_dict arrays to out (.npz); returns them.  An existing out is replaced only
    if export wrote it, or with force; never if it is a charrnn checkpoint (the one exported from, say), and
    never if it is not a regular file (store.files.check_output)."""
    out = Path(out)
    arrays = to_torch(model)
    if {"meta", "vocab"} <= (member_names(out) or set()):
        raise CharrnnError(f"{short(out)} is a charrnn checkpoint, which export never replaces (--force or not); "
                           f"name another file")
    check_output(out, "weights that export wrote", is_export, force)
    atomic_savez(out, arrays)
    return arrays
