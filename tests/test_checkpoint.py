"""Checkpoint files: round trip, atomic writes, and refusal of anything damaged, foreign or pickled."""

import json
import os
import stat

import numpy as np
import pytest

from charrnn.core.model import Model, ModelConfig
from charrnn.core.optim import make_optimizer
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.store import checkpoint

# What a training run records besides its model (runs.train.Trainer.save), for a checkpoint --resume can take
PROGRESS = {"step": 3, "epoch": 0, "chunk": 3, "epoch_progress": 0.3, "chars_seen": 48, "elapsed": 1.5}
RUN = {"train": {"optimizer": "adam", "batch_size": 3}, "progress": PROGRESS,
       "rng": np.random.default_rng(0).bit_generator.state,
       "corpus": {"name": "c.txt", "size": 12, "sha256": "0" * 64, "chars": 12, "train_chars": 11, "val_chars": 1}}


@pytest.fixture
def saved(tmp_path):
    vocab = Vocab.from_text("hello wörld\n")
    model = Model.create(ModelConfig(vocab_size=len(vocab), hidden=8, layers=2, cell="lstm"),
                         np.random.default_rng(0))
    optim = make_optimizer("adam", model.params)
    state = tuple(np.full(s.shape, 0.5, np.float32) for s in model.initial_state(3))
    path = tmp_path / "ck.npz"
    checkpoint.save(path, model, vocab, RUN, optim.state_dict(), state)
    return path, model, vocab, optim, state


def test_round_trip(saved):
    path, model, vocab, optim, state = saved
    ck = checkpoint.load(path, resume=True)
    assert ck.vocab == vocab and ck.model.cfg == model.cfg and ck.resumable
    for k, p in model.params.items():
        np.testing.assert_array_equal(ck.model.params[k], p)
        assert ck.model.params[k].dtype == np.float32
    assert set(ck.optim) == set(optim.state_dict())
    np.testing.assert_array_equal(ck.state[1], state[1])
    assert ck.meta["format"] == "charrnn-checkpoint" and ck.meta["version"] == 1
    assert ck.meta["progress"] == PROGRESS


def test_what_only_resume_needs_is_not_read_without_it(saved):
    ck = checkpoint.load(saved[0])
    assert ck.resumable and ck.optim == {} and ck.state == ()


def test_loads_without_pickle_and_stores_metadata_as_bytes(saved):
    path = saved[0]
    with np.load(path, allow_pickle=False) as z:
        assert z["meta"].dtype == np.uint8 and z["vocab"].dtype == np.int32
        assert all(z[k].dtype != object for k in z.files)
        json.loads(z["meta"].tobytes())


def rewrite(path, change):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(path, **arrays)


def set_meta(arrays, **fields):
    meta = {**json.loads(arrays["meta"].tobytes()), **fields}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


@pytest.mark.parametrize("damage, message", [
    (lambda a: a.pop("weight_hh_l1"), "missing parameter 'weight_hh_l1'"),
    (lambda a: a.update(weight_hh_l0=np.zeros((3, 3), np.float32)), "parameter 'weight_hh_l0'"),
    (lambda a: a.update(weight_hh_l0=a["weight_hh_l0"].astype(np.float64)), "expected float32"),
    (lambda a: a.pop("meta"), "no metadata"),
    (lambda a: a.update(meta=np.frombuffer(b"{not json", np.uint8)), "damaged metadata"),
    (lambda a: set_meta(a, format="something-else"), "not a charrnn checkpoint"),
    (lambda a: set_meta(a, version=99), "format version 99"),
    (lambda a: a.update(vocab=a["vocab"][:-1]), r"the vocabulary is int32\[9\], expected int32\[10\]"),
    (lambda a: a.update(extra=np.zeros(2)), "unexpected entries: 'extra'"),
    (lambda a: set_meta(a, model={"cell": "lstm"}), "metadata field model.vocab_size is missing"),
])
def test_refuses_inconsistent_checkpoints(saved, damage, message):
    path = saved[0]
    rewrite(path, damage)
    with pytest.raises(CharrnnError, match=message):
        checkpoint.load(path)


def test_refuses_truncated_files(saved):
    path = saved[0]
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(CharrnnError):
            checkpoint.load(path)


def test_refuses_pickles_foreign_files_and_missing_paths(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"evil": True}], dtype=object))
    with pytest.raises(CharrnnError, match="pickle"):
        checkpoint.load(pickled)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(CharrnnError, match="not a charrnn checkpoint"):
        checkpoint.load(foreign)
    bare = tmp_path / "bare.npy"
    np.save(bare, np.zeros(3))
    with pytest.raises(CharrnnError, match="not a charrnn checkpoint"):
        checkpoint.load(bare)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CharrnnError, match=r"not a charrnn checkpoint \(not an .npz file\)"):
        checkpoint.load(text)
    empty = tmp_path / "empty.npz"
    empty.touch()
    with pytest.raises(CharrnnError, match="is empty"):
        checkpoint.load(empty)
    with pytest.raises(CharrnnError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.npz")
    with pytest.raises(CharrnnError, match="directory"):
        checkpoint.load(tmp_path)


def test_failed_save_leaves_previous_file_and_no_temp(saved, monkeypatch):
    path, model, vocab, optim, state = saved
    before = path.read_bytes()

    def explode(f, **arrays):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", explode)
    with pytest.raises(CharrnnError, match="cannot write .*disk full"):
        checkpoint.save(path, model, vocab, RUN, optim.state_dict(), state)
    assert path.read_bytes() == before
    assert list(path.parent.glob(".*tmp")) == []


def test_stale_temp_files_are_removed(tmp_path):
    stale = tmp_path / ".latest.npz.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = tmp_path / "latest.npz"
    keep.write_bytes(b"x")
    checkpoint.remove_stale_temp_files(tmp_path)
    assert not stale.exists() and keep.exists()


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=oct)
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def test_checkpoint_gets_the_permissions_of_a_new_file(umask, tmp_path):
    """An atomic write goes through a temp file; mkstemp's 0600 must not become the checkpoint's mode."""
    vocab = Vocab.from_text("ab")
    model = Model.create(ModelConfig(vocab_size=2, hidden=4, layers=1), np.random.default_rng(0))
    path = tmp_path / "ck.npz"
    checkpoint.save(path, model, vocab, {})
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # what open() makes under this umask
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
    assert os.umask(umask) == umask  # reading the umask left it as it was
