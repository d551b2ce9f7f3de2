"""Beam search: width 1 is greedy decoding, a wider beam never ends below it, an exhaustive beam finds the best
text, stop strings and length normalisation; and `charrnn sample --beam`, `--length-norm`, `--prime-file`."""

import itertools
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from models import random_model

from charrnn.cli.commands import main
from charrnn.core.beam import beam_search
from charrnn.core.logprob import log_softmax
from charrnn.core.model import Model, ModelConfig
from charrnn.core.sample import prime_state, sample_text
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text

PROSE = ("the heron stood in the reeds and the miller kept a clock. every hour the clock struck and the heron "
         "lifted one leg. why do you listen to that box, said a frog. because it knows the hour, said the heron.\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A toy LSTM trained on PROSE; returns the path of its checkpoint."""
    out = tmp_path_factory.mktemp("beam")
    corpus = corpus_from_text(PROSE * 8)
    cfg = TrainConfig(seq_len=16, batch_size=4, steps=150, eval_every=150, save_every=150, lr=1e-2, seed=0)
    Trainer(corpus, ModelConfig(vocab_size=len(corpus.vocab), hidden=32, layers=1), cfg, out).run()
    return out / "latest.npz"


def in_float64(model: Model) -> Model:
    """The same model in float64: log-probabilities compared across beam widths must not differ by rounding."""
    return Model(ModelConfig(**{**model.cfg.to_dict(), "dtype": "float64"}),
                 {k: v.astype(np.float64) for k, v in model.params.items()})


def log_prob(model: Model, vocab: Vocab, prime: str, idx: np.ndarray) -> float:
    """log p(idx | prime) by one forward pass, independently of the search."""
    logits, state = prime_state(model, vocab, prime)
    if len(idx) > 1:
        more, _, _ = model.forward(np.asarray(idx[None, :-1]), state)
        logits = np.concatenate([logits, more])
    return float(log_softmax(logits[: len(idx)])[np.arange(len(idx)), idx].sum())


SMALL = Vocab("\nabcde")


@pytest.mark.parametrize("prime", ["", "the ", "a frog said"])
@pytest.mark.parametrize("stop_at", [None, ".", "heron"])
def test_width_one_is_greedy_decoding(trained, prime, stop_at):
    ck = checkpoint.load(trained)
    greedy = sample_text(ck.model, ck.vocab, 80, np.random.default_rng(0), prime=prime, stop_at=stop_at, greedy=True)
    found = beam_search(ck.model, ck.vocab, 80, 1, prime, stop_at)
    assert prime + ck.vocab.decode(found.indices) == greedy


def test_a_wider_beam_never_ends_below_greedy_on_a_trained_model(trained):
    ck = checkpoint.load(trained)
    model = in_float64(ck.model)
    rng = np.random.default_rng(0)
    better = 0
    for _ in range(25):
        at = int(rng.integers(0, len(PROSE) - 12))
        prime, length = PROSE[at : at + int(rng.integers(0, 12))], int(rng.integers(5, 40))
        one = beam_search(model, ck.vocab, length, 1, prime)
        for width in (2, 3, 5, 8):
            found = beam_search(model, ck.vocab, length, width, prime)
            assert len(found.indices) == length
            assert found.log_prob >= one.log_prob - 1e-9  # the same text may differ in the last bit across batches
            assert log_prob(model, ck.vocab, prime, found.indices) == pytest.approx(found.log_prob, abs=1e-9)
            better += found.log_prob > one.log_prob + 1e-9
    assert better > 0  # the search does find likelier texts than greedy decoding


def test_a_wider_beam_never_ends_below_greedy_where_plain_beam_search_would():
    """Plain beam search, which may prune the greedy prefix, ends below greedy decoding here for seed 32's LSTM at
    width 2 (as it does on the trained model above); the search here keeps the greedy path."""
    for seed, cell in itertools.product(range(40), ("lstm", "gru", "rnn")):
        model = random_model(cell, V=6, seed=seed, scale=1.5)
        one = beam_search(model, SMALL, 12, 1, "ab")
        for width in (2, 3, 4):
            assert beam_search(model, SMALL, 12, width, "ab").log_prob >= one.log_prob - 1e-9, (seed, cell, width)


def first_stop(text: str, stop_at: str | None, after: int) -> int | None:
    """Where the first match of stop_at that ends past `after` ends, or None."""
    ends = [i + len(stop_at) for i in range(len(text)) if stop_at and text.startswith(stop_at, i)]
    return next((e for e in ends if e > after), None)


def all_texts(model, vocab, prime, length, stop_at):
    """Every complete text by brute force: each ends at its first stop_at or has `length` characters.
    Returns [(indices, log-probability)]."""
    texts = []
    for n in range(1, length + 1):
        for idx in itertools.product(range(len(vocab)), repeat=n):
            end = first_stop(prime + vocab.decode(idx), stop_at, len(prime))
            if end == len(prime) + n or (end is None and n == length):
                texts.append((np.array(idx), log_prob(model, vocab, prime, np.array(idx))))
    return texts


@pytest.mark.parametrize("length_norm", [False, True])
@pytest.mark.parametrize("stop_at", [None, "a", "cb"])
def test_an_exhaustive_beam_finds_the_best_text(length_norm, stop_at):
    model = random_model("lstm", V=4, H=6, seed=3, scale=1.5)
    vocab = Vocab("abcd")
    texts = all_texts(model, vocab, "b", 4, stop_at)
    key = (lambda t: t[1] / len(t[0])) if length_norm else (lambda t: t[1])
    best = max(texts, key=key)
    found = beam_search(model, vocab, 4, 4**4, "b", stop_at, length_norm)
    np.testing.assert_array_equal(found.indices, best[0])
    assert found.log_prob == pytest.approx(best[1], abs=1e-9)


def test_stop_at_ends_the_text_and_may_start_in_the_prime(trained):
    ck = checkpoint.load(trained)
    for stop_at in (".", "the", "n s"):
        text = "said the" + ck.vocab.decode(beam_search(ck.model, ck.vocab, 300, 4, "said the", stop_at).indices)
        assert first_stop(text, stop_at, len("said the")) == len(text)
    assert ck.vocab.decode(beam_search(ck.model, ck.vocab, 50, 3, "said th", "the").indices) == "e"


def test_search_is_deterministic_and_refuses_what_cannot_work(trained):
    ck = checkpoint.load(trained)
    a, b = (beam_search(ck.model, ck.vocab, 60, 5, "the ") for _ in range(2))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert len(beam_search(ck.model, ck.vocab, 0, 3, "the").indices) == 0
    for args, fragment in [((60, 0, "the"), "width"), ((60, 2, "the", "Q"), "never"), ((60, 2, "Qx"), "prime")]:
        with pytest.raises(CharrnnError, match=fragment):
            beam_search(ck.model, ck.vocab, *args)


def test_cli_beam_prints_the_prime_and_the_best_text(trained, tmp_path):
    ck = checkpoint.load(trained)
    found = beam_search(ck.model, ck.vocab, 40, 4, "the ", ".", length_norm=True)
    args = ["sample", str(trained), "--beam", "4", "--length-norm", "-n", "40", "--stop-at", "."]
    result = CliRunner().invoke(main, [*args, "--prime", "the "])
    assert result.exit_code == 0, result.output
    assert result.stdout == "the " + ck.vocab.decode(found.indices) + "\n"
    prime = tmp_path / "prime.txt"
    prime.write_text("the ", encoding="utf-8")
    assert CliRunner().invoke(main, [*args, "--prime-file", str(prime)]).stdout == result.stdout
    assert CliRunner().invoke(main, [*args, "--prime-file", "-"], input="the ").stdout == result.stdout


def test_cli_prime_file_takes_a_prime_too_long_for_a_command_line(trained, tmp_path):
    prime = tmp_path / "long.txt"
    prime.write_text(PROSE * 20, encoding="utf-8")  # ends in a newline, which is part of the prime
    result = CliRunner().invoke(main, ["sample", str(trained), "--prime-file", str(prime), "--greedy", "-n", "5"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(PROSE * 20) and len(result.stdout) == len(PROSE) * 20 + 5 + 1


@pytest.mark.parametrize(("args", "fragment"), [
    (["--beam", "0"], "--beam"),
    (["--length-norm"], "--beam N"),
    (["--beam", "2", "--temp", "0.5"], "--temp"),
    (["--beam", "2", "--greedy"], "--greedy"),
    (["--beam", "2", "-N", "3"], "--num-samples"),
    (["--beam", "2", "--seed", "1"], "--seed"),
    (["--prime", "a", "--prime-file", "-"], "not both"),
    (["--prime-file", "missing.txt"], None),
])
def test_cli_bad_combinations_are_usage_errors(trained, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["sample", str(trained), *args])
    if fragment is None:  # a missing file is an error of the input: one line, exit 1
        assert result.exit_code == 1 and result.stderr == f"Error: cannot read {args[-1]}: No such file or directory\n"
    else:
        assert result.exit_code == 2 and fragment in result.stderr and "Traceback" not in result.output
