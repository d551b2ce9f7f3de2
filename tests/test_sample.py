"""Sampling: the distribution knobs, the fast stepper, priming, stop strings, batches, and `charrnn sample`."""

import dataclasses
import math
import select
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from models import random_model

import charrnn.core.sample
from charrnn.cli.commands import SEPARATOR, main
from charrnn.core.model import ModelConfig
from charrnn.core.sample import Picker, generate, next_distribution, prime_state, sample_text, stream
from charrnn.core.stepper import Stepper, batch1_choices
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.fast import machine, tuning
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text

PROSE = ("the heron stood in the reeds and the miller kept a clock. every hour the clock struck and the heron "
         "lifted one leg. why do you listen to that box, said a frog. because it knows the hour, said the heron.\n")


def train(out: Path, text: str, steps: int, cell: str = "lstm", hidden: int = 16, layers: int = 1) -> Path:
    """A tiny checkpoint trained through the Python API; returns the path of latest.npz."""
    corpus = corpus_from_text(text)
    cfg = TrainConfig(seq_len=16, batch_size=4, steps=steps, eval_every=steps, save_every=steps, lr=1e-2, seed=0)
    Trainer(corpus, ModelConfig(vocab_size=len(corpus.vocab), cell=cell, hidden=hidden, layers=layers), cfg, out).run()
    return out / "latest.npz"


@pytest.fixture(scope="module")
def abc(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("abc"), "abc" * 300, steps=300)


@pytest.fixture(scope="module")
def prose(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("prose"), PROSE * 8, steps=60, hidden=32)


VOCAB = Vocab("\nabcdefghij")  # 11 symbols, for random_model()

# -- the stepper --------------------------------------------------------------------------------------------------

