"""The fast path's measured choices (charrnn.fast.tuning): the decisions from fake timings, as any machine kind
(an AVX-512 one included) would make them from its own; the races that time them; every candidate computing
what the plain path computes; and a real measurement giving a choice of every kind."""

import itertools

import numpy as np
import pytest

from charrnn.fast import blas, machine, tuning

MS = 1e-3


@pytest.mark.parametrize("name", list(tuning.CANDIDATES))
def test_every_choice_has_its_default_first_and_a_word_for_each_candidate(name):
    assert tuning.DEFAULTS[name] == tuning.CANDIDATES[name][0] and len(set(tuning.CANDIDATES[name])) > 1
    assert len({tuning.label(name, c) for c in tuning.CANDIDATES[name]}) == len(tuning.CANDIDATES[name])


def test_the_default_stays_when_no_candidate_is_clearly_faster():
    times = {256 << 10: 1.00 * MS, 128 << 10: 1.20 * MS, 512 << 10: 0.95 * MS, 1 << 20: 0.93 * MS}
    assert tuning.pick("block bytes", times) == tuning.choice(256 << 10, "blocks of 1024 KiB only 1.08x")
    times[256 << 10] = 0.90 * MS
    assert tuning.pick("block bytes", times) == tuning.choice(256 << 10, "1.03x blocks of 1024 KiB")


def test_a_candidate_clearly_faster_replaces_the_default():
    """An AVX-512 machine whose kernels prefer narrower blocks, and one where np.matmul beats the packed kernels."""
    times = {256 << 10: 1.30 * MS, 128 << 10: 1.00 * MS, 512 << 10: 1.50 * MS, 1 << 20: 1.10 * MS}
    assert tuning.pick("block bytes", times) == tuning.choice(128 << 10, "1.30x blocks of 256 KiB")
    assert tuning.pick("gemm float32", {"packed": 2.0 * MS, "np.matmul": 1.6 * MS}) == tuning.choice(
        "np.matmul", "1.25x packed kernels")
    assert tuning.pick("depth float32", {None: 1.0, 256: 0.8}) == tuning.choice(256, "1.25x whole depth")


def test_a_pick_is_the_same_for_any_order_of_the_times():
    times = {"one": 1.0, "all": 0.5}
    for order in itertools.permutations(times):
        assert tuning.pick("sampler threads", {k: times[k] for k in order})["value"] == "all"


@pytest.mark.parametrize("ratios, streams", [
    ({8: 0.70, 16: 1.05, 32: 1.30}, 16),  # shards of 8 too little work (LSTM 1x128 on the Zen 3), 16 pay
    ({8: 1.02, 16: 1.20, 32: 1.40}, 16),  # shards of 8 no clear gain: the default stays
    ({8: 1.25, 16: 1.40, 32: 1.50}, 8),  # shards of 8 clearly faster (BLAS's threads spin on a busy machine)
    ({8: 0.50, 16: 0.85, 32: 0.95}, 32),  # shards of 16 clearly slower, 32 no worse: shard from 64 streams on
    ({8: 0.40, 16: 0.60, 32: 0.70}, None),  # BLAS's threads win at every size: never shard
    ({8: 0.80, 16: 0.95, 32: 1.30}, 16),  # shards of 16 slower, but inside the noise: the default stays
])
def test_min_streams_from_the_ratio_of_threads_to_shards(ratios, streams):
    assert tuning.pick_min_streams(ratios)["value"] == streams


def test_min_streams_says_what_decided():
    assert tuning.pick_min_streams({8: 0.5, 16: 0.85, 32: 0.95})["why"] == (
        "shards of 16 0.85x BLAS's threads, shards of 32 0.95x BLAS's threads")


def test_a_race_runs_the_candidates_in_turn_and_keeps_each_ones_best(monkeypatch):
    clock, calls = [0.0], []
    monkeypatch.setattr(tuning.time, "perf_counter", lambda: clock[0])

    def runner(name, costs):
        costs = iter(costs)

        def run():
            calls.append(name)
            clock[0] += next(costs)

        return run

    best = tuning.race({"a": runner("a", [9, 3, 2, 4]), "b": runner("b", [9, 1, 5, 1])}, rounds=3, budget=100)
    assert best == {"a": 2, "b": 1}
    assert calls == ["a", "b"] * 4  # once untimed each, then in turn, round by round


def test_a_race_past_its_budget_stops_after_the_least_rounds(monkeypatch):
    clock, runs = [0.0], []
    monkeypatch.setattr(tuning.time, "perf_counter", lambda: clock[0])

    def slow():
        runs.append(1)
        clock[0] += 1.0

    tuning.race({"slow": slow}, rounds=7, budget=0.5)
    assert len(runs) == 1 + tuning.MIN_ROUNDS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_gemm_candidate_adds_what_np_matmul_adds(dtype):
    """The races' own workloads: each block size and depth of the packed kernels against the plain twin."""
    if not machine.verdict().agrees(dtype):
        pytest.skip(f"no packed kernels here: {machine.verdict().packed[np.dtype(dtype).name]}")
    shapes = [(5, 300, 40), (3, 20, 520)]  # past a slab's depth; over several blocks of 128 KiB

    def added(how, block=None, depth=None):
        problems = tuning.gemm_problems(dtype, shapes)
        tuning.gemm_run(how, block, depth, problems)()
        return [dest for _, _, dest in problems]

    with blas.single_threaded():
        plain = added("np.matmul")
        for block, depth in itertools.product(tuning.CANDIDATES["block bytes"],
                                              tuning.CANDIDATES[f"depth {np.dtype(dtype).name}"]):
            tol = 1e-4 if dtype == np.float32 else 1e-10
            for got, want in zip(added("packed", block, depth), plain, strict=True):
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_a_real_measurement_gives_a_candidate_for_every_choice():
    """In a child process as the verdict runs it, on two cores (helpers forked for the shards' race): every
    choice a candidate, with the ratio that decided.  Which candidate wins is this machine's business."""
    found = {d: machine.verdict().agrees(d) for d in machine.DTYPES}
    ok, picked = machine.in_child(lambda: tuning.measure(2, found))
    assert ok, picked
    assert set(picked) == set(tuning.CANDIDATES) - ({"block bytes"} if not found["float32"] else set())
    for name, chosen in picked.items():
        assert chosen["value"] in tuning.CANDIDATES[name] and chosen["why"]
