"""The metadata schema (charrnn.store.schema): it names every setting there is, accepts everything a run writes,
keeps a whole run's record under the size cap, and refuses each wrong kind of value in one line naming where."""

import json
import math
from dataclasses import fields

import pytest

from charrnn.core.model import ModelConfig
from charrnn.runs.record import Progress
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store import checkpoint, schema
from charrnn.store.corpus import corpus_from_text
from charrnn.store.schema import MAX_HISTORY, Bool, Float, Int, Invalid, ListOf, Maybe, Record, Text, as_text


def test_every_setting_has_a_schema_entry():
    """A new TrainConfig or ModelConfig field must be declared in the schema, or its checkpoints would be refused."""
    assert {f.name for f in fields(TrainConfig)} == set(schema.TRAIN_FIELDS)
    assert {f.name for f in fields(ModelConfig)} == set(schema.MODEL.fields)


def test_a_runs_checkpoint_fits_the_schema_and_its_whole_history_fits_the_cap(tmp_path):
    corpus = corpus_from_text("abcdefgh\n" * 200, "letters.txt")
    cfg = TrainConfig(seq_len=8, batch_size=4, steps=4, eval_every=1, save_every=4, seed=1)
    Trainer(corpus, ModelConfig(vocab_size=len(corpus.vocab), hidden=4, layers=1), cfg, tmp_path).run()
    meta = checkpoint.read_meta(tmp_path / "latest.npz")
    schema.META.check(meta)  # and read_meta checked it already
    # the longest record a run can keep, with the longest numbers a row can have, stays under the cap
    row = {"step": 2**63, "epoch": 1 / 3 + 1e6, "train_loss": math.pi / 7, "val_loss": math.e / 11,
           "chars_per_s": 123456.789012345, "elapsed": 987654.321098765}
    meta["history"] = [row] * MAX_HISTORY
    meta["corpus"]["name"] = "x" * 255
    assert len(json.dumps(meta, sort_keys=True).encode()) < checkpoint.MAX_META


def test_progress_keeps_at_most_max_history_rows_and_always_the_newest():
    progress = Progress(chunks=10)
    for step in range(3 * MAX_HISTORY):
        progress.step = step
        progress.record({"step": step, "val_loss": 1.0})
        assert len(progress.history) <= MAX_HISTORY and progress.history[-1]["step"] == step
    steps = [row["step"] for row in progress.history]
    assert steps == sorted(steps) and steps[0] < MAX_HISTORY  # the whole run, thinned


@pytest.mark.parametrize("kind, value, problem", [
    (Int(0), True, "must be an integer from 0 to 9,223,372,036,854,775,807, not true"),
    (Int(0), 2**63, "must be an integer from 0 to"),  # found by the fuzzer: a 400-digit warmup overflowed
    (Int(0), 1.0, "must be an integer"),
    (Int(0, 1), 2, "from 0 to 1"),
    (Float(0, 1, hi_open=True), 1, "must be in [0, 1)"),
    (Float(), math.nan, "must be a finite number"),
    (Float(0, 1e300), 10**400, "must be in [0, 1e+300]"),  # found by the fuzzer: float() of it overflows
    (Float(), "1", "must be a number"),
    (Text(4), "abcde", "at most 4 characters"),
    (Text(), "a\ud800", "lone surrogate"),
    (Text(pattern="[0-9a-f]{4}"), "abcz", "not of the right form"),
    (Bool(), 0, "must be true or false"),
    (ListOf(Int(0), 2), [1, 2, 3], "at most 2 entries"),
    (ListOf(Int(0), 5), [1, -1], "[1] must be an integer"),
    (Record({"a": Int(0)}), {"a": 1, "b": 2}, "has a field charrnn does not know: 'b'"),
    (Record({"a": Int(0)}), {}, "a is missing"),
    (Record({"a": Maybe(Int(0))}), {"a": "x"}, "a must be an integer"),
])
def test_each_kind_refuses_what_does_not_fit_naming_where(kind, value, problem):
    with pytest.raises(Invalid) as refusal:
        kind.check(value, "field")
    assert problem in str(refusal.value) and str(refusal.value).startswith("field")
    assert len(str(refusal.value)) < 200  # shown values are cut short


def test_values_that_fit_pass():
    Record({"a": Maybe(Int(0)), "b": Float(allow_nonfinite=True)}, frozenset({"a"})).check({"b": math.nan}, "x")
    ListOf(Text(3), 2).check(["abc", ""], "x")


def test_file_names_are_kept_as_text_utf8_can_write():
    """A name with bytes that are not UTF-8 (surrogate escapes in Python) becomes U+FFFD, which the schema takes."""
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    Text().check(as_text(name), "corpus.name")
    assert as_text(name) == "caf\ufffd.txt" and as_text("café.txt") == "café.txt"
