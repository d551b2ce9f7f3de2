"""The fast path's per-machine verdict (charrnn.fast.machine): a check run in a child process, whose crash, hang
or disagreement means np.matmul, and the machine's measured choices (charrnn.fast.tuning) from another; cached
once per BLAS (file, version, core, threads) in the user's cache directory, unless the machine was busy."""

import ctypes
import json
import os
import platform
import subprocess
import sys
import time

import pytest

from charrnn.fast import machine, packed, tuning

KEY = {"file": "/lib/libopenblas.so", "version": "0.3.99", "core": "Haswell", "threads": "2"}


def test_a_check_that_agrees():
    assert machine.check_in_child(lambda: None) == machine.AGREES


def test_a_check_that_crashes():
    assert machine.check_in_child(lambda: ctypes.string_at(0)) == "crashed (SIGSEGV)"


def test_a_check_that_hangs_is_killed():
    started = time.monotonic()
    assert machine.check_in_child(lambda: time.sleep(60), timeout=0.5) == "timed out after 0.5 s"
    assert time.monotonic() - started < 10


def test_a_check_that_disagrees_or_fails():
    assert machine.check_in_child(lambda: "float32 sums differ") == "float32 sums differ"
    assert machine.check_in_child(lambda: 1 / 0) == "raised ZeroDivisionError: division by zero"
    assert machine.check_in_child(lambda: os._exit(3)) == "exited with code 3"


def test_a_task_in_a_child_returns_what_it_returned():
    assert machine.in_child(lambda: {"min streams": {"value": None, "why": "x"}}) == (
        True, {"min streams": {"value": None, "why": "x"}})
    assert machine.in_child(lambda: ctypes.string_at(0)) == (False, "crashed (SIGSEGV)")


def test_the_child_ends_with_its_check(monkeypatch):
    """Whatever the check did, its child is gone and reaped when the answer comes."""
    fork, children = os.fork, []
    monkeypatch.setattr(os, "fork", lambda: children.append(fork()) or children[-1])
    for check in (lambda: None, lambda: ctypes.string_at(0), lambda: time.sleep(60)):
        machine.check_in_child(check, timeout=0.5)
        with pytest.raises(ChildProcessError):
            os.waitpid(children[-1], os.WNOHANG)
    assert len(children) == 3


TUNED = {"min streams": tuning.choice(8, "shards of 8 1.25x BLAS's threads"),
         "gemm float32": tuning.choice("packed", "1.22x np.matmul")}


