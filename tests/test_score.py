"""`charrnn score`: records split from a stream, each scored from a fresh state in batches that equal scoring it
alone, --whole equal to one stream by hand, unknown characters skipped and named, text read strictly as it comes."""

import functools
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from models import random_model
from test_shards import least_streams

import charrnn.runs.score as score_module
import charrnn.store.textstream
from charrnn.cli.commands import main
from charrnn.core.logprob import log_softmax
from charrnn.core.model import LN2, Model, ModelConfig
from charrnn.core.sample import prime_state
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.fast import shards
from charrnn.runs.score import score_records, split_records, whole_text
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store.corpus import corpus_from_text
from charrnn.store.textstream import text_pieces

LINES = ["the cat sat on the mat", "a dog ran to the log", "the hen sat in the pen", "my fox is in a box",
         "the bat ate a gnat", "a pig in a wig"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A toy LSTM trained on LINES; returns the path of its checkpoint."""
    out = tmp_path_factory.mktemp("score")
    corpus = corpus_from_text("\n".join(LINES * 30) + "\n")
    cfg = TrainConfig(seq_len=32, batch_size=8, steps=150, eval_every=150, save_every=150, lr=1e-2, seed=0)
    Trainer(corpus, ModelConfig(vocab_size=len(corpus.vocab), hidden=32, layers=1), cfg, out).run()
    return out / "latest.npz"


VOCAB = Vocab("\nabcdefg")


def by_hand(model: Model, vocab: Vocab, text: str) -> np.ndarray:
    """Each character's surprisal in nats, reading text alone after a newline: one forward pass."""
    idx = vocab.encode(text)
    logits, state = prime_state(model, vocab, "")
    if len(idx) > 1:
        more, _, _ = model.forward(idx[None, :-1], state)
        logits = np.concatenate([logits, more])
    return -log_softmax(logits[: len(idx)])[np.arange(len(idx)), idx]


# -- records from a stream ----------------------------------------------------------------------------------------


@given(st.text(alphabet="ab\n|", max_size=40), st.sampled_from(["\n", "|", "||", "a|b"]),
       st.lists(st.integers(0, 40), max_size=6))
def test_split_records_is_str_split_whatever_the_pieces(text, sep, cuts):
    """A record or a separator may span pieces; text after the last separator is a record unless empty."""
    cuts = sorted(set(cuts))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    expected = text.split(sep)
    if expected[-1] == "":
        expected.pop()
    assert list(split_records(pieces, sep)) == expected


def test_text_is_read_strictly_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(charrnn.store.textstream, "BLOCK", 5)  # characters cut in two between blocks
    text = "héllo wörld 😀 «ok»\n" * 3
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # a byte-order mark is not text
    assert "".join(text_pieces(path)) == text
    assert "".join(text_pieces(io.BytesIO(text.encode("utf-16")), "utf-16")) == text
    path.write_bytes(b"\xef\xbb\xbfabc\xffdef")
    with pytest.raises(CharrnnError, match="not valid utf-8: invalid start byte at byte offset 6"):
        "".join(text_pieces(path))
    for encoding, fragment in (("nope", "unknown encoding"), ("rot13", "not a text encoding")):
        with pytest.raises(CharrnnError, match=fragment):
            next(text_pieces(path, encoding))
    with pytest.raises(CharrnnError, match="cannot read"):
        next(text_pieces(tmp_path / "missing.txt"))


# -- scoring ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True], ids=["one-process", "sharded"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_batched_records_score_as_each_alone(cell, sharded, monkeypatch):
    """Sorting, padding, batches, chunks and shards change nothing: STREAMS and CHUNK are made small so that the
    records fall into several batches of several chunks, and a block holds only some of them; sharded, each batch
    is split over two worker processes as on a 2-core machine."""
    if sharded:
        least_streams(monkeypatch)
        monkeypatch.setattr(score_module, "Sharded", functools.partial(shards.Sharded, cores=2))
    monkeypatch.setattr(score_module, "STREAMS", 3)
    monkeypatch.setattr(score_module, "CHUNK", 5)
    monkeypatch.setattr(score_module, "BLOCK_CHARS", 40)
    model = random_model(cell, V=8)
    rng = np.random.default_rng(0)
    records = ["".join(rng.choice(list("abcdefg"), size=n)) for n in rng.integers(0, 30, 17)]
    results = list(score_records(model, VOCAB, records, per_char=True))
    assert [r["record"] for r in results] == list(range(1, 18)) and [r["text"] for r in results] == records
    for r, text in zip(results, records, strict=True):
        alone = by_hand(model, VOCAB, text)
        assert r["chars"] == len(text) and r["nats"] == pytest.approx(alone.sum(), abs=1e-9)
        np.testing.assert_allclose(r["surprisal"], alone / LN2, atol=1e-4)
        if text:
            assert r["bits_per_char"] == pytest.approx(alone.mean() / LN2)
            assert r["perplexity"] == pytest.approx(np.exp(alone.mean()))
        else:
            assert r["bits_per_char"] is None and r["perplexity"] is None


def test_records_stream_out_before_the_input_ends(monkeypatch):
    monkeypatch.setattr(score_module, "BLOCK_CHARS", 100)

    def endless():
        for n in itertools.count():
            assert n < 1000, "read far past the first block"
            yield "abcdefg"[n % 7 :]

    firsts = list(itertools.islice(score_records(random_model(V=8), VOCAB, endless()), 20))
    assert [r["text"] for r in firsts[:2]] == ["abcdefg", "bcdefg"]


def test_unknown_characters_are_skipped_and_named():
    model = random_model(V=8)
    [r] = score_records(model, VOCAB, ["abXcYYd"])
    assert r["chars"] == 4 and r["skipped"] == 3
    assert r["unknown"] == [{"char": "Y", "code_point": "U+0059", "count": 2},
                            {"char": "X", "code_point": "U+0058", "count": 1}]
    assert r["nats"] == pytest.approx(by_hand(model, VOCAB, "abcd").sum())


def test_whole_text_is_one_stream_by_hand(monkeypatch):
    monkeypatch.setattr(score_module, "WHOLE_CHUNK", 7)  # the state carried across chunks and pieces
    model = random_model("gru", V=8)
    text = "abc\ndefg\n\nga" * 5
    pieces = [text[a : a + 11] for a in range(0, len(text), 11)]
    r = whole_text(model, VOCAB, [p.replace("d", "dZ") for p in pieces], per_char=True)
    alone = by_hand(model, VOCAB, text)
    assert r["chars"] == len(text) and r["nats"] == pytest.approx(alone.sum(), abs=1e-9)
    assert r["skipped"] == 5 and "text" not in r
    np.testing.assert_allclose(r["surprisal"], alone / LN2, atol=1e-4)


def test_training_lines_score_fewer_bits_than_the_same_lines_shuffled(trained):
    rng = np.random.default_rng(0)
    shuffled = ["".join(rng.permutation(list(line))) for line in LINES]
    out = CliRunner().invoke(main, ["score", str(trained)], input="\n".join(LINES + shuffled) + "\n")
    assert out.exit_code == 0, out.output
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == 2 * len(LINES)
    for real, mixed in zip(results[: len(LINES)], results[len(LINES) :], strict=True):
        assert real["bits_per_char"] < mixed["bits_per_char"] - 1, (real["text"], mixed["text"])


# -- the command --------------------------------------------------------------------------------------------------


def test_cli_reads_a_file_or_standard_input_and_writes_json_lines(trained, tmp_path):
    text = "the cat sat\n\nthe dog\n"
    path = tmp_path / "lines.txt"
    path.write_text(text, encoding="utf-8")
    from_file = CliRunner().invoke(main, ["score", str(trained), str(path), "--per-char"])
    from_stdin = CliRunner().invoke(main, ["score", str(trained), "-", "--per-char"], input=text)
    assert from_file.exit_code == 0 and from_file.stdout == from_stdin.stdout and from_file.stderr == ""
    rows = [json.loads(line) for line in from_file.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["the cat sat", "", "the dog"]
    assert [len(r["surprisal"]) for r in rows] == [11, 0, 7]
    paragraphs = CliRunner().invoke(main, ["score", str(trained), str(path), "--sep", "\\n\\n"])
    assert [json.loads(line)["text"] for line in paragraphs.stdout.splitlines()] == ["the cat sat", "the dog\n"]
    whole = json.loads(CliRunner().invoke(main, ["score", str(trained), str(path), "--whole"]).stdout)
    assert whole["file"] == str(path) and whole["chars"] == len(text)


def test_cli_names_what_it_skipped_on_stderr(trained):
    out = CliRunner().invoke(main, ["score", str(trained)], input="the cät\nsat ön it 😀\n")
    assert out.exit_code == 0
    assert [json.loads(line)["skipped"] for line in out.stdout.splitlines()] == [1, 2]
    assert out.stderr == ("charrnn: skipped 3 character(s) outside the model's vocabulary: 'ä' (U+00E4), "
                          "'ö' (U+00F6), '😀' (U+1F600)\n")


@pytest.mark.parametrize(("args", "stdin", "code", "fragment"), [
    (["--whole", "--sep", "x"], "", 2, "--sep"),
    (["--sep", ""], "", 2, "--sep"),
    (["missing.txt"], "", 1, "Error: cannot read missing.txt: No such file or directory"),
    ([], b"ok\n\xc3(\n", 1, "Error: standard input is not valid utf-8: invalid continuation byte at byte offset 3"),
    (["--encoding", "nope"], "", 1, "Error: unknown encoding 'nope'"),
])
def test_cli_bad_input_is_one_line_and_an_exit_code(trained, tmp_path, monkeypatch, args, stdin, code, fragment):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["score", str(trained), *args], input=stdin)
    assert out.exit_code == code and fragment in out.stderr and "Traceback" not in out.output, out.output
    if code == 1:
        assert out.stderr.count("\n") == 1
