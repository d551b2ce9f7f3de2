"""The PyTorch CPU peer: how fast a plain PyTorch char-RNN trains and samples on this machine.

NumPy figures are only meaningful next to a peer made fair and fast: same shapes (B=64, T=64, one-hot input,
Linear head, cross-entropy, Adam 2e-3, clip 5, carried state), same thread count as NumPy's BLAS, PyTorch's
fastest path per case (oneDNN on/off, and for sampling nn.LSTM vs per-layer cells and 1 vs N threads, are
probed, not assumed) and glibc's allocator tuned as PERF-NOTES describes (--malloc default to compare).
torch is imported lazily: without it every function returns None.
Run: python bench/torch_peer.py [--quick] [--steps N] [--malloc default]; saves its figures with bench/record.py
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import time

import record

TRAIN_CONFIGS = [("LSTM", 1, 128), ("LSTM", 1, 256), ("LSTM", 1, 512), ("LSTM", 2, 256), ("LSTM", 2, 512),
                 ("GRU", 1, 256), ("RNN", 1, 256)]  # (cell, layers, hidden)
SAMPLE_CONFIGS = [("LSTM", 2, 256), ("LSTM", 1, 512)]
MALLOC_BYTES = 1 << 30  # mmap/trim threshold for tune_malloc: keep multi-MB temporaries in the heap
BUSY = 0.05  # share of the CPUs used by other processes above which a row is flagged


def _torch():
    """torch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _meter():
    """roofline.contention_meter (share of the CPUs other processes used meanwhile), if importable."""
    try:
        from roofline import contention_meter
    except ImportError:
        return lambda: None
    return contention_meter()


def numpy_threads() -> int:
    """NumPy's BLAS thread count (record.blas_info), else os.cpu_count(), so both peers get as many threads."""
    return record.blas_info()["threads"] or os.cpu_count() or 1


def tune_malloc() -> bool:
    """Stop glibc handing multi-MB temporaries back to the OS on every free (page-fault storms; PERF-NOTES).

    Process-wide and irreversible: it also speeds any NumPy code in this process that allocates per step."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, MALLOC_BYTES) and libc.mallopt(m_trim_threshold, MALLOC_BYTES))


@contextlib.contextmanager
def _onednn(torch, enabled: bool):
    """oneDNN (mkldnn) on or off for the block; set directly, as flags() warns about TF32 on CPU."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _model(torch, cell: str, layers: int, hidden: int, vocab: int):
    """nn.LSTM / nn.GRU / nn.RNN(tanh) over one-hot input, and a Linear head."""
    rnn = getattr(torch.nn, cell)(vocab, hidden, layers, batch_first=True)
    return rnn, torch.nn.Linear(hidden, vocab)


def _zero_state(torch, cell: str, layers: int, batch: int, hidden: int):
    h = torch.zeros(layers, batch, hidden)
    return (h, h.clone()) if cell == "LSTM" else h


