"""The stacked model: PyTorch-compatible parameters, loss, dropout, stepping, and learning on small problems."""

import numpy as np
import pytest

from charrnn.core.model import Model, ModelConfig, cross_entropy, param_shapes, scatter_rows
from charrnn.core.optim import clip_gradients, make_optimizer
from charrnn.core.stepper import Stepper
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.runs.streams import Streams


def test_parameter_names_and_shapes_follow_pytorch():
    shapes = param_shapes(ModelConfig(vocab_size=65, cell="lstm", hidden=256, layers=2))
    assert shapes == {
        "weight_ih_l0": (1024, 65), "weight_hh_l0": (1024, 256), "bias_ih_l0": (1024,), "bias_hh_l0": (1024,),
        "weight_ih_l1": (1024, 256), "weight_hh_l1": (1024, 256), "bias_ih_l1": (1024,), "bias_hh_l1": (1024,),
        "decoder.weight": (65, 256), "decoder.bias": (65,),
    }
    assert param_shapes(ModelConfig(vocab_size=10, cell="gru", hidden=8, layers=1))["weight_hh_l0"] == (24, 8)
    assert param_shapes(ModelConfig(vocab_size=10, cell="rnn", hidden=8, layers=1))["weight_ih_l0"] == (8, 10)
    coupled = param_shapes(ModelConfig(vocab_size=10, hidden=8, layers=1, coupled=True, peephole=True))
    assert coupled["weight_hh_l0"] == (24, 8) and coupled["peephole_l0"] == (2, 8)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_init_is_pytorch_uniform_weights_and_zero_biases(cell):
    H = 64
    model = Model.create(ModelConfig(vocab_size=5, hidden=H, layers=2, cell=cell), np.random.default_rng(0))
    for name, p in model.params.items():
        if "bias" in name:
            assert not p.any(), name  # no forget-gate bias of 1: it slowed learning (model.init_params)
        else:
            assert np.abs(p).max() <= 1 / np.sqrt(H) and p.std() > 0.5 / np.sqrt(3 * H), name


@pytest.mark.parametrize("bad", [dict(cell="transformer"), dict(dtype="float16"), dict(dropout=1.0),
                                 dict(hidden=0), dict(cell="gru", peephole=True)])
def test_config_refuses_nonsense(bad):
    with pytest.raises(CharrnnError):
        ModelConfig(vocab_size=5, **bad)


def test_cross_entropy_is_stable_and_exact():
    logits = np.array([[1e4, 0.0, -1e4], [3.0, 1.0, 2.0]], dtype=np.float32)
    loss, grad = cross_entropy(logits.copy(), np.array([1, 0]))
    expected = (1e4 + np.log(1 + np.exp(-1) + np.exp(-2))) / 2  # row 0: -log p = 1e4; row 1: log-sum-exp - 3
    assert loss == pytest.approx(expected, rel=1e-6)
    assert grad.dtype == np.float32 and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-7)


def test_scatter_rows_equals_add_at():
    rng = np.random.default_rng(0)
    rows, index = rng.normal(size=(200, 6)), rng.integers(0, 9, 200)
    expected = np.zeros((12, 6))
    np.add.at(expected, index, rows)
    np.testing.assert_allclose(scatter_rows(rows, index, 12), expected, atol=1e-12)