@pytest.fixture
def checks(monkeypatch, tmp_path):
    """A fresh cache directory and no verdict yet in this process; the checks and the tuning are counted, not run
    (every verdict: a check per dtype, then the tuning): the checks say what the list's next entry says (the
    default: they agree), the tuning picks TUNED, and other processes take CPU_TAKEN[0] of the CPUs meanwhile."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(machine, "library_key", lambda: dict(KEY))
    ran, answers = [], []
    monkeypatch.setattr(machine, "check_in_child", lambda check: ran.append(check) or
                        (answers.pop(0) if answers else machine.AGREES))
    monkeypatch.setattr(machine, "in_child", lambda task: ran.append(task) or (True, dict(TUNED)))
    CPU_TAKEN[0] = 0.02
    monkeypatch.setattr(machine, "contention_meter", lambda: lambda: CPU_TAKEN[0])
    machine.verdict.cache_clear()
    yield ran, answers
    machine.verdict.cache_clear()  # the real verdict again, for the tests after


CPU_TAKEN = [0.0]


def cached(tmp_path):
    return sorted((tmp_path / "xdg" / "charrnn").iterdir())


def test_a_verdict_is_checked_once_per_dtype_and_tuned_once_then_read_from_the_cache(checks, tmp_path):
    ran, _ = checks
    assert machine.verdict() == machine.Verdict(packed={"float32": "agrees", "float64": "agrees"}, tuned=TUNED,
                                                others=0.02)
    assert len(ran) == 3 and machine.verdict().packs("float32") and machine.verdict().value("min streams") == 8
    [path] = cached(tmp_path)  # written whole, no temporary file left
    record = json.loads(path.read_text())
    assert record == {"version": machine.VERSION, "blas": KEY,
                      "verdict": {"packed": {"float32": "agrees", "float64": "agrees"}, "tuned": TUNED,
                                  "others": 0.02}}
    machine.verdict.cache_clear()  # another process, say
    assert machine.verdict().packs("float64") and machine.verdict().value("min streams") == 8 and len(ran) == 3


def test_a_choice_not_measured_takes_its_default(checks):
    assert machine.verdict().value("block bytes") == packed.BLOCK_BYTES == tuning.DEFAULTS["block bytes"]
    assert machine.verdict().why("block bytes") == "not measured"
    assert machine.verdict().why("gemm float32") == "1.22x np.matmul"


def test_a_failed_check_is_remembered_too(checks, tmp_path):
    ran, answers = checks
    answers += ["crashed (SIGSEGV)", machine.AGREES]
    assert not machine.verdict().packs("float32") and machine.verdict().packs("float64")
    machine.verdict.cache_clear()
    assert machine.verdict().packed["float32"] == "crashed (SIGSEGV)" and len(ran) == 3


def test_kernels_slower_than_np_matmul_may_run_but_do_not(checks, monkeypatch):
    slower = {"gemm float64": tuning.choice("np.matmul", "1.15x packed kernels")}
    monkeypatch.setattr(machine, "in_child", lambda task: (True, slower))
    assert machine.verdict().agrees("float64") and not machine.verdict().packs("float64")
    assert machine.verdict().packs("float32")


def test_a_tuning_that_fails_leaves_the_defaults_and_says_why(checks, monkeypatch):
    monkeypatch.setattr(machine, "in_child", lambda task: (False, "crashed (SIGSEGV)"))
    found = machine.verdict()
    assert all(found.value(name) == default for name, default in tuning.DEFAULTS.items())
    assert found.why("min streams") == "not measured: crashed (SIGSEGV)" and found.packs("float32")


def test_a_tuning_measured_while_the_machine_was_busy_keeps_the_defaults_for_the_process(checks, tmp_path):
    ran, _ = checks
    CPU_TAKEN[0] = 0.6
    found = machine.verdict()
    assert found.others == 0.6 and found.value("min streams") == 16 and found.packs("float32")
    assert found.why("min streams") == "others took 60% of the CPUs: the default"
    assert not (tmp_path / "xdg" / "charrnn").exists()
    machine.verdict.cache_clear()
    CPU_TAKEN[0] = 0.05
    machine.verdict()
    assert len(ran) == 6 and len(cached(tmp_path)) == 1


def test_each_blas_has_its_own_verdict(checks, tmp_path, monkeypatch):
    ran, _ = checks
    machine.verdict()
    for changed in ({"core": "SkylakeX"}, {"version": "0.3.100"}, {"file": "/other/libopenblas.so"},
                    {"threads": "8"}):
        monkeypatch.setattr(machine, "library_key", lambda changed=changed: {**KEY, **changed})
        machine.verdict.cache_clear()
        machine.verdict()
    assert len(ran) == 15 and len(cached(tmp_path)) == 5


@pytest.mark.parametrize("damage", ["not json", json.dumps({"version": machine.VERSION + 1}),
                                    json.dumps({"version": machine.VERSION, "blas": KEY, "verdict": {"x": 1}})])
def test_a_record_of_another_version_or_damaged_is_checked_again(checks, tmp_path, damage):
    ran, _ = checks
    machine.verdict()
    [path] = cached(tmp_path)
    path.write_text(damage)
    machine.verdict.cache_clear()
    assert machine.verdict().packs("float32") and len(ran) == 6
    assert json.loads(path.read_text())["version"] == machine.VERSION  # and written again


def test_a_record_of_the_version_before_tuning_is_measured_again(checks, tmp_path):
    """A verdict of version 1, the check alone, as the first release cached it: the choices are measured now."""
    ran, _ = checks
    machine.cache_file(KEY).parent.mkdir(parents=True)
    machine.cache_file(KEY).write_text(json.dumps({"version": 1, "blas": KEY, "verdict": {
        "packed": {"float32": "agrees", "float64": "agrees"}}}))
    assert machine.verdict().value("min streams") == 8 and len(ran) == 3


def test_where_nothing_is_writable_the_verdict_lasts_for_the_process(checks, tmp_path, monkeypatch):
    ran, _ = checks
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file, not a directory: even root can't
    assert machine.verdict().packs("float32") and machine.verdict().packs("float64") and len(ran) == 3
    machine.verdict.cache_clear()
    machine.verdict()
    assert len(ran) == 6


def test_no_openblas_no_check(checks, monkeypatch):
    ran, _ = checks
    monkeypatch.setattr(machine, "library_key", lambda: None)
    assert not machine.verdict().packs("float32") and not ran


@pytest.mark.skipif(platform.machine() != "x86_64" or "avx" not in open("/proc/cpuinfo").read(),
                    reason="OpenBLAS's Sandybridge kernels need an x86-64 CPU with AVX")
def test_training_survives_kernels_that_crash(tmp_path):
    """NumPy's OpenBLAS told to run its Sandybridge kernels, whose packed GEMM crashed when called here: the check
    in its child says so, and training runs on np.matmul instead of dying with SIGSEGV."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge", "OPENBLAS_NUM_THREADS": "1",
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop(machine.SWITCH, None)
    done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(tmp_path / "ck"),
                           "--steps", "2", "-B", "4", "-T", "8", "-H", "8", "-L", "1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "(Sandybridge)" in done.stdout


def test_a_check_that_could_not_run_is_not_remembered(checks, tmp_path):
    ran, answers = checks
    answers += [machine.NOT_CHECKED + "cannot start a process (Resource temporarily unavailable)", machine.AGREES]
    assert not machine.verdict().packs("float32")
    assert not (tmp_path / "xdg" / "charrnn").exists()
    machine.verdict.cache_clear()
    assert machine.verdict().packs("float32") and len(ran) == 6


def test_no_fork_no_check(monkeypatch):
    def fail():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", fail)
    assert machine.check_in_child(lambda: None) == (machine.NOT_CHECKED +
                                                    "cannot start a process (Resource temporarily unavailable)")