CELL_OPTIONS = [("lstm", {}), ("lstm", {"peephole": True}), ("lstm", {"coupled": True}),
                ("lstm", {"peephole": True, "coupled": True}), ("gru", {}), ("rnn", {})]


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("batch", [1, 3])  # a batch of one takes 1-D views and the layout the machine chose
@pytest.mark.parametrize(("cell", "options"), CELL_OPTIONS)
@pytest.mark.parametrize(("layout", "threads"), [("transposed", "one"), ("plain", "all")])
def test_stepper_equals_chunk_forward(cell, options, batch, layers, layout, threads, monkeypatch):
    monkeypatch.delenv(machine.SWITCH, raising=False)
    chosen = {"sampler layout": tuning.choice(layout, "a test"), "sampler threads": tuning.choice(threads, "a test")}
    chosen_verdict = dataclasses.replace(machine.verdict(), tuned=chosen)
    monkeypatch.setattr(machine, "verdict", lambda: chosen_verdict)
    assert batch1_choices() == (layout, threads == "one")
    model = random_model(cell, layers=layers, **options)
    x = np.random.default_rng(2).integers(0, 11, (batch, 25))
    state0 = tuple(np.random.default_rng(3).normal(size=s.shape) for s in model.initial_state(batch))
    logits, final, _ = model.forward(x, state0)
    stepper = Stepper(model, state0)
    stepped = np.stack([stepper.step(x[:, t]).copy() for t in range(25)])
    np.testing.assert_allclose(stepped, logits.reshape(25, batch, 11), rtol=1e-12, atol=1e-12)
    for a, b in zip(stepper.state, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_stepper_keeps_the_dtype_and_leaves_the_callers_state_alone():
    model = random_model(dtype="float32")
    state0 = model.initial_state(2)
    stepper = Stepper(model, state0)
    assert stepper.step(np.array([1, 2])).dtype == np.float32
    assert not any(s.any() for s in state0)  # the stepper advanced its own copy


@pytest.mark.parametrize("options", [dict(top_k=5, top_p=0.9), dict(temperature=0.7)], ids=["cdf", "gumbel"])
def test_generation_allocates_nothing_weight_sized_per_step(options):
    """A step must not copy or rescale weights (W_hh here is 512 x 128 float64 = 512 KiB), and the Gumbel noise
    is refilled in place (5000 steps use several blocks)."""
    model = random_model("lstm", V=20, H=128, layers=2)
    vocab = Vocab([chr(ord("a") + i) for i in range(20)])
    steps = generate(model, vocab, 5000, np.random.default_rng(0), **options)
    for _ in range(20):  # warm up: buffers exist, NumPy caches are filled
        next(steps)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in steps:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - base < 64 * 1024


# -- the distribution ---------------------------------------------------------------------------------------------


def entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_temperature_to_zero_converges_to_greedy_distribution():
    logits = np.random.default_rng(0).normal(size=(5, 30)) * 3
    top = [next_distribution(logits, t).max(axis=1) for t in (1.0, 0.3, 0.1, 0.01)]
    assert all(np.all(a < b) for a, b in zip(top, top[1:], strict=False))  # mass flows to the argmax
    p = next_distribution(logits, 1e-300)  # no inf - inf, no NaN
    np.testing.assert_array_equal(p, np.eye(30)[logits.argmax(axis=1)])


def test_temperature_to_zero_samples_the_greedy_text(prose):
    ck = checkpoint.load(prose)
    greedy = sample_text(ck.model, ck.vocab, 150, np.random.default_rng(0), prime="the ", greedy=True)
    for seed in range(3):
        cold = sample_text(ck.model, ck.vocab, 150, np.random.default_rng(seed), prime="the ", temperature=1e-4)
        assert cold == greedy
    warm = sample_text(ck.model, ck.vocab, 150, np.random.default_rng(0), prime="the ", temperature=1.0)
    assert warm != greedy


def test_higher_temperature_raises_entropy(prose):
    logits = np.random.default_rng(1).normal(size=(4, 40)) * 2
    assert [entropy(next_distribution(logits[:1], t)) for t in (0.5, 1, 2)] == sorted(
        entropy(next_distribution(logits[:1], t)) for t in (0.5, 1, 2))
    ck = checkpoint.load(prose)

    def text_entropy(temperature):
        text = sample_text(ck.model, ck.vocab, 3000, np.random.default_rng(7), temperature=temperature)
        counts = np.array(list(Counter(text).values()), float)
        return entropy(counts / counts.sum())

    low, mid, high = text_entropy(0.5), text_entropy(1.0), text_entropy(2.0)
    assert low < mid < high
    assert high - low > 0.3


def test_top_k_never_emits_a_character_outside_the_k_most_likely():
    model, k = random_model(V=11, H=8), 3
    for top_k, expect_outside in ((k, False), (None, True)):
        steps = generate(model, VOCAB, 300, np.random.default_rng(0), temperature=5.0, top_k=top_k, num_samples=4)
        logits, state = prime_state(model, VOCAB, "", 4)
        follower = Stepper(model, state)  # recomputes the logits each draw was made from
        outside = 0
        for idx in steps:
            allowed = np.argsort(-logits, axis=1)[:, :k]
            outside += sum(idx[n] not in allowed[n] for n in range(4))
            logits = follower.step(idx).copy()
        assert (outside > 0) == expect_outside  # hot sampling does leave the top 3 unless top-k stops it


def test_top_k_keeps_exactly_k_and_renormalises():
    logits = np.array([[0.0, 3.0, 1.0, 2.0, -1.0]])
    p = next_distribution(logits, top_k=2)
    assert np.count_nonzero(p) == 2 and p[0, 1] > p[0, 3] > 0 and p.sum() == pytest.approx(1)
    np.testing.assert_allclose(next_distribution(logits, top_k=99), next_distribution(logits))


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]]))
    np.testing.assert_allclose(next_distribution(logits, top_p=0.7), [[0, 0.625, 0, 0.375]])
    np.testing.assert_allclose(next_distribution(logits, top_p=0.5), [[0, 1, 0, 0]])  # 0.5 already reaches 0.5
    np.testing.assert_allclose(next_distribution(logits, top_p=0.81), [[0, 0.5, 0.15, 0.3]] / np.float64(0.95))
    np.testing.assert_allclose(next_distribution(logits, top_p=1.0), [[0.05, 0.5, 0.15, 0.3]])


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("top_p", [None, 0.9999], ids=["gumbel", "cdf"])  # 0.9999 cuts nothing: same distribution
def test_draws_follow_the_distribution(temperature, top_p):
    logits = np.log(np.maximum([[0.1, 0.0, 0.6, 0.3]], 1e-300))
    p_true = next_distribution(logits, temperature)[0]
    pick = Picker(20000, 4, np.random.default_rng(0), temperature, top_p=top_p)
    assert (pick.noise is None) == (top_p is not None)
    idx = pick(np.tile(logits, (20000, 1)))
    freq = np.bincount(idx, minlength=4) / 20000
    assert freq[1] == 0
    np.testing.assert_allclose(freq, p_true, atol=0.015)