def train_speed(cell: str, layers: int, hidden: int, vocab: int = 65, batch: int = 64, seq_len: int = 64,
                steps: int = 20, warmup: int = 5, threads: int | None = None, seed: int = 0,
                onednn: bool | None = None) -> dict | None:
    """Training chars/s (B*T / median step time) of one TBPTT step; None without torch.

    onednn=None warms up with oneDNN on and off, then times the faster (its LSTM kernel is fused; GRU and
    RNN are a per-step loop either way)."""
    torch = _torch()
    if torch is None:
        return None
    torch.set_num_threads(threads or numpy_threads())
    torch.manual_seed(seed)
    F = torch.nn.functional
    rnn, head = _model(torch, cell, layers, hidden, vocab)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    data = torch.randint(vocab, (batch, seq_len + 1))  # one synthetic chunk, generated once
    x, y = data[:, :-1], data[:, 1:]
    state = _zero_state(torch, cell, layers, batch, hidden)

    def step() -> float:
        nonlocal state
        t0 = time.perf_counter()
        out, state = rnn(F.one_hot(x, vocab).float(), state)
        loss = F.cross_entropy(head(out).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        state = tuple(s.detach() for s in state) if cell == "LSTM" else state.detach()  # TBPTT carry
        return time.perf_counter() - t0

    probe = {}
    for enabled in ([True, False] if onednn is None else [onednn]):
        with _onednn(torch, enabled):
            times = [step() for _ in range(warmup)]
        probe[enabled] = batch * seq_len / min(times[len(times) // 2:])  # best of the warmed-up half
    chosen = max(probe, key=probe.get)
    others = _meter()
    with _onednn(torch, chosen):
        times = [step() for _ in range(steps)]
    return {"cell": cell, "layers": layers, "hidden": hidden, "vocab": vocab, "batch": batch,
            "seq_len": seq_len, "steps": steps, "threads": torch.get_num_threads(), "onednn": chosen,
            "probe_chars_per_s": {("on" if k else "off"): v for k, v in probe.items()},
            "chars_per_s": batch * seq_len / statistics.median(times),
            "step_ms": 1e3 * statistics.median(times), "others_cpu": others()}


def _cells(torch, cell: str, rnn):
    """nn.LSTMCell / GRUCell / RNNCell per layer with rnn's weights: fewer checks per call at batch 1."""
    kind = {"LSTM": torch.nn.LSTMCell, "GRU": torch.nn.GRUCell, "RNN": torch.nn.RNNCell}[cell]
    cells = []
    for k in range(rnn.num_layers):
        c = kind(rnn.input_size if k == 0 else rnn.hidden_size, rnn.hidden_size)
        c.load_state_dict({name: getattr(rnn, f"{name}_l{k}") for name in c.state_dict()})
        cells.append(c)
    return cells


def sample_speed(cell: str, layers: int, hidden: int, vocab: int = 65, n_chars: int = 5000,
                 temperature: float = 1.0, threads: int | None = None, seed: int = 0,
                 path: str | None = None, blocks: int = 5) -> dict | None:
    """Sampling chars/s at batch 1 (one-hot of the last char -> RNN -> Linear -> softmax/T -> multinomial).

    path: "module" (nn.LSTM call per char, oneDNN off), "module-onednn", or "cells" (per-layer nn.*Cell).
    path=None probes every path at threads in {1, NumPy's count} (or the given count) and times the
    fastest. chars/s = block size / median block time, robust to the odd stall of a 2-core VM."""
    torch = _torch()
    if torch is None:
        return None
    torch.manual_seed(seed)
    rnn, head = _model(torch, cell, layers, hidden, vocab)
    cells = _cells(torch, cell, rnn)
    eye = torch.eye(vocab)  # row i is the one-hot of char i

    def run(which: str, n: int) -> float:
        """Seconds to generate n chars along one path, state carried from a zero start."""
        idx = torch.zeros(1, dtype=torch.long)
        with torch.inference_mode(), _onednn(torch, which == "module-onednn"):
            if which == "cells":
                zero = torch.zeros(1, hidden)
                state = [(zero, zero) if cell == "LSTM" else zero for _ in cells]  # what each cell takes
            else:
                state = _zero_state(torch, cell, layers, 1, hidden)
            t0 = time.perf_counter()
            for _ in range(n):
                x = eye[idx]  # (1, V)
                if which == "cells":
                    for k, c in enumerate(cells):
                        state[k] = c(x, state[k])
                        x = state[k][0] if cell == "LSTM" else state[k]
                else:
                    out, state = rnn(x.unsqueeze(0), state)  # (1, 1, V) -> (1, 1, H)
                    x = out[0]
                probs = torch.softmax(head(x) / temperature, dim=-1)
                idx = torch.multinomial(probs, 1)[0]
            return time.perf_counter() - t0

    paths = [path] if path else ["module", "module-onednn", "cells"]
    thread_opts = [threads] if threads else sorted({1, numpy_threads()})
    probe = {}
    for t in thread_opts:
        torch.set_num_threads(t)
        for which in paths:
            run(which, 100)  # warm-up
            probe[f"{which}@{t}"] = 100 / min(run(which, 100) for _ in range(3))
    which, t = max(probe, key=probe.get).split("@")
    torch.set_num_threads(int(t))
    size = max(1, n_chars // blocks)
    others = _meter()
    times = [run(which, size) for _ in range(blocks)]
    return {"cell": cell, "layers": layers, "hidden": hidden, "vocab": vocab, "n_chars": size * blocks,
            "temperature": temperature, "path": which, "threads": int(t), "probe_chars_per_s": probe,
            "chars_per_s": size / statistics.median(times), "others_cpu": others()}


def _busy(result: dict) -> str:
    """The others column: CPU share other processes took while this row was timed; '!' when it matters."""
    busy = result.get("others_cpu")
    return "?" if busy is None else f"{busy:.0%}{'!' if busy > BUSY else ' '}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per config")
    parser.add_argument("--quick", action="store_true", help="5 steps, 2,000 sampled chars")
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                        help="glibc allocator: tuned keeps big temporaries (see tune_malloc)")
    args = parser.parse_args()
    torch = _torch()
    if torch is None:
        print("torch is unavailable: install it with  pip install torch==2.13.0  (bench extra)")
        return
    malloc = args.malloc == "tuned" and tune_malloc()
    steps, warmup, n_chars = (5, 3, 2000) if args.quick else (args.steps, 5, 5000)
    t0 = time.perf_counter()
    print(f"torch {torch.__version__}, threads {numpy_threads()} (NumPy's), oneDNN available "
          f"{torch.backends.mkldnn.is_available()}, malloc {'tuned' if malloc else 'default'}")
    print(f"\ntraining, B=64 T=64 vocab 65, median of {steps} steps after {warmup} warm-up "
          "per oneDNN setting")
    print(f"  {'config':<12}{'chars/s':>10}{'ms/step':>9}{'others':>8}  oneDNN  probe chars/s")
    train = []
    for cell, layers, hidden in TRAIN_CONFIGS:
        r = train_speed(cell, layers, hidden, steps=steps, warmup=warmup)
        probe = ", ".join(f"{k} {v:,.0f}" for k, v in r["probe_chars_per_s"].items())
        print(f"  {cell} {layers}x{hidden:<5}{r['chars_per_s']:>10,.0f}{r['step_ms']:>9.1f}{_busy(r):>8}  "
              f"{'on ' if r['onednn'] else 'off'}     {probe}", flush=True)
        train.append(r)
    print(f"\nsampling, batch 1, temperature 1, {n_chars} chars, probe of path x threads "
          f"('others' = CPU share of other processes)")
    sample = []
    for cell, layers, hidden in SAMPLE_CONFIGS:
        r = sample_speed(cell, layers, hidden, n_chars=n_chars)
        probe = ", ".join(f"{k} {v:,.0f}" for k, v in r["probe_chars_per_s"].items())
        print(f"  {cell} {layers}x{hidden:<5}{r['chars_per_s']:>10,.0f}{_busy(r):>8}  via "
              f"{r['path']}@{r['threads']} (probe: {probe})", flush=True)
        sample.append(r)
    elapsed = time.perf_counter() - t0
    if any((r.get("others_cpu") or 0) > BUSY for r in train + sample):
        print("\n'!' rows: other processes were using the CPUs; their figures are low and noisy")
    print(f"\n({elapsed:.1f} s)")
    record.save("torch_peer", {"torch": torch.__version__, "malloc": "tuned" if malloc else "default",
                               "numpy_threads": numpy_threads(), "train": train, "sample": sample, "seconds": elapsed})


if __name__ == "__main__":
    main()
