"""A new run from a trained model's weights (--init-from): the vocabulary extension moves every trained weight to
its character's new index, the new run starts at step 0 from the old model (not a fresh one), and it is
deterministic and resumable like any run."""

from pathlib import Path

import numpy as np
import pytest

from charrnn.core.model import Model, ModelConfig
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.runs.finetune import InitFrom
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.checkpoint import Checkpoint
from charrnn.store.corpus import corpus_from_text

OLD_TEXT = "".join(f"row {i}: the cat sat on the mat, {'happy' if i % 2 else 'sleepy'}.\n" for i in range(80))
NEW_TEXT = OLD_TEXT.replace("cat", "CAT!")  # the same kind of text, with three characters the old model lacks


def origin(cell="lstm", chars="abc \n", dtype="float64", seed=0) -> InitFrom:
    vocab = Vocab(chars)
    cfg = ModelConfig(vocab_size=len(vocab), cell=cell, hidden=6, layers=2, dtype=dtype)
    model = Model.create(cfg, np.random.default_rng(seed))
    for p in model.params.values():  # trained-looking biases, so a misplaced one shows
        p += np.random.default_rng(seed + 1).normal(size=p.shape)
    return InitFrom(Path("old.npz"), Checkpoint(model, vocab, {"progress": {"step": 40}, "corpus": {"name": "a"}}))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_known_characters_keep_their_weights_under_their_new_indices(cell):
    start = origin(cell)
    old = start.checkpoint.model
    vocab = start.vocab_for(Vocab("ab!x\n"))  # '!' sorts first and 'x' last: every old index moves or stays
    assert vocab.chars == ["\n", " ", "!", "a", "b", "c", "x"]
    cfg = ModelConfig(**{**old.cfg.to_dict(), "vocab_size": len(vocab), "dropout": 0.3})
    new = Model(cfg, start.params_for(cfg, vocab, np.random.default_rng(1)))
    text = "abc ab\nca "  # only old characters: the old model's logits, at the new indices, exactly
    x_old, x_new = start.checkpoint.vocab.encode(text)[None], vocab.encode(text)[None]
    logits_old, _, _ = old.forward(x_old, old.initial_state(1))
    logits_new, _, _ = new.forward(x_new, new.initial_state(1))
    at = vocab.encode_code_points(start.checkpoint.vocab.code_points)
    np.testing.assert_array_equal(logits_new[:, at], logits_old)
    fresh = [vocab.chars.index(ch) for ch in "!x"]  # new characters start as in a fresh model
    bound = 1 / np.sqrt(cfg.hidden)
    assert np.all(new.params["decoder.bias"][fresh] == 0)
    for w in (new.params["decoder.weight"][fresh], new.params["weight_ih_l0"][:, fresh]):
        assert np.all(np.abs(w) <= bound) and np.all(w != 0)
    for name, p in old.params.items():  # the rest is the old model's, copied
        if name not in ("weight_ih_l0", "decoder.weight", "decoder.bias"):
            np.testing.assert_array_equal(new.params[name], p)
            assert not np.shares_memory(new.params[name], p)


def test_a_corpus_within_the_vocabulary_keeps_the_model_as_it_is():
    start = origin()
    vocab = start.vocab_for(Vocab("ba"))
    assert vocab == start.checkpoint.vocab
    cfg = start.checkpoint.model.cfg
    params = start.params_for(cfg, vocab, np.random.default_rng(1))
    for name, p in start.checkpoint.model.params.items():
        np.testing.assert_array_equal(params[name], p)


def test_another_shape_is_refused():
    start = origin()
    cfg = ModelConfig(**{**start.checkpoint.model.cfg.to_dict(), "hidden": 7})
    with pytest.raises(CharrnnError, match="differs in shape"):
        start.params_for(cfg, start.checkpoint.vocab, np.random.default_rng(1))


def run(out, text, steps, init_from=None, resume=False, seed=5):
    corpus = corpus_from_text(text, "rows.txt")
    ck = checkpoint.load(Path(out) / "latest.npz", resume=True) if resume else None
    if init_from is not None or ck is not None:  # as the CLI does: the run's vocabulary, not the text's own
        corpus = corpus.reindexed(ck.vocab if ck else init_from.vocab_for(corpus.vocab))
    cfg = TrainConfig(seq_len=16, batch_size=4, steps=steps, eval_every=10, save_every=10, lr=1e-2, seed=seed)
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), hidden=24, layers=1)
    Trainer(corpus, model_cfg, cfg, out, resume=ck, init_from=init_from).run()
    return checkpoint.load(Path(out) / "latest.npz")


def test_a_fine_tuned_run_starts_where_the_trained_model_left_off(tmp_path):
    trained = run(tmp_path / "old", OLD_TEXT, 150)
    start = InitFrom(tmp_path / "old" / "latest.npz", trained)
    tuned = run(tmp_path / "tuned", NEW_TEXT, 10, init_from=start)
    fresh = run(tmp_path / "fresh", NEW_TEXT, 10)
    assert tuned.vocab.chars == sorted(set(OLD_TEXT) | set("CAT!"))
    first = [ck.meta["history"][0]["val_loss"] for ck in (tuned, fresh)]
    assert first[0] < first[1] - 0.5, first  # after 10 steps: the trained model's knowledge, not a fresh start
    assert tuned.meta["progress"]["step"] == 10 and [h["step"] for h in tuned.meta["history"]] == [10]
    assert tuned.meta["init_from"] == {"path": str(start.path), "step": 150, "corpus": "rows.txt",
                                       "vocab_size": len(trained.vocab)}
    assert fresh.meta["init_from"] is None


def test_a_fine_tuned_run_is_deterministic_and_resumes_exactly(tmp_path):
    trained = run(tmp_path / "old", OLD_TEXT, 20)
    start = InitFrom(tmp_path / "old" / "latest.npz", trained)
    straight = run(tmp_path / "a", NEW_TEXT, 20, init_from=start)
    run(tmp_path / "b", NEW_TEXT, 10, init_from=start)
    resumed = run(tmp_path / "b", NEW_TEXT, 20, resume=True)
    for name, p in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], p)
    assert resumed.meta["init_from"] == straight.meta["init_from"]


def test_a_vocabulary_without_the_models_characters_is_refused():
    start = origin()
    cfg = ModelConfig(**{**start.checkpoint.model.cfg.to_dict(), "vocab_size": 5})
    with pytest.raises(CharrnnError, match="lacks characters"):
        start.params_for(cfg, Vocab("abcde"), np.random.default_rng(1))  # no ' ' nor '\n'
