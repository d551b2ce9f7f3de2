"""A stack of recurrent layers, inverted dropout, a linear decoder and the softmax cross-entropy loss.

Shapes: N batch, T time, V vocabulary, H hidden, G gates, L layers.  Callers pass (N, T) index arrays like
char-rnn; inside, states are time-major (T, N, H) and gate pre-activations gate-major (G, T, N, H), so each
step's slice of a state or of a gate is contiguous.  Parameters use PyTorch's names,
shapes and gate order (`weight_ih_l0` (G*H, V), ..., `decoder.weight` (V, H)), so weights move one-to-one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from charrnn.core.cells import CELLS, STATE_NAMES
from charrnn.core.cells.gates import gate_major
from charrnn.core.logprob import surprisal
from charrnn.errors import CharrnnError
from charrnn.fast.workspace import Workspace, scaled_transpose

DTYPES = ("float32", "float64")
LN2 = math.log(2)  # nats in a bit: bits/char = nats/char / LN2
State = tuple[np.ndarray, ...]  # one (L, N, H) array per state name of the cell: (h,) or (h, c)
Reused = np.ndarray  # an array in a workspace that the model's next call of the same kind overwrites


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shape and arithmetic."""

    vocab_size: int
    cell: str = "lstm"  # lstm | gru | rnn
    hidden: int = 256  # H, units per layer
    layers: int = 2  # L, stacked layers
    dropout: float = 0.0  # inverted dropout between layers and before the decoder (training only)
    peephole: bool = False  # LSTM peephole connections (Gers & Schmidhuber, 2000)
    coupled: bool = False  # LSTM coupled input-forget gates, f = 1 - i
    dtype: str = "float32"

    def __post_init__(self):
        if self.cell not in CELLS:
            raise CharrnnError(f"unknown cell type {self.cell!r}; choose from {', '.join(CELLS)}")
        if self.dtype not in DTYPES:
            raise CharrnnError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        if self.vocab_size < 1 or self.hidden < 1 or self.layers < 1:
            raise CharrnnError("vocab_size, hidden and layers must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise CharrnnError(f"dropout must be in [0, 1), got {self.dropout}")
        if (self.peephole or self.coupled) and self.cell != "lstm":
            raise CharrnnError("peephole and coupled gates are LSTM options")

    @property
    def gates(self) -> int:
        return CELLS[self.cell].gate_count(self.coupled)

    @property
    def safe_magnitude(self) -> float:
        """The largest weight or carried state (in absolute value) for which no forward pass can overflow the
        dtype: a pre-activation sums at most H + V + 2 products of a weight with an input in [-1, 1], and a
        peephole multiplies two such numbers, so sqrt(max) / (H + V + 2) keeps every sum below sqrt(max).
        Trained weights stay below 100 or so; anything past this bound came from damage, not training."""
        return float(np.sqrt(np.finfo(self.dtype).max)) / (self.hidden + self.vocab_size + 2)

    def to_dict(self) -> dict:
        return asdict(self)


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter, in a fixed order (PyTorch's names)."""
    G, H = cfg.gates, cfg.hidden
    shapes = {}
    for k in range(cfg.layers):
        shapes[f"weight_ih_l{k}"] = (G * H, cfg.vocab_size if k == 0 else H)
        shapes[f"weight_hh_l{k}"] = (G * H, H)
        shapes[f"bias_ih_l{k}"] = (G * H,)
        shapes[f"bias_hh_l{k}"] = (G * H,)
        if cfg.peephole:
            shapes[f"peephole_l{k}"] = (G - 1, H)
    shapes["decoder.weight"] = (cfg.vocab_size, H)
    shapes["decoder.bias"] = (cfg.vocab_size,)
    return shapes


def init_params(cfg: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """PyTorch's uniform(-1/sqrt(H), 1/sqrt(H)) weights and zero biases.  No forget-gate bias of 1 (Gers et al.,
    2000): with Adam it slowed learning badly here (LSTM 2x256 on tiny-shakespeare, validation 1.91 vs 1.65
    nats/char after 1000 steps)."""
    bound = 1.0 / np.sqrt(cfg.hidden)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if "bias" in name or name.startswith("peephole"):
            params[name] = np.zeros(shape, dtype=cfg.dtype)
        else:
            params[name] = rng.uniform(-bound, bound, size=shape).astype(cfg.dtype)
    return params


def cross_entropy(logits: np.ndarray, targets: np.ndarray, grad: bool = True):
    """Mean softmax cross-entropy in nats, from max-subtracted log-softmax.  logits (M, V), targets (M,).
    Returns (loss, dlogits); dlogits overwrites logits (None when grad is False)."""
    M = logits.shape[0]
    rows = np.arange(M)
    logits -= logits.max(axis=1, keepdims=True)
    target_logit = logits[rows, targets]
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    loss = float(np.sum(np.log(total[:, 0]) - target_logit)) / M
    if not grad:
        return loss, None
    logits /= total  # softmax
    logits[rows, targets] -= 1
    logits /= M
    return loss, logits


class Model:
    """Parameters plus the chunk forward/backward used in training, evaluation and sampling."""

    def __init__(self, cfg: ModelConfig, params: dict[str, np.ndarray]):
        self.cfg = cfg
        self.params = params
        self.cell = CELLS[cfg.cell]
        self.dtype = np.dtype(cfg.dtype)
        self._ws = [Workspace() for _ in range(cfg.layers)]
        self._head = Workspace()

    @classmethod
    def create(cls, cfg: ModelConfig, rng: np.random.Generator) -> Model:
        return cls(cfg, init_params(cfg, rng))

    def num_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def layer(self, k: int) -> dict[str, np.ndarray]:
        """Layer k's parameters under their unsuffixed names (weight_ih, ..., peephole)."""
        suffix = f"_l{k}"
        return {n[: -len(suffix)]: p for n, p in self.params.items() if n.endswith(suffix)}

    def input_weights(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Layer k's input projection as the cells take it, gate-scaled (see the cells' gate_scale).
        Layer 0: the table (V, G*H) = (W_ih^T + b) * scale, whose rows a character index selects (the bias
        folds in since each one-hot input picks exactly one row), and None.  Other layers: W_ih^T * scale
        (D, G*H) and the bias * scale.  Gates side by side, as the sampler's row-per-stream GEMVs take them;
        see gate_major for the chunk layout."""
        p = self.layer(k)
        scale = self.cell.gate_scale(self.cfg.hidden, self.dtype, self.cfg.coupled)
        bias = self.cell.input_bias(p)
        if k == 0:
            return (p["weight_ih"].T + bias) * scale, None
        return scaled_transpose(p["weight_ih"], scale), bias * scale

    def initial_state(self, batch: int) -> State:
        """Zero state: one (L, N, H) array per state name of the cell (h, or h and c)."""
        shape = (self.cfg.layers, batch, self.cfg.hidden)
        return tuple(np.zeros(shape, self.dtype) for _ in STATE_NAMES[self.cfg.cell])

    def dropout_masks(self, rng: np.random.Generator, T: int, N: int) -> list[np.ndarray] | None:
        """Inverted-dropout masks for each layer's output: 0 or 1/(1-p), so evaluation needs no rescaling."""
        p = self.cfg.dropout
        if p == 0:
            return None
        shape = (T, N, self.cfg.hidden)
        return [(rng.random(shape, dtype=self.dtype) >= p).astype(self.dtype) / self.dtype.type(1 - p)
                for _ in range(self.cfg.layers)]

    def forward(self, x, state, masks=None) -> tuple[Reused, State, Reused]:
        """x (N, T) indices, state a tuple of (L, N, H) arrays, masks a list of L (T, N, H) arrays or None.
        Returns logits (T*N, V) time-major, the final state and a cache for backward.  The logits and the cache
        live in the model's workspaces (a chunk allocates nothing): the next forward overwrites them, so a caller
        that keeps logits past it copies them.  The final state is the caller's own."""
        cfg, cell = self.cfg, self.cell
        xt = np.asarray(x).T  # (T, N)
        T, N = xt.shape
        G, H = cfg.gates, cfg.hidden
        caches, final = [], [np.empty_like(s) for s in state]
        inp = None
        for k in range(cfg.layers):
            p, ws = self.layer(k), self._ws[k]
            W_in, bias = self.input_weights(k)
            xw = ws.get("xw", (G, T, N, H), self.dtype)
            if k == 0:  # one-hot input: a row gather, never a one-hot matrix (mode="clip" writes straight into
                # xw, where the default mode buffers the whole output; the indices are in range by construction)
                np.take(np.ascontiguousarray(gate_major(W_in, G)), xt, axis=1, out=xw, mode="clip")
            else:  # one GEMM per gate over the whole chunk
                np.matmul(inp.reshape(T * N, H), gate_major(W_in, G), out=xw.reshape(G, T * N, H))
                xw += gate_major(bias[None], G)[:, :, None]
            hs, stateT, cell_cache = cell.forward(
                xw, tuple(s[k] for s in state), p, ws, cfg.peephole, cfg.coupled
            )
            for f, s in zip(final, stateT, strict=True):
                f[k] = s
            out = hs[1:]
            if masks is not None:
                out = np.multiply(out, masks[k], out=ws.get("dropped", out.shape, self.dtype))
            caches.append((xt if k == 0 else inp, cell_cache, masks[k] if masks is not None else None))
            inp = out
        h_top = inp.reshape(T * N, H)
        logits = self._head.get("logits", (T * N, cfg.vocab_size), self.dtype)
        np.matmul(h_top, self.params["decoder.weight"].T, out=logits)
        logits += self.params["decoder.bias"]
        return logits, tuple(final), (caches, h_top, T, N)

    def backward(self, dlogits, cache, dstate=None):
        """dlogits (T*N, V), dstate the gradient of the final state (or None, as in truncated BPTT).
        Returns the parameter gradients (keyed like params) and the gradient of the initial state."""
        grads, dstate0, _ = self._backward(dlogits, cache, dstate)
        return grads, dstate0

    def input_gradient(self, dlogits, cache):
        """The gradient of the loss with respect to every one-hot input x_t, (T, N, V): how far back the model
        looks (`charrnn viz`).  x_t enters only layer 0's pre-activations, W_ih x_t, so it is their gradient
        times W_ih; the parameter gradients the pass makes on the way are dropped."""
        _, _, d_rows = self._backward(dlogits, cache, None)
        T, N = cache[2], cache[3]
        return (d_rows @ self.params["weight_ih_l0"]).reshape(T, N, self.cfg.vocab_size)

    def _backward(self, dlogits, cache, dstate):
        """backward, plus the gradient of layer 0's input-side pre-activations (T*N, G*H), gates side by side."""
        cfg, cell = self.cfg, self.cell
        caches, h_top, T, N = cache
        G, H = cfg.gates, cfg.hidden
        grads = {
            "decoder.weight": dlogits.T @ h_top,
            "decoder.bias": dlogits.sum(axis=0),
        }
        # dh (T+1, N, H): the gradient of a layer's hs, its outputs' in dh[1:] (dh[0] is the cell's to fill)
        dh = self._head.get("dh", (T + 1, N, H), self.dtype)
        np.matmul(dlogits, self.params["decoder.weight"], out=dh[1:].reshape(T * N, H))
        dstate0 = [np.empty((cfg.layers, N, H), self.dtype) for _ in STATE_NAMES[cfg.cell]]
        for k in range(cfg.layers - 1, -1, -1):
            inp, cell_cache, mask = caches[k]
            p, ws = self.layer(k), self._ws[k]
            if mask is not None:
                dh[1:] *= mask  # dropout, on the outputs' gradient
            dstateT = None if dstate is None else tuple(s[k] for s in dstate)
            d_rows, ds0, g = cell.backward(dh, dstateT, cell_cache, ws)
            for d, s in zip(dstate0, ds0, strict=True):
                d[k] = s
            rows = d_rows.reshape(T * N, G * H)  # the input-side pre-activations' gradient, gates side by side
            if k == 0:
                by_char = scatter_rows(rows, inp.ravel(), cfg.vocab_size, ws.get("sorted_rows", rows.shape, self.dtype))
                g["weight_ih"] = np.ascontiguousarray(by_char.T)
            else:  # whole-chunk GEMMs: the weight gradient and the gradient of the layer's input
                g["weight_ih"] = rows.T @ inp.reshape(T * N, H)
                dh = ws.get("dinput", (T + 1, N, H), self.dtype)  # the layer below's outputs' in dh[1:]
                np.matmul(rows, p["weight_ih"], out=dh[1:].reshape(T * N, H))
            for name, grad in g.items():
                grads[f"{name}_l{k}"] = grad
        return grads, tuple(dstate0), rows  # the loop ends at layer 0: its rows

    def loss_and_grads(self, x, y, state, rng=None, masks=None):
        """One training chunk: forward, loss, backward.  x, y (N, T).  Dropout masks come from rng unless given.
        Returns (loss in nats/char, grads, final state)."""
        if masks is None and rng is not None:
            masks = self.dropout_masks(rng, x.shape[1], x.shape[0])
        logits, final, cache = self.forward(x, state, masks)
        loss, dlogits = cross_entropy(logits, np.asarray(y).T.ravel())
        grads, _ = self.backward(dlogits, cache)
        return loss, grads, final

    def evaluate(self, x, y, state):
        """Forward only, no dropout.  Returns (summed loss in nats, number of characters, final state)."""
        logits, final, _ = self.forward(x, state)
        loss, _ = cross_entropy(logits, np.asarray(y).T.ravel(), grad=False)
        return loss * logits.shape[0], logits.shape[0], final

    def surprisal(self, x, y, state) -> tuple[np.ndarray, State]:
        """Forward only, no dropout: each target's surprisal -log p in nats, (N, T) in the model's dtype (a
        fresh array), and the final state; for scoring many records side by side."""
        N, T = np.shape(x)
        logits, final, _ = self.forward(x, state)
        return surprisal(logits, np.asarray(y).T.ravel()).reshape(T, N).T.copy(), final


def scatter_rows(rows: np.ndarray, index: np.ndarray, size: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """out[..., v, :] = sum of rows[..., m, :] where index[m] == v: the weight gradient of a one-hot input, never
    with a one-hot matrix.  Sorts the rows by index, then sums each contiguous run (one np.sum per distinct
    index: ~15x faster than np.add.reduceat or np.add.at on (T*N, G*H) rows).  rows (..., M, K); scratch, if
    given, an array like rows that receives the sorted rows."""
    order = np.argsort(index, kind="stable")
    counts = np.bincount(index, minlength=size)
    ordered = np.take(rows, order, axis=-2, out=scratch, mode="clip")  # a permutation: never out of range
    out = np.zeros((*rows.shape[:-2], size, rows.shape[-1]), rows.dtype)
    start = 0
    for v in np.flatnonzero(counts):
        stop = start + counts[v]
        np.sum(ordered[..., start:stop, :], axis=-2, out=out[..., v, :])
        start = stop
    return out