def test_dropout_masks_are_inverted_and_only_in_training():
    model = Model.create(ModelConfig(vocab_size=5, hidden=64, layers=2, dropout=0.25), np.random.default_rng(0))
    masks = model.dropout_masks(np.random.default_rng(1), 50, 8)
    assert len(masks) == 2 and set(np.unique(masks[0])) == {0.0, np.float32(1 / 0.75)}
    assert abs(masks[0].mean() - 1.0) < 0.02  # expectation preserved, so evaluation needs no rescaling
    x = np.zeros((2, 3), dtype=np.uint8)
    a, _, _ = model.forward(x, model.initial_state(2))
    a = a.copy()
    b, _, _ = model.forward(x, model.initial_state(2))
    np.testing.assert_array_equal(a, b)  # no dropout without masks


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_step_by_step_equals_chunk(cell):
    model = Model.create(ModelConfig(vocab_size=6, cell=cell, hidden=8, layers=2, dtype="float64"),
                         np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, 6, (3, 7))
    logits, final, _ = model.forward(x, model.initial_state(3))
    logits = logits.reshape(7, 3, 6).copy()
    stepper = Stepper(model, model.initial_state(3))
    for t in range(7):
        np.testing.assert_allclose(stepper.step(x[:, t]), logits[t], atol=1e-12)
    for s, f in zip(stepper.state, final, strict=True):
        np.testing.assert_allclose(s, f, atol=1e-12)


def fit(model, x, y, steps, lr, carry=False, streams=None, seed=0):
    rng = np.random.default_rng(seed)
    opt = make_optimizer("adam", model.params)
    state = model.initial_state(x.shape[0] if streams is None else streams.batch_size)
    for step in range(steps):
        if streams is not None:
            j = step % streams.chunks
            if j == 0 or not carry:
                state = model.initial_state(streams.batch_size)
            x, y = streams.batch(j)
        loss, grads, state = model.loss_and_grads(x, y, state, rng)
        clip_gradients(grads, 5.0)
        opt.step(model.params, grads, lr)
    return loss


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_learns_hello(cell):
    """Karpathy's example: after "hel" comes "l", after "hell" comes "o" — the state must tell them apart."""
    vocab = Vocab.from_text("helo")
    x, y = vocab.encode("hell")[None], vocab.encode("ello")[None]
    model = Model.create(ModelConfig(vocab_size=4, cell=cell, hidden=16, layers=1), np.random.default_rng(0))
    assert fit(model, x, y, steps=150, lr=0.05) < 0.02


def copy_task(rng, segments, T):
    """Each segment is a letter, a run of 0..2T dots, '!', then the same letter again: predicting the letter after
    '!' needs the state from up to 2T+1 characters back, across chunk boundaries."""
    return "".join(
        (letter := str(rng.choice(["a", "b"]))) + "." * int(rng.integers(0, 2 * T)) + "!" + letter
        for _ in range(segments)
    )


def copy_accuracy_beyond(model, vocab, text, T, carry):
    """Accuracy of the letter after '!' where the first letter lies more than T characters back."""
    data = vocab.encode(text)
    state, preds = model.initial_state(1), []
    for start in range(0, len(data) - 1, T):
        if not carry:
            state = model.initial_state(1)
        logits, state, _ = model.forward(data[start : start + T][None], state)
        preds.append(logits.argmax(axis=1))
    preds = np.concatenate(preds)
    hits, total, letter_at = 0, 0, 0
    for i, ch in enumerate(text[:-1]):
        if ch in "ab" and (i == 0 or text[i - 1] != "!"):
            letter_at = i
        if ch == "!" and i - letter_at > T:
            total += 1
            hits += vocab.chars[preds[i]] == text[i + 1]
    assert total > 50
    return hits / total


@pytest.mark.parametrize("carry", [True, False], ids=["carried", "reset"])
def test_dependency_longer_than_chunk_needs_carried_state(carry):
    T, rng = 8, np.random.default_rng(0)
    text = copy_task(rng, 3000, T)
    vocab = Vocab.from_text(text)
    model = Model.create(ModelConfig(vocab_size=len(vocab), cell="gru", hidden=32, layers=1), rng)
    fit(model, None, None, steps=400, lr=1e-2, carry=carry, streams=Streams(vocab.encode(text), 16, T))
    accuracy = copy_accuracy_beyond(model, vocab, copy_task(np.random.default_rng(99), 300, T), T, carry)
    if carry:
        assert accuracy > 0.95
    else:
        assert accuracy < 0.7  # a coin flip: the letter is out of reach
