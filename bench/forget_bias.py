"""Why charrnn's LSTM starts with zero biases: validation loss after a fixed number of steps with the forget-gate
bias started at 0 (charrnn) and at 1 (the common advice, Gers et al. 2000; Jozefowicz et al. 2015).

Everything else is identical: tiny-shakespeare (last 10% held out), the trainer's streams (B=64, T=64, state
carried), LSTM 2x256, charrnn's init otherwise, Adam 2e-3 constant, norm clip 5, seed 0.  When torch is
importable, PyTorch's nn.LSTM with its own init (uniform biases, no forget bias) trains on the same streams as a
third run.  Prints train and validation loss every --every steps and saves them with bench/record.py.

    python bench/forget_bias.py [CORPUS] [--steps 1000] [--every 250]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import record  # noqa: E402
import torch_peer  # noqa: E402

from charrnn.core.model import Model, ModelConfig  # noqa: E402
from charrnn.core.optim import clip_gradients, make_optimizer  # noqa: E402
from charrnn.runs.streams import Streams  # noqa: E402
from charrnn.runs.train import validate  # noqa: E402
from charrnn.store.corpus import read_corpus  # noqa: E402
from charrnn.store.export import from_torch  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def run(train, val, vocab_size: int, forget_bias: float, steps: int, every: int) -> list[dict]:
    B, T, H, L = 64, 64, 256, 2
    rng = np.random.default_rng(0)
    model = Model.create(ModelConfig(vocab_size=vocab_size, hidden=H, layers=L), rng)
    for k in range(L):
        model.params[f"bias_ih_l{k}"][H : 2 * H] = forget_bias  # gates i, f, g, o
    optim, streams = make_optimizer("adam", model.params), Streams(train, B, T)
    state, losses, curve, started = model.initial_state(B), [], [], time.monotonic()
    for step in range(steps):
        chunk = step % streams.chunks
        if chunk == 0:
            state = model.initial_state(B)
        x, y = streams.batch(chunk)
        loss, grads, state = model.loss_and_grads(x, y, state, rng)
        clip_gradients(grads, 5.0)
        optim.step(model.params, grads, 2e-3)
        losses.append(loss)
        if (step + 1) % every == 0:
            point = {"step": step + 1, "train": float(np.mean(losses[-every:])), "val": validate(model, val, B, T)}
            curve.append(point)
            print(f"forget bias {forget_bias:g}  step {step + 1:>5}  train {point['train']:.4f}  "
                  f"val {point['val']:.4f}  ({time.monotonic() - started:.0f} s)", flush=True)
    return curve


def run_torch(torch, train, val, vocab_size: int, steps: int, every: int) -> list[dict]:
    """The same run in PyTorch (bench/torch_peer's nn.LSTM over one-hot input and Linear head, its own init),
    validated by charrnn's validate on the exported weights, so both sides are scored identically."""
    B, T, H, L, V = 64, 64, 256, 2, vocab_size
    torch.manual_seed(0)
    rnn, head = torch_peer._model(torch, "LSTM", L, H, V)
    params = [*rnn.parameters(), *head.parameters()]
    optim, streams = torch.optim.Adam(params, lr=2e-3), Streams(train, B, T)
    state, losses, curve, started = None, [], [], time.monotonic()
    for step in range(steps):
        chunk = step % streams.chunks
        if chunk == 0:
            state = None
        x, y = (torch.from_numpy(a.astype(np.int64)) for a in streams.batch(chunk))
        out, state = rnn(torch.nn.functional.one_hot(x, V).float(), state)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), y.reshape(-1))
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optim.step()
        state = tuple(s.detach() for s in state)
        losses.append(loss.item())
        if (step + 1) % every == 0:
            weights = {**{f"rnn.{k}": v.detach().numpy() for k, v in rnn.state_dict().items()},
                       **{f"decoder.{k}": v.detach().numpy() for k, v in head.state_dict().items()}}
            point = {"step": step + 1, "train": float(np.mean(losses[-every:])),
                     "val": validate(from_torch(weights), val, B, T)}
            curve.append(point)
            print(f"PyTorch init   step {step + 1:>5}  train {point['train']:.4f}  val {point['val']:.4f}  "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    corpus = read_corpus(args.corpus)
    train, val = corpus.split(0.1)
    results = {f"{b:g}": run(train, val, len(corpus.vocab), b, args.steps, args.every) for b in (0.0, 1.0)}
    torch = torch_peer._torch()
    if torch is None:
        print("torch is not importable: no PyTorch run")
    else:
        torch.set_num_threads(torch_peer.numpy_threads())
        results["torch"] = run_torch(torch, train, val, len(corpus.vocab), args.steps, args.every)
    record.save("forget_bias", {"steps": args.steps, "curves": results})


if __name__ == "__main__":
    main()