def test_gumbel_draws_over_many_blocks_follow_the_distribution():
    logits = np.array([[1.0, 0.0, -1.0, 2.0, 0.5]], np.float32)
    pick = Picker(1, 5, np.random.default_rng(3), temperature=0.8)
    draws = np.array([pick(logits)[0] for _ in range(30000)])  # about 4 blocks of noise
    assert len(pick.noise) * 3 < 30000
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / 30000, next_distribution(logits, 0.8)[0],
                               atol=0.01)


def test_a_longer_sample_starts_with_the_shorter_one(prose):
    ck = checkpoint.load(prose)
    short = sample_text(ck.model, ck.vocab, 100, np.random.default_rng(5), temperature=0.9)
    long = sample_text(ck.model, ck.vocab, 3000, np.random.default_rng(5), temperature=0.9)
    assert long.startswith(short) and len(long) == 3000 and len(set(long)) > 10



def test_a_sample_stops_when_asked(prose):
    """Training's samples end at a Ctrl-C: stop() is asked after every character."""
    ck = checkpoint.load(prose)
    asked = []
    text = sample_text(ck.model, ck.vocab, 500, np.random.default_rng(5), prime="ab",
                       stop=lambda: asked.append(1) or len(asked) > 7)
    whole = sample_text(ck.model, ck.vocab, 500, np.random.default_rng(5), prime="ab")
    assert text == whole[: len(text)] and len(text) == len("ab") + 7

@pytest.mark.parametrize("bad", [dict(temperature=0), dict(temperature=-1), dict(temperature=math.nan),
                                 dict(top_k=0), dict(top_p=0), dict(top_p=1.5), dict(num_samples=0)])
def test_bad_options_are_refused(bad):
    with pytest.raises(CharrnnError):
        generate(random_model(), VOCAB, 5, np.random.default_rng(0), **bad)


