"""`charrnn eval` (loss, bits/char, perplexity; unknown characters skipped) and `charrnn export` (PyTorch
state_dict as a plain .npz), without PyTorch: tests/test_interop_torch.py checks the tensors against torch."""

import errno
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import charrnn.runs.evaluate
import charrnn.store.cache
import charrnn.store.corpus
from charrnn.cli.commands import main
from charrnn.core.model import Model, ModelConfig
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.runs.evaluate import VAL_STREAMS, evaluate_file, known_text
from charrnn.runs.train import TrainConfig, Trainer, validation_loss
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text
from charrnn.store.export import from_torch, to_torch

TEXT = "the cat sat on the mat. the dog sat on the log.\nthe cat and the dog.\n" * 12


@pytest.fixture(scope="module")
def ck_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck")
    corpus = corpus_from_text(TEXT)
    cfg = TrainConfig(seq_len=12, batch_size=5, steps=25, eval_every=25, save_every=25, lr=1e-2, seed=1)
    Trainer(corpus, ModelConfig(vocab_size=len(corpus.vocab), cell="lstm", hidden=10, layers=2), cfg, out).run()
    return out / "latest.npz"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -- eval ---------------------------------------------------------------------------------------------------------


def test_eval_equals_validation_with_carried_state(ck_path, tmp_path):
    ck = checkpoint.load(ck_path)
    text = tmp_path / "t.txt"
    text.write_text(TEXT[:500], encoding="utf-8")
    result = evaluate_file(ck.model, ck.vocab, text, batch_size=3, seq_len=7)
    expected = validation_loss(ck.model, ck.vocab.encode(TEXT[:500]), 3, 7)
    assert result["loss"] == pytest.approx(expected, rel=1e-12)
    assert result["bits_per_char"] == pytest.approx(expected / math.log(2))
    assert result["perplexity"] == pytest.approx(math.exp(expected))
    assert (result["characters"], result["scored"], result["skipped"]) == (500, 3 * (499 // 3), 0)
    # carried state: one long stream gives a different (better-informed) loss than many short ones
    assert evaluate_file(ck.model, ck.vocab, text, batch_size=1, seq_len=7)["loss"] != pytest.approx(result["loss"])
    # ... but the chunk length only moves where the state is handed over, not the result
    assert evaluate_file(ck.model, ck.vocab, text, batch_size=3, seq_len=50)["loss"] == pytest.approx(
        result["loss"], rel=1e-5)


def test_unknown_characters_are_counted_reported_and_skipped(ck_path, tmp_path):
    ck = checkpoint.load(ck_path)
    clean, dirty = tmp_path / "clean.txt", tmp_path / "dirty.txt"
    clean.write_text(TEXT[:300], encoding="utf-8")
    dirty.write_text("☃" + TEXT[:100] + "ÉÉ☃" + TEXT[100:300] + "Q☃", encoding="utf-8")
    data, read, unknown = known_text(dirty, ck.vocab)
    assert ck.vocab.decode(data) == TEXT[:300] and read == 306
    assert unknown == [{"char": "☃", "code_point": "U+2603", "count": 3},
                       {"char": "É", "code_point": "U+00C9", "count": 2},
                       {"char": "Q", "code_point": "U+0051", "count": 1}]
    got = evaluate_file(ck.model, ck.vocab, dirty, batch_size=4, seq_len=16)
    assert got["skipped"] == 6
    assert got["loss"] == evaluate_file(ck.model, ck.vocab, clean, batch_size=4, seq_len=16)["loss"]


@pytest.mark.parametrize("block", [7, 1 << 20])
def test_known_text_of_a_cached_file_reads_it_in_blocks_without_a_copy(ck_path, tmp_path, monkeypatch, block):
    """A big file is counted and compacted block by block (bincount of it all cast it to 8 bytes a character,
    the remap table added 8 more: a 200 MB file peaked at 3.5 GB); one without unknowns is not copied at all."""
    monkeypatch.setattr(charrnn.store.corpus, "CACHE_MIN_BYTES", 100)
    monkeypatch.setattr(charrnn.runs.evaluate, "CACHE_MIN_BYTES", 100)
    monkeypatch.setattr(charrnn.runs.evaluate, "BLOCK", block)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ck = checkpoint.load(ck_path)
    clean, dirty = tmp_path / "clean.txt", tmp_path / "dirty.txt"
    clean.write_text("dog log. " * 30, encoding="utf-8")  # a subset of the model's characters: other indices
    pieces = ["☃" + TEXT[:100], "ÉÉ", TEXT[100:300], "Q☃☃"]
    dirty.write_text("".join(pieces), encoding="utf-8")
    for path in (clean, dirty):
        known_text(path, ck.vocab)  # writes the cache; the second read memory-maps it
    data, read, unknown = known_text(clean, ck.vocab)
    assert isinstance(data.base, np.memmap) and ck.vocab.decode(data) == "dog log. " * 30 and not unknown
    files = sorted(tmp_path.rglob("*"))
    data, read, unknown = known_text(dirty, ck.vocab)
    assert data.dtype == ck.vocab.dtype and ck.vocab.decode(data) == TEXT[:300] and read == 306
    assert [(u["char"], u["count"]) for u in unknown] == [("☃", 3), ("É", 2), ("Q", 1)]
    assert isinstance(data, np.memmap)  # the compacted copy is a nameless scratch file's pages, not memory
    assert sorted(tmp_path.rglob("*")) == files


def test_known_text_compacts_in_memory_where_no_scratch_file_fits(ck_path, tmp_path, monkeypatch):
    """A full disk (or no writable cache location) leaves the copy in memory: the scores do not change."""
    monkeypatch.setattr(charrnn.runs.evaluate, "CACHE_MIN_BYTES", 100)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def disk_full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(charrnn.store.cache.os, "posix_fallocate", disk_full)
    dirty = tmp_path / "dirty.txt"
    dirty.write_text("☃" + TEXT[:300] + "É", encoding="utf-8")
    vocab = checkpoint.load(ck_path).vocab
    data, read, unknown = known_text(dirty, vocab)
    assert not isinstance(data, np.memmap) and vocab.decode(data) == TEXT[:300] and len(unknown) == 2
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["dirty.txt"]


def test_cli_eval_json_and_defaults(ck_path, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT + "ü", encoding="utf-8")
    result = run("eval", ck_path, text, "--json")
    assert result.exit_code == 0
    got = json.loads(result.stdout)
    assert (got["batch_size"], got["seq_len"]) == (VAL_STREAMS, 12)  # validation's streams, the training T
    assert got["skipped"] == 1 and got["unknown"][0]["char"] == "ü" and got["checkpoint"] == str(ck_path)
    assert got["bits_per_char"] == pytest.approx(got["loss"] / math.log(2))
    assert got["perplexity"] == pytest.approx(math.exp(got["loss"]))
    ck = checkpoint.load(ck_path)
    direct = evaluate_file(ck.model, ck.vocab, text, batch_size=VAL_STREAMS, seq_len=12)
    assert got["loss"] == pytest.approx(direct["loss"], rel=1e-12)
    other = json.loads(run("eval", ck_path, text, "--json", "-B", "2", "-T", "9").stdout)
    assert (other["batch_size"], other["seq_len"]) == (2, 9)
    best = ck_path.parent / "best.npz"  # a directory train wrote stands for its best.npz
    by_dir = json.loads(run("eval", ck_path.parent, text, "--json").stdout)
    assert by_dir["checkpoint"] == str(best)
    assert by_dir["loss"] == json.loads(run("eval", best, text, "--json").stdout)["loss"]


def test_cli_eval_human_output(ck_path, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT[:200] + "\u200b", encoding="utf-8")
    out = run("eval", ck_path, text).stdout
    for expected in ("nats/char", "bits/char", "perplexity", "201 read", "scored", "1 outside the vocabulary",
                     "'\\u200b' (U+200B) ×1"):
        assert expected in out, expected


def test_cli_eval_reads_like_the_corpus_reader(ck_path, tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes(TEXT[:100].encode("latin-1") + b"\xe9")
    result = run("eval", ck_path, latin)
    assert result.exit_code == 1 and "not valid utf-8" in result.stderr and "byte offset 100" in result.stderr
    ok = json.loads(run("eval", ck_path, latin, "--encoding", "latin-1", "--json").stdout)
    assert ok["skipped"] == 1 and ok["unknown"][0]["char"] == "é"
    alien = tmp_path / "alien.txt"
    alien.write_text("ЖЖЖЖЖ", encoding="utf-8")
    result = run("eval", ck_path, alien)
    assert result.exit_code == 1 and "0 character(s) in the model's vocabulary" in result.stderr
    assert run("eval", ck_path, tmp_path / "missing.txt").exit_code == 1
    assert run("eval", ck_path, latin, "-B", "0").exit_code == 2


# -- export -------------------------------------------------------------------------------------------------------


def test_export_writes_exactly_the_state_dict(ck_path, tmp_path):
    out = tmp_path / "torch.npz"
    result = run("export", ck_path, out)
    assert result.exit_code == 0 and "torch.nn.LSTM(" in result.stdout
    ck = checkpoint.load(ck_path)
    with np.load(out, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert list(arrays) == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                            "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1", "rnn.bias_hh_l1",
                            "decoder.weight", "decoder.bias"]
    for key, a in arrays.items():
        np.testing.assert_array_equal(a, ck.model.params[key.removeprefix("rnn.")])
        assert a.dtype == np.float32
    with zipfile.ZipFile(out) as z:  # plain .npy members, nothing else
        assert sorted(z.namelist()) == sorted(f"{k}.npy" for k in arrays)
    assert [p.name for p in tmp_path.iterdir()] == ["torch.npz"]  # no temp file left behind


def test_export_round_trips_through_from_torch(ck_path, tmp_path):
    run("export", ck_path, tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        model = from_torch({k: z[k] for k in z.files})
    ck = checkpoint.load(ck_path)
    assert model.cfg == ModelConfig(**{**ck.model.cfg.to_dict(), "dropout": 0.0})
    x = ck.vocab.encode(TEXT[:60])[None]
    np.testing.assert_array_equal(model.forward(x, model.initial_state(1))[0],
                                  ck.model.forward(x, ck.model.initial_state(1))[0])


@pytest.mark.parametrize("options", [{"peephole": True}, {"coupled": True}])
def test_export_refuses_lstm_variants_pytorch_lacks(tmp_path, options):
    model = Model.create(ModelConfig(vocab_size=3, hidden=4, layers=1, **options), np.random.default_rng(0))
    checkpoint.save(tmp_path / "ck.npz", model, Vocab("abc"), {})
    result = run("export", tmp_path / "ck.npz", tmp_path / "out.npz")
    assert result.exit_code == 1 and "PyTorch" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.npz").exists()


def test_export_errors(ck_path, tmp_path):
    result = run("export", ck_path, tmp_path / "no" / "such" / "dir.npz")
    assert result.exit_code == 1 and "does not exist" in result.stderr
    copy = tmp_path / "ck.npz"
    copy.write_bytes(ck_path.read_bytes())
    before = copy.read_bytes()
    for force in ([], ["--force"]):
        result = run("export", copy, copy, *force)
        assert result.exit_code == 1 and "is a charrnn checkpoint, which export never replaces" in result.stderr
    assert copy.read_bytes() == before  # untouched
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(ck_path.read_bytes()[:1000])
    assert run("export", damaged, tmp_path / "x.npz").exit_code == 1
    result = run("export", tmp_path, tmp_path / "x.npz")  # a directory with no checkpoint in it
    assert result.exit_code == 1 and "no best.npz or latest.npz" in result.stderr
    assert run("export", ck_path.parent, tmp_path / "x.npz").exit_code == 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.update({"rnn.weight_ih_l0_reverse": t["rnn.weight_ih_l0"]}), "unexpected rnn.weight_ih_l0_reverse"),
    (lambda t: t.pop("rnn.bias_hh_l1"), "missing rnn.bias_hh_l1"),
    (lambda t: t.update({"decoder.bias": t["decoder.bias"][:-1]}), "decoder.bias has shape"),
    (lambda t: t.pop("rnn.weight_hh_l0"), "rnn.weight_hh_l0"),
    (lambda t: t.update({"rnn.weight_hh_l0": np.zeros((20, 10), np.float32)}), "not an LSTM, GRU or RNN"),
])
def test_from_torch_refuses_what_does_not_fit(ck_path, change, message):
    tensors = dict(to_torch(checkpoint.load(ck_path).model))
    change(tensors)
    with pytest.raises(CharrnnError, match=message):
        from_torch(tensors)
