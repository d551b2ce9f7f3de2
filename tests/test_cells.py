"""Every cell type and LSTM option: agreement with the naive reference, and float64 finite-difference gradients
of every parameter, the initial state and the final-state gradient path, with 1 and 2 layers and dropout."""

import naive
import numpy as np
import pytest

from charrnn.core.model import Model, ModelConfig, cross_entropy
from charrnn.core.stepper import Stepper
from charrnn.fast import blas, machine, packed, workspace
from charrnn.fast import gemm as gemm_module

CELL_OPTIONS = [
    dict(cell="rnn"),
    dict(cell="gru"),
    dict(cell="lstm"),
    dict(cell="lstm", peephole=True),
    dict(cell="lstm", coupled=True),
    dict(cell="lstm", peephole=True, coupled=True),
]
CASES = [dict(opts, layers=layers) for opts in CELL_OPTIONS for layers in (1, 2)]


def case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


@pytest.fixture(params=["matmul", "packed"])
def gemm(request, monkeypatch):
    """Both ways a chunk runs its recurrent GEMMs (charrnn.fast.gemm): np.matmul, or OpenBLAS's kernels on weights
    packed once a chunk, which a chunk takes when BLAS runs on one thread (as in a shard) and the kernels passed
    this machine's check.  Fails when the other way ran."""
    if request.param == "matmul":
        monkeypatch.setenv(machine.SWITCH, "0")
    elif not machine.enabled():
        pytest.skip(f"the fast path is off ({machine.SWITCH}=0)")
    elif not machine.verdict().packs(np.float64):
        pytest.skip(f"no packed kernels here: {machine.verdict().packed['float64']}")
    module, name = (gemm_module, "Plain") if request.param == "matmul" else (packed, "Packed")
    made = []

    class Counted(getattr(module, name)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(module, name, Counted)
    with blas.single_threaded():
        yield request.param
    assert made, f"the {request.param} GEMMs never ran"


def make(case, dropout=0.0, V=5, H=4, N=3, T=5, seed=0):
    """A float64 model with random (not initial) parameters, inputs, targets and a non-zero initial state."""
    rng = np.random.default_rng(seed)
    model = Model.create(ModelConfig(vocab_size=V, hidden=H, dropout=dropout, dtype="float64", **case), rng)
    for p in model.params.values():
        p[...] = rng.normal(0, 0.6, p.shape)
    x = rng.integers(0, V, (N, T))
    y = rng.integers(0, V, (N, T))
    state = tuple(rng.normal(0, 0.5, s.shape) for s in model.initial_state(N))
    return model, x, y, state, rng


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fast_layers_match_naive_reference(case, gemm):
    model, x, y, state, rng = make(case, dropout=0.3)
    masks = model.dropout_masks(rng, x.shape[1], x.shape[0])
    logits, final, _ = model.forward(x, state, masks)
    ref_logits, ref_final = naive.run(model, x, state, masks)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-10)
    for s, r in zip(final, ref_final, strict=True):
        np.testing.assert_allclose(s, r, rtol=0, atol=1e-10)


def relative_error(a, b):
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12)


@pytest.fixture
def small_blocks(monkeypatch):
    """Backward passes in time blocks of 2 steps (make's LSTM: 48 elements a step), so block edges are tested."""
    monkeypatch.setattr(workspace, "BLOCK_ELEMENTS", 100)


def test_small_blocks_split_the_chunk(small_blocks):
    assert workspace.time_blocks(5, 48) == [slice(0, 2), slice(2, 4), slice(4, 5)]


@pytest.mark.parametrize("shape", [(70, 300), (1024, 256), (3, 5)])
def test_scaled_transpose_matches_numpy(shape):
    rng = np.random.default_rng(0)
    W, scale = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape[0]).astype(np.float32)
    out = workspace.scaled_transpose(W, scale)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, (W * scale[:, None]).T)
    np.testing.assert_array_equal(workspace.scaled_transpose(W), W.T)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_blocked_backward_matches_one_block(case, gemm, monkeypatch):
    model, x, y, state, rng = make(case, dropout=0.3)
    masks = model.dropout_masks(rng, x.shape[1], x.shape[0])
    logits, _, cache = model.forward(x, state, masks)
    _, dlogits = cross_entropy(logits, y.T.ravel())
    whole, whole0 = model.backward(dlogits.copy(), cache)
    monkeypatch.setattr(workspace, "BLOCK_ELEMENTS", 1)  # one step a block
    blocked, blocked0 = model.backward(dlogits.copy(), cache)
    for name in whole:
        np.testing.assert_array_equal(blocked[name], whole[name], err_msg=name)
    for a, b in zip(blocked0, whole0, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dropout", [0.0, 0.4], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_match_finite_differences(case, dropout, gemm, small_blocks):
    """Loss = cross-entropy + <R, final state>, so the final-state gradient input is checked too."""
    model, x, y, state, rng = make(case, dropout=dropout)
    masks = model.dropout_masks(rng, x.shape[1], x.shape[0])  # fixed masks: the loss is deterministic
    weights = tuple(rng.normal(0, 1, s.shape) for s in state)

    def loss():
        logits, final, _ = model.forward(x, state, masks)
        ce, _ = cross_entropy(logits, y.T.ravel(), grad=False)
        return ce + sum(float(np.sum(w * f)) for w, f in zip(weights, final, strict=True))

    logits, _, cache = model.forward(x, state, masks)
    _, dlogits = cross_entropy(logits, y.T.ravel())
    grads, dstate0 = model.backward(dlogits, cache, dstate=weights)
    analytic = {k: g.copy() for k, g in grads.items()}
    analytic.update({f"state{i}": d.copy() for i, d in enumerate(dstate0)})
    tensors = dict(model.params)
    tensors.update({f"state{i}": s for i, s in enumerate(state)})
    assert set(analytic) == set(tensors)

    eps = 1e-5
    for name, p in tensors.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = loss()
            p[i] = old - eps
            down = loss()
            p[i] = old
            numeric[i] = (up - down) / (2 * eps)
        assert relative_error(numeric, analytic[name]) < 1e-6, name
        assert np.abs(numeric).max() > 0 or name.startswith("peephole"), f"{name}: gradient is identically zero"


@pytest.mark.parametrize("case", CASES[::2], ids=case_id)
def test_float32_stays_float32(case, gemm):
    rng = np.random.default_rng(1)
    model = Model.create(ModelConfig(vocab_size=7, hidden=8, dropout=0.2, **case), rng)
    x = rng.integers(0, 7, (2, 6))
    loss, grads, final = model.loss_and_grads(x, x, model.initial_state(2), rng)
    assert np.isfinite(loss)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(s.dtype == np.float32 for s in final)
    logits = Stepper(model, final).step(x[:, 0])
    assert logits.dtype == np.float32 and logits.shape == (2, 7)
