"""The one seam for the recurrent GEMM (charrnn.fast.gemm): np.matmul's twin adds what the packed kernels add, the
choice between them follows the switch, BLAS's threads and this machine's verdict, and the banner's line says
which path a run takes."""

import numpy as np
import pytest

from charrnn.fast import blas, gemm, machine, packed, shards, tuning
from charrnn.fast.workspace import Workspace

GOOD = machine.Verdict(packed={"float32": machine.AGREES, "float64": machine.AGREES},
                       tuned={"min streams": tuning.choice(16, "shards of 16 1.37x BLAS's threads"),
                              "gemm float32": tuning.choice("packed", "1.22x np.matmul"),
                              "gemm float64": tuning.choice("np.matmul", "1.15x packed kernels"),
                              "block bytes": tuning.choice(512 << 10, "1.12x blocks of 256 KiB")})
CRASHED = machine.Verdict(packed={"float32": "crashed (SIGSEGV)", "float64": "crashed (SIGSEGV)"})


@pytest.fixture
def fast_on(monkeypatch):
    """The fast path on, whatever CHARRNN_FAST says (CI's second pass sets it to 0)."""
    monkeypatch.delenv(machine.SWITCH, raising=False)


def problem(dtype=np.float64, T=3, N=4, K=6, H=5):
    """A GRU's chunk in small: W (K, 3H), its steps' inputs, and its destinations, r and z in one gate-major
    array and n's recurrent part in another."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((K, 3 * H)).astype(dtype)
    xs = rng.standard_normal((T, N, K)).astype(dtype)
    r_z, n = rng.standard_normal((2, T, N, H)).astype(dtype), rng.standard_normal((1, T, N, H)).astype(dtype)
    return W, xs, [r_z, n]


def run(gemm_of, dests, T):
    before = [d.copy() for d in dests]
    for t in range(T):
        gemm_of.add(t)
    return [d - b for d, b in zip(dests, before, strict=True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_plain_twin_adds_each_steps_product_gate_by_gate(dtype):
    W, xs, dests = problem(dtype)
    T, N, _ = xs.shape
    added = run(gemm.Plain(W, xs, dests, np.empty((N, W.shape[1]), dtype)), dests, T)
    product = (xs @ W).reshape(T, N, 3, -1).transpose(2, 0, 1, 3)  # (3, T, N, H)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(added[0], product[:2], rtol=tol, atol=tol)
    np.testing.assert_allclose(added[1], product[2:], rtol=tol, atol=tol)


@pytest.mark.parametrize("block_bytes, depth", [(b, d) for b in tuning.CANDIDATES["block bytes"]
                                                 for d in tuning.CANDIDATES["depth float64"]])
def test_packed_and_plain_add_the_same_whatever_the_tuning_chose(fast_on, monkeypatch, block_bytes, depth):
    if not machine.verdict().agrees(np.float64):
        pytest.skip(f"no packed kernels here: {machine.verdict().packed['float64']}")
    W, xs, dests = problem(K=300)  # deeper than a slab of 256 or 128
    chosen = {"gemm float64": tuning.choice("packed", "a test"), "block bytes": tuning.choice(block_bytes, "a test"),
              "depth float64": tuning.choice(depth, "a test")}
    monkeypatch.setattr(machine, "verdict", lambda: machine.Verdict(GOOD.packed, chosen))
    twins = [[d.copy() for d in dests] for _ in range(2)]
    with blas.single_threaded():
        by_packed = gemm.recurrent(Workspace(), "w", W, xs, twins[0])
        assert isinstance(by_packed, packed.Packed)
        assert [d for _, d, _, _ in by_packed.slabs] == [min(depth, 300 - k) for k in range(0, 300, depth)]
        added_packed = run(by_packed, twins[0], len(xs))
    added_plain = run(gemm.Plain(W, xs, twins[1], np.empty((xs.shape[1], W.shape[1]))), twins[1], len(xs))
    for a, b in zip(added_packed, added_plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_packed_kernels_run_only_on_one_thread_with_the_switch_on_and_a_good_verdict(monkeypatch, fast_on):
    W, xs, dests = problem(np.float32)
    ws = Workspace()
    made = []

    class Counted:  # never runs a kernel: the choice is tested here, the sums above
        bytes_needed = staticmethod(packed.Packed.bytes_needed)

        def __init__(self, *args):
            made.append(args)

    monkeypatch.setattr(packed, "Packed", Counted)
    monkeypatch.setattr(machine, "verdict", lambda: GOOD)
    monkeypatch.setattr(blas, "threads", lambda: 1)
    assert isinstance(gemm.recurrent(ws, "w", W, xs, dests), Counted)
    assert made[-1][6:] == (512 << 10, None)  # the block size the verdict chose, float32's default depth
    assert isinstance(gemm.recurrent(ws, "w", np.asfortranarray(W), xs, dests), gemm.Plain)  # a layout it can't take
    W64, xs64, dests64 = problem(np.float64)
    assert isinstance(gemm.recurrent(ws, "w", W64, xs64, dests64), gemm.Plain)  # np.matmul was faster for float64
    monkeypatch.setattr(blas, "threads", lambda: 2)  # np.matmul splits each GEMM over the threads
    assert isinstance(gemm.recurrent(ws, "w", W, xs, dests), gemm.Plain)
    monkeypatch.setattr(blas, "threads", lambda: 1)
    monkeypatch.setattr(machine, "verdict", lambda: CRASHED)
    assert isinstance(gemm.recurrent(ws, "w", W, xs, dests), gemm.Plain)
    monkeypatch.setattr(machine, "verdict", lambda: GOOD)
    monkeypatch.setenv(machine.SWITCH, "0")
    assert isinstance(gemm.recurrent(ws, "w", W, xs, dests), gemm.Plain)
    assert len(made) == 1


@pytest.mark.parametrize("value, on", [("1", True), ("0", False), ("off", False), (" False ", False), ("no", False),
                                       ("yes", True)])
def test_the_switch(monkeypatch, value, on):
    monkeypatch.setenv(machine.SWITCH, value)
    assert machine.enabled() is on
    assert (shards.shard_count(64, 2) == 2) is (on and shards.sys.platform == "linux")


def test_the_banner_line_says_which_path_runs_and_why(monkeypatch, fast_on):
    monkeypatch.setattr(blas, "threads", lambda: 2)
    monkeypatch.setattr(blas, "describe", lambda: "OpenBLAS 0.3.31 (Haswell)")
    monkeypatch.setattr(shards.sys, "platform", "linux")
    monkeypatch.setattr(machine, "verdict", lambda: GOOD)
    shards_why = "(16+ streams a shard: shards of 16 1.37x BLAS's threads)"
    assert gemm.describe_path(64) == (f"2 shards of 32 streams on 1 BLAS thread each {shards_why}, packed kernels "
                                      "(1.22x np.matmul, blocks of 512 KiB) — OpenBLAS 0.3.31 (Haswell)")
    assert gemm.describe_path(65).startswith("2 shards of 32-33 streams")
    assert gemm.describe_path(16) == f"1 process on 2 BLAS threads {shards_why}, np.matmul — OpenBLAS 0.3.31 (Haswell)"
    assert gemm.describe_path(64, "float64") == (f"2 shards of 32 streams on 1 BLAS thread each {shards_why}, "
                                                 "np.matmul (1.15x packed kernels) — OpenBLAS 0.3.31 (Haswell)")
    monkeypatch.setattr(machine, "verdict", lambda: CRASHED)
    assert gemm.describe_path(64, "float64") == ("2 shards of 32 streams on 1 BLAS thread each (16+ streams a shard: "
                                                 "not measured), np.matmul (packed kernels: crashed (SIGSEGV)) — "
                                                 "OpenBLAS 0.3.31 (Haswell)")
    never = {"min streams": tuning.choice(None, "shards of 32 0.80x BLAS's threads")}
    monkeypatch.setattr(machine, "verdict", lambda: machine.Verdict(GOOD.packed, never))
    assert gemm.describe_path(64) == ("1 process on 2 BLAS threads (never shards: shards of 32 0.80x BLAS's "
                                      "threads), np.matmul — OpenBLAS 0.3.31 (Haswell)")
    monkeypatch.setattr(blas, "threads", lambda: 1)
    monkeypatch.setattr(machine, "verdict", lambda: GOOD)
    assert gemm.describe_path(64).startswith("1 process on 1 BLAS thread, packed kernels (1.22x np.matmul")
    monkeypatch.setenv(machine.SWITCH, "0")
    assert gemm.describe_path(64) == ("1 process on 1 BLAS thread, np.matmul (CHARRNN_FAST=0) — "
                                      "OpenBLAS 0.3.31 (Haswell)")
