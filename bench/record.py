"""Where a benchmark's figures go: bench/results/BENCHMARK--KIND.json, one file per benchmark and machine kind.

A machine kind is what decides a benchmark's figures: the CPU model, its widest vector instructions (ISA) and the
kernels NumPy's BLAS picked for it (OpenBLAS autodetects them, OPENBLAS_CORETYPE pins others).  Every result is
saved with that description, the NumPy, BLAS and Python (and PyTorch, when loaded) it ran with, the date, the
command, and the share of the CPUs other processes took meanwhile, so a figure never loses where it came from.
A re-run replaces its own file, never another benchmark's or another machine kind's; the file is written whole
and renamed over the old one, so a crash leaves the old one.

bench/report.py turns the files into bench/README.md and the README's headline table.  A new benchmark calls
save(name, result) at its end and gets a table in report.SECTIONS; until it has one, the report refuses to run.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "corpora")]
from prepare import write_atomic  # noqa: E402  (corpora/prepare.py: temp file, fsync, rename, fsync the folder)

from charrnn.fast import blas  # noqa: E402
from charrnn.fast.machine import contention_meter  # noqa: E402  (roofline and engines take it from here)

RESULTS = ROOT / "bench" / "results"
ISA_FLAGS = [("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),  # x86, widest first
             ("sve", "SVE"), ("asimd", "NEON")]  # arm64


def cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (model name, cpu family, flags, ...); empty off Linux."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def blas_info() -> dict:
    """Which BLAS NumPy runs, with which kernels (core) and threads: charrnn.fast.blas's view, through threadpoolctl."""
    lib = blas.library()
    if lib is None:
        return {"name": None, "version": None, "core": None, "threads": None}
    return {"name": lib.internal_api, "version": lib.version, "core": getattr(lib, "architecture", None),
            "threads": lib.get_num_threads()}


def cpus() -> int:
    """The CPUs this process may run on (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_others = contention_meter()  # from the moment a benchmark script imports this module to its save()


def machine() -> dict:
    """This machine as a benchmark's figures depend on it: CPU, ISA, core count, BLAS, library versions."""
    info = cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    isa = next((name for flag, name in ISA_FLAGS if flag in flags), platform.machine())
    described = {"cpu": info.get("model name") or platform.processor() or platform.machine(),
                 "family": info.get("cpu family"), "model": info.get("model"), "isa": isa,
                 "fma": "fma" in flags or None, "cpus": cpus(), "blas": blas_info(),
                 "numpy": np.__version__, "python": platform.python_version()}
    if "torch" in sys.modules:  # the peer's version, where a benchmark compared with it
        described["torch"] = sys.modules["torch"].__version__
    return described


def kind(described: dict) -> str:
    """The machine kind's name, e.g. "AMD EPYC (family 25, model 1), AVX2, Haswell kernels".  Family and model
    stay in: a virtual machine often reports a bare "AMD EPYC" for several generations."""
    cpu = described["cpu"]
    if described.get("family"):
        cpu += f" (family {described['family']}, model {described['model']})"
    return f"{cpu}, {described['isa']}, {described['blas'].get('core') or 'unknown'} kernels"


def slug(text: str) -> str:
    """A file-name-safe form: lower case, runs of anything else as one dash."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def command() -> str:
    """How this script was run, as a reader would type it again from the repository root."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *sys.argv[1:]])


def save(benchmark: str, result: dict, directory: Path = RESULTS, described: dict | None = None,
         run: str | None = None, date: str | None = None) -> Path:
    """Write result as this machine kind's entry for benchmark, atomically; returns the file."""
    described = described or machine()
    entry = {"benchmark": benchmark, "kind": kind(described), "machine": described,
             "date": date or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "command": run or command(), "others_cpu": _others(), "result": result}
    path = directory / f"{benchmark}--{slug(entry['kind'])}.json"
    write_atomic(path, (json.dumps(entry, indent=1) + "\n").encode())
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path
