"""charrnn's model as torch.nn modules: one single-layer nn.LSTM, nn.GRU or nn.RNN (tanh) per layer, then a
Linear decoder.  Shapes: T time, N batch, V vocabulary, H hidden, L layers; time-major, as charrnn.core.model.

PyTorch's cells have charrnn's names, shapes, gate order and equations (charrnn.store.export), so the parameters
move one-to-one: layer k's weight_ih_l0 is charrnn's weight_ih_l{k}.  A layer a module, not one nn.LSTM of L
layers, because the dropout between layers is the engine's own: masks drawn for the whole batch from a generator
whose state a checkpoint keeps (nn.LSTM's dropout draws from a stream of its own, cuDNN's on a GPU).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from charrnn.core.model import ModelConfig, param_shapes
from charrnn.errors import CharrnnError

MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Net(torch.nn.Module):
    """The layers and the decoder; forward gives the logits of a chunk and its final state."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.peephole or cfg.coupled:
            raise CharrnnError("the torch engine runs PyTorch's own LSTM, GRU and RNN, which have no peephole or "
                               "coupled gates; train this model with --engine numpy")
        V, H = cfg.vocab_size, cfg.hidden
        self.cfg = cfg
        self.layers = torch.nn.ModuleList(MODULES[cfg.cell](V if k == 0 else H, H) for k in range(cfg.layers))
        self.decoder = torch.nn.Linear(H, V)

    def named(self) -> dict[str, torch.nn.Parameter]:
        """The parameters under charrnn's names, in its order (charrnn.core.model.param_shapes)."""
        found = dict(self.decoder.named_parameters(prefix="decoder"))
        for k, layer in enumerate(self.layers):
            found.update({name.removesuffix("_l0") + f"_l{k}": p for name, p in layer.named_parameters()})
        return {name: found[name] for name in param_shapes(self.cfg)}

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...], masks: list[torch.Tensor] | None = None):
        """x (T, N) character indices; state one (L, N, H) tensor per state name (h, or h and c); masks L (T, N, H)
        tensors of 0 or 1/(1-p) for each layer's output, or None.  Returns logits (T*N, V) and the final state."""
        out = F.one_hot(x, self.cfg.vocab_size).to(self.decoder.weight.dtype)  # nn.LSTM's input is the one-hot x
        finals = []
        for k, layer in enumerate(self.layers):
            start = tuple(s[k : k + 1] for s in state)  # (1, N, H) each, as a one-layer module takes it
            out, final = layer(out, start if len(start) > 1 else start[0])
            finals.append(final if isinstance(final, tuple) else (final,))
            if masks is not None:
                out = out * masks[k]
        logits = self.decoder(out)
        return logits.reshape(-1, logits.shape[-1]), tuple(torch.cat(parts) for parts in zip(*finals, strict=True))