# -- priming ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1024, 7])
def test_prime_state_equals_feeding_the_prime_step_by_step(chunk, monkeypatch):
    monkeypatch.setattr(charrnn.core.sample, "PRIME_CHUNK", chunk)  # 7: the prime spans several forward calls
    model, prime = random_model("lstm"), "abcjihgfe\nbadcafe\nhead"
    logits, state = prime_state(model, VOCAB, prime, num_samples=3)
    stepper = Stepper(model, model.initial_state(1))
    ref_state = model.initial_state(1)
    for i in VOCAB.encode(prime):
        by_stepper = stepper.step(np.array([i])).copy()
        by_model, ref_state, _ = model.forward(np.array([[i]]), ref_state)  # the chunk path at T = 1
    for n in range(3):  # the first generated character is conditioned on the whole prime
        np.testing.assert_allclose(logits[n], by_stepper[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(logits[n], by_model[0], rtol=1e-12, atol=1e-12)
    for s, a, b in zip(state, stepper.state, ref_state, strict=True):
        assert s.shape == (2, 3, 8)
        np.testing.assert_allclose(s, np.repeat(a, 3, axis=1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s, np.repeat(b, 3, axis=1), rtol=1e-12, atol=1e-12)


def test_every_prime_character_counts():
    model = random_model("gru")
    first = prime_state(model, VOCAB, "abcdefghij")[0]
    changed = prime_state(model, VOCAB, "bbcdefghij")[0]  # only the first character differs
    assert not np.allclose(first, changed)
    text = sample_text(model, VOCAB, 1, np.random.default_rng(0), prime="abcdefghij", greedy=True)
    assert text == "abcdefghij" + VOCAB.chars[int(first.argmax())]


def test_prime_with_unknown_characters_names_them():
    with pytest.raises(CharrnnError, match=r"2 character\(s\) outside.*'X' \(U\+0058\).*'é' \(U\+00E9\)"):
        generate(random_model(), VOCAB, 5, np.random.default_rng(0), prime="abXcéX")


# -- the abc model, stop strings, batches ----------------------------------------------------------------------------


def test_a_model_trained_on_abc_samples_the_pattern(abc):
    ck = checkpoint.load(abc)
    assert sample_text(ck.model, ck.vocab, 60, np.random.default_rng(0), prime="a", greedy=True) == ("abc" * 21)[:61]
    for seed in range(3):
        text = sample_text(ck.model, ck.vocab, 60, np.random.default_rng(seed), prime="b", temperature=0.25)
        assert text == ("bca" * 21)[:61]


def pieces(ck, **options):
    return list(stream(ck.model, ck.vocab, options.pop("length", 30), np.random.default_rng(0), **options))


def test_stop_at_ends_a_sample_right_after_the_string(abc):
    ck = checkpoint.load(abc)
    assert "".join(p for _, p in pieces(ck, prime="a", stop_at="ca", greedy=True)) == "abca"
    # a match may start in the prime ("c" + generated "a") ...
    assert "".join(p for _, p in pieces(ck, prime="abc", stop_at="ca", greedy=True)) == "abca"
    # ... but must end in generated text
    assert "".join(p for _, p in pieces(ck, prime="bca", stop_at="ca", greedy=True)) == "bcabca"
    with pytest.raises(CharrnnError, match="never"):
        pieces(ck, stop_at="x")


def test_samples_stream_in_order_each_complete_before_the_next():
    model = random_model()
    N, length, stop = 5, 80, "a"
    out = {}
    order = list(stream(model, VOCAB, length, np.random.default_rng(3), prime="jj", stop_at=stop, num_samples=N,
                        temperature=2.0))
    for k, piece in order:
        out.setdefault(k, []).append(piece)
    assert [k for k, _ in order] == sorted(k for k, _ in order)  # never goes back to an earlier sample
    assert list(out) == list(range(N))
    # the same draws, without the interleaving: each sample ends right after its first "a"
    steps = np.stack(list(generate(model, VOCAB, length, np.random.default_rng(3), prime="jj", num_samples=N,
                                   temperature=2.0)))
    for k in range(N):
        full = "jj" + VOCAB.decode(steps[:, k])
        expected = full[: full.index("a", 2) + 1] if "a" in full[2:] else full
        assert "".join(out[k]) == expected
    assert all(len(p) <= 1 for p in out[0][1:])  # the first sample streams character by character


def test_greedy_batch_gives_identical_samples(abc):
    ck = checkpoint.load(abc)
    texts = {}
    for k, piece in pieces(ck, prime="c", greedy=True, num_samples=3, length=10):
        texts[k] = texts.get(k, "") + piece
    assert texts == {0: "cabcabcabca", 1: "cabcabcabca", 2: "cabcabcabca"}


# -- the command ------------------------------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_prints_the_prime_and_the_text(abc):
    result = run("sample", abc, "--greedy", "-n", "11", "-p", "ab")
    assert result.exit_code == 0
    assert result.stdout == "abcabcabcabca\n"  # prime included, one closing newline


def test_cli_prime_understands_escapes_as_stop_at_does(prose):
    """-p 'heron.\\nthe' primes with a newline in it, as --stop-at '\\n' stops at one."""
    escaped = run("sample", prose, "--greedy", "-n", "20", "-p", "heron.\\nthe")
    assert escaped.exit_code == 0 and escaped.stdout.startswith("heron.\nthe")
    assert escaped.stdout == run("sample", prose, "--greedy", "-n", "20", "-p", "heron.\nthe").stdout


def test_cli_same_seed_same_text(prose):
    first = run("sample", prose, "--seed", "5", "-n", "200", "-t", "0.9", "--top-k", "10")
    again = run("sample", prose, "--seed", "5", "-n", "200", "-t", "0.9", "--top-k", "10")
    other = run("sample", prose, "--seed", "6", "-n", "200", "-t", "0.9", "--top-k", "10")
    assert first.exit_code == 0 and first.stdout == again.stdout != other.stdout
    ck = checkpoint.load(prose)
    direct = sample_text(ck.model, ck.vocab, 200, np.random.default_rng(5), temperature=0.9, top_k=10)
    assert first.stdout.rstrip("\n") == direct.rstrip("\n")


def test_cli_num_samples_are_separated_by_a_rule(abc):
    result = run("sample", abc, "--greedy", "-N", "3", "-p", "a", "--stop-at", "c")
    assert result.stdout == f"abc\n{SEPARATOR}\nabc\n{SEPARATOR}\nabc\n"


def test_cli_stop_at_understands_escapes(prose):
    result = run("sample", prose, "--seed", "1", "-n", "2000", "--stop-at", "\\n")
    assert result.exit_code == 0
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1


def test_cli_default_checkpoint_prefers_best(abc, prose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = run("sample", "-n", "5")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert "checkpoints/best.npz" in missing.stderr and "charrnn train" in missing.stderr
    assert "Traceback" not in missing.output
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(prose, tmp_path / "checkpoints" / "latest.npz")
    assert run("sample", "--greedy", "-n", "5", "-p", "the").stdout == run(
        "sample", prose, "--greedy", "-n", "5", "-p", "the").stdout
    shutil.copy(abc, tmp_path / "checkpoints" / "best.npz")
    assert run("sample", "--greedy", "-n", "5", "-p", "a").stdout == "abcabc\n"


def test_cli_checkpoint_may_be_a_directory_train_wrote(abc, prose, tmp_path):
    """`charrnn train --out DIR`, then `charrnn sample DIR`: its best.npz, else its latest.npz."""
    out = tmp_path / "run"
    out.mkdir()
    empty = run("sample", out, "-n", "5")
    assert empty.exit_code == 1 and empty.stdout == "" and "Traceback" not in empty.output
    assert "no best.npz or latest.npz" in empty.stderr and len(empty.stderr.strip().splitlines()) == 1
    shutil.copy(prose, out / "latest.npz")
    assert run("sample", out, "--greedy", "-n", "5", "-p", "the").stdout == run(
        "sample", prose, "--greedy", "-n", "5", "-p", "the").stdout
    shutil.copy(abc, out / "best.npz")
    assert run("sample", out, "--greedy", "-n", "5", "-p", "a").stdout == "abcabc\n"


@pytest.mark.parametrize("temp", ["0", "-1", "-0.5", "nan", "inf", "warm"])
def test_cli_bad_temperature_is_a_usage_error(abc, temp):
    result = run("sample", abc, "--temp", temp)
    assert result.exit_code == 2 and "--temp" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("args", [["--top-k", "0"], ["--top-p", "0"], ["--top-p", "1.1"], ["-n", "-1"],
                                  ["-N", "0"], ["--seed", "-3"], ["--stop-at", ""]])
def test_cli_other_bad_options_are_usage_errors(abc, args):
    assert run("sample", abc, *args).exit_code == 2


def test_cli_prime_outside_vocabulary(abc):
    result = run("sample", abc, "-p", "abx€")
    assert result.exit_code == 1 and result.stdout == ""  # nothing printed before the error
    assert "'x' (U+0078)" in result.stderr and "'€' (U+20AC)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def damaged_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    """A truncated checkpoint, a foreign .npz and an .npz holding a pickle."""
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"format": "charrnn-checkpoint"}], dtype=object))
    return {"damaged or truncated": truncated, "not a charrnn checkpoint": foreign, "pickled": pickled,
            "does not exist": tmp_path / "missing.npz"}


def test_cli_refuses_bad_checkpoint_files(abc, tmp_path):
    for message, path in damaged_files(tmp_path, abc).items():
        result = run("sample", path, "-n", "5")
        assert result.exit_code == 1, path
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


# -- the installed entry point ------------------------------------------------------------------------------------


def entry_point() -> str:
    found = Path(sys.executable).parent / "charrnn"
    return str(found) if found.exists() else shutil.which("charrnn")


def test_entry_point_streams_and_survives_a_closed_pipe(prose):
    """`charrnn sample | head -c 100`: text arrives while sampling goes on, and closing the pipe early ends the
    process quietly with status 0."""
    proc = subprocess.Popen([entry_point(), "sample", str(prose), "-n", "10000000", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got, deadline = b"", time.monotonic() + 20
        while len(got) < 100 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1)[0]:
                got += proc.stdout.read1(100 - len(got))
        assert len(got) == 100  # 10 million characters would take minutes: the first 100 were streamed
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert "Traceback" not in err and "Error" not in err and err == ""


def test_entry_point_output_equals_the_library(abc):
    done = subprocess.run([entry_point(), "sample", str(abc), "-p", "b", "-n", "40", "--seed", "2", "-t", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == ("bca" * 14)[:41] + "\n"
