"""The torch engine: the engine calls (charrnn.engines) on a PyTorch device, in one process or many.

A run of many processes is started as torchrun starts one (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in the environment: torchrun, --procs, or a scheduler's launcher) and trains with
DistributedDataParallel, over NCCL on GPUs and gloo on CPUs.  The B streams are the run's, whatever the number of
processes: each process takes its contiguous share (charrnn.fast.shards.shard_bounds), weights its mean loss by
that share, so the reduced gradient is the whole batch's mean, and draws the dropout masks of the whole batch to
use its share of them.  The data seen and the result (to float rounding) do not depend on the number of
processes, and a checkpoint holds the whole batch's carried state, so a run resumes with another number.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from charrnn.core.model import Model
from charrnn.core.optim import Optimizer
from charrnn.engines import ProcessLost
from charrnn.engines.torch.net import DTYPES, Net
from charrnn.engines.torch.optim import TensorOptimizer, clip_gradients
from charrnn.errors import CharrnnError
from charrnn.fast.shards import shard_bounds

RNG_KEY = "rng.torch"  # the checkpoint array of the dropout generator's state (torch.Generator.get_state)


def choose_device(name: str | None, local_rank: int, dtype: str) -> torch.device:
    """--device: None is the first CUDA device, else the CPU; "cuda" in a run of many processes is each
    process's own, by its rank on the machine."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = device.index if device.index is not None else int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1
        if wanted >= count:  # the same verdict in every process of the machine, so the first one says it
            raise CharrnnError(f"--device {name}: this machine has {count} CUDA device(s) for PyTorch, and the run "
                               f"needs cuda:{wanted}; use --device cpu, or fewer processes a machine")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CharrnnError("--device mps: PyTorch finds no Apple GPU (MPS) here; use --device cpu")
        if dtype == "float64":
            raise CharrnnError("--device mps has no float64; use --dtype float32")
    return device


def join(device: torch.device) -> tuple[int, int]:
    """(rank, processes): joins the run's process group where the environment names one of many processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
        raise CharrnnError("WORLD_SIZE is set but MASTER_ADDR or MASTER_PORT is not: start the processes of a run "
                           "with torchrun, or with --procs on one machine")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if device.type == "cpu" and local > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))  # the machine's cores shared, not each taken
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        except (RuntimeError, ValueError) as e:
            raise CharrnnError(f"cannot join the run's {world} processes: {brief(e)}") from None
    return dist.get_rank(), world


def brief(error: Exception) -> str:
    """The first sentence of a message from PyTorch's C++ side, without its source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip().splitlines()[0] if str(error).strip() else "")
    return text.split(". ")[0] or type(error).__name__


def dropout_generator(device: torch.device, resumed, rng: np.random.Generator) -> torch.Generator:
    """The dropout masks' generator: a resumed torch run's, where it ran on this kind of device (CPU and CUDA
    generators differ), else one seeded from the run's RNG: a fresh run, or one the NumPy engine or another kind
    of device ran before."""
    generator = torch.Generator(device)
    saved = resumed.rng.get(RNG_KEY) if resumed is not None else None
    ran_on = ((resumed.meta.get("engine") or {}).get("device") or "") if resumed is not None else ""
    if saved is not None and ran_on.split(":")[0] == device.type:
        generator.set_state(torch.from_numpy(saved))
    else:
        generator.manual_seed(int(rng.integers(2**63)))
    return generator


def collective(method):
    """A call every process of a run makes together: where one has stopped, the others' part fails, said in one
    line (ProcessLost) rather than a trace from the backend."""

    @functools.wraps(method)
    def call(self, *args):
        try:
            return method(self, *args)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as e:
            if self.processes == 1:
                raise
            raise ProcessLost(f"a process of this {self.processes}-process run stopped or lost touch "
                              f"({brief(e)})") from None

    return call


class TorchEngine:
    """See charrnn.engines for the calls; the module's docstring for the processes."""

    name = "torch"

    def __init__(self, model: Model, optim: Optimizer, state, rng: np.random.Generator, cfg, resumed=None,
                 device: str | None = None):
        self.device = choose_device(device, int(os.environ.get("LOCAL_RANK", "0")), model.cfg.dtype)
        self.net = Net(model.cfg).to(self.device, DTYPES[model.cfg.dtype])  # refuses peephole and coupled gates
        self.rank, self.processes = join(self.device)
        self.batch_size, self.clip, self.clip_mode = cfg.batch_size, cfg.clip, cfg.clip_mode
        if self.batch_size < self.processes:
            raise CharrnnError(f"--batch-size {self.batch_size} is fewer streams than the run's {self.processes} "
                               f"processes; each needs one at least")
        self.share = shard_bounds(self.batch_size, self.processes)[self.rank]
        self.params = self.net.named()
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.from_numpy(model.params[name]))
        self.training = DistributedDataParallel(self.net) if self.processes > 1 else self.net
        self.optim = TensorOptimizer(optim, self.device)
        self.state = tuple(self.tensor(s[:, self.share]) for s in state)
        self.generator = dropout_generator(self.device, resumed, rng)
        self._model = model
        self._pending = None  # the final state of the last gradients(), until update()

    @property
    def leads(self) -> bool:
        return self.rank == 0

    @property
    def model(self) -> Model:
        """The NumPy model, its parameters copied from the device on every access."""
        for name, p in self.params.items():
            self._model.params[name][...] = p.detach().cpu().numpy()
        return self._model

    def tensor(self, a: np.ndarray, dtype=None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype)).to(self.device)

    def chunk(self, x, y, share: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's streams of (N, T) inputs and targets, time-major (T, N') on the device."""
        return self.tensor(np.asarray(x)[share].T, np.int64), self.tensor(np.asarray(y)[share].T, np.int64)

    def dropout_masks(self, T: int) -> list[torch.Tensor] | None:
        """Inverted dropout as charrnn.core.model's, 0 or 1/(1-p): drawn for the whole batch, whatever share this
        process trains, so the masks do not depend on the number of processes."""
        p, cfg = self.net.cfg.dropout, self.net.cfg
        if p == 0:
            return None
        shape, dtype = (T, self.batch_size, cfg.hidden), DTYPES[cfg.dtype]
        return [(torch.rand(shape, generator=self.generator, device=self.device, dtype=dtype) >= p).to(dtype)
                [:, self.share] / (1 - p) for _ in range(cfg.layers)]

    @collective
    def gradients(self, x, y) -> tuple[float, float]:
        x, y = self.chunk(x, y, self.share)
        weight = (self.share.stop - self.share.start) / self.batch_size  # this share of the whole batch's mean
        for p in self.params.values():
            p.grad = None
        logits, final = self.training(x, self.state, self.dropout_masks(x.shape[0]))
        loss = F.cross_entropy(logits, y.reshape(-1))
        (loss * weight * self.processes).backward()  # DDP averages over processes: the whole batch's mean
        norm = clip_gradients([p.grad for p in self.params.values()], self.clip, self.clip_mode)
        loss = loss.detach() * weight
        if self.processes > 1:
            dist.all_reduce(loss)
        self._pending = tuple(s.detach() for s in final)
        return float(loss), norm

    def update(self, lr: float) -> None:
        self.optim.step(self.params, lr)
        self.state = self._pending

    def reset_state(self) -> None:
        self.state = self.initial_state(self.batch_size)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Zero state of this process's share of `batch` streams."""
        share = shard_bounds(batch, self.processes)[self.rank]
        shape = (self.net.cfg.layers, share.stop - share.start, self.net.cfg.hidden)
        dtype = DTYPES[self.net.cfg.dtype]
        return tuple(torch.zeros(shape, dtype=dtype, device=self.device) for _ in self.state)

    @collective
    @torch.no_grad()
    def evaluate(self, x, y, state) -> tuple[float, int, tuple]:
        """As Model.evaluate over the whole (N, T) chunk: this process scores its share of the streams, the sums
        are reduced."""
        N, T = np.shape(x)
        share = shard_bounds(N, self.processes)[self.rank]
        total = torch.zeros((), dtype=DTYPES[self.net.cfg.dtype], device=self.device)
        if share.stop > share.start:
            x, y = self.chunk(x, y, share)
            logits, state = self.net(x, state)
            total = F.cross_entropy(logits, y.reshape(-1), reduction="sum")
        if self.processes > 1:
            dist.all_reduce(total)
        return float(total), N * T, state

    @collective
    def agree(self, stop: int, lr: float) -> tuple[int, float]:
        if self.processes == 1:
            return stop, lr
        mine = torch.tensor([stop, lr], dtype=torch.float64, device=self.device)
        every = [torch.empty_like(mine) for _ in range(self.processes)]
        dist.all_gather(every, mine)
        return int(max(e[0] for e in every)), float(every[0][1])

    @collective
    def saved(self) -> tuple[dict, tuple, dict]:
        """The optimiser's arrays, the whole batch's carried state (each process fills its share of a zero array,
        and a sum joins them) and the dropout generator's state."""
        state = []
        for s in self.state:
            whole = torch.zeros((s.shape[0], self.batch_size, s.shape[2]), dtype=s.dtype, device=self.device)
            whole[:, self.share] = s
            if self.processes > 1:
                dist.all_reduce(whole)
            state.append(whole.cpu().numpy())
        return self.optim.store(), tuple(state), {RNG_KEY: self.generator.get_state().numpy()}

    @contextlib.contextmanager
    def running(self):
        """The process group lives as long as the loop."""
        try:
            yield
        finally:
            if self.processes > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def describe(self) -> dict:
        return {"name": self.name, "device": str(self.device), "processes": self.processes}
