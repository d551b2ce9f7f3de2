"""PyTorch interoperability: an exported checkpoint loads into torch.nn.LSTM/GRU/RNN + Linear and gives the same
logits, and torch weights brought back give charrnn the same logits.  Skipped when torch is not installed (it is
never a dependency of charrnn)."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main
from charrnn.core.model import ModelConfig
from charrnn.core.vocab import Vocab
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text
from charrnn.store.export import from_torch

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TEXT = ("It was the best of times, it was the worst of times; it was the age of wisdom, "
        "it was the age of foolishness.\n") * 10
CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


class CharRNN(torch.nn.Module):
    """The module of the README's PyTorch section: an exported .npz is exactly its state_dict."""

    def __init__(self, cell: str, vocab_size: int, hidden: int, layers: int):
        super().__init__()
        self.rnn = getattr(torch.nn, cell)(vocab_size, hidden, num_layers=layers, batch_first=True)
        self.decoder = torch.nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):  # x (N, T) character indices -> logits (N, T, V)
        one_hot = torch.nn.functional.one_hot(x, self.decoder.out_features).to(self.decoder.weight.dtype)
        out, state = self.rnn(one_hot, state)
        return self.decoder(out), state


def trained(out: Path, cell: str, dtype: str = "float32") -> Path:
    corpus = corpus_from_text(TEXT)
    cfg = TrainConfig(seq_len=16, batch_size=4, steps=15, eval_every=15, save_every=15, lr=1e-2, seed=4)
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), cell=cell, hidden=24, layers=2, dtype=dtype)
    Trainer(corpus, model_cfg, cfg, out).run()
    return out / "latest.npz"


def charrnn_logits(model, x):
    """(N, T, V) logits and final state from a zero state; Model.forward is time-major."""
    N, T = x.shape
    logits, final, _ = model.forward(x, model.initial_state(N))
    return logits.reshape(T, N, -1).transpose(1, 0, 2).copy(), final


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_exported_checkpoint_runs_in_pytorch_with_the_same_logits(tmp_path, cell):
    torch.manual_seed(0)
    path = trained(tmp_path, cell)
    result = CliRunner().invoke(main, ["export", str(path), str(tmp_path / "torch.npz")])
    assert result.exit_code == 0, result.output
    ck = checkpoint.load(path)
    cfg = ck.model.cfg
    net = CharRNN(CLASSES[cell], cfg.vocab_size, cfg.hidden, cfg.layers)
    with np.load(tmp_path / "torch.npz", allow_pickle=False) as z:
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})  # strict: every key, every shape
    x = np.stack([ck.vocab.encode(TEXT[:300]), ck.vocab.encode(TEXT[50:350])])  # (2, 300)
    with torch.no_grad():
        theirs, state = net(torch.from_numpy(x.astype(np.int64)))
    ours, final = charrnn_logits(ck.model, x)
    assert theirs.dtype == torch.float32 and ours.dtype == np.float32
    np.testing.assert_allclose(theirs.numpy(), ours, atol=1e-5, rtol=1e-5)
    for a, b in zip(state if cell == "lstm" else (state,), final, strict=True):  # (h, c) or h, (L, N, H)
        np.testing.assert_allclose(a.numpy(), b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_pytorch_weights_come_back_with_the_same_logits(tmp_path, cell):
    torch.manual_seed(1)
    V, H, L = 30, 20, 2
    net = CharRNN(CLASSES[cell], V, H, L)
    with torch.no_grad():  # non-trivial biases, so a swapped bias would show
        for name, p in net.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    model = from_torch({k: v.detach().numpy() for k, v in net.state_dict().items()})
    assert model.cfg == ModelConfig(vocab_size=V, cell=cell, hidden=H, layers=L, dtype="float32")
    x = np.random.default_rng(0).integers(0, V, (3, 300))
    with torch.no_grad():
        theirs, _ = net(torch.from_numpy(x))
    ours, _ = charrnn_logits(model, x)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5, rtol=1e-5)
    # ... and as a checkpoint, the rest of charrnn can use it
    checkpoint.save(tmp_path / "from_torch.npz", model, Vocab([chr(ord("A") + i) for i in range(V)]), {})
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "from_torch.npz"), "-n", "20", "--seed", "0"])
    assert result.exit_code == 0 and len(result.stdout) == 21


def test_float64_checkpoints_agree_in_double_precision(tmp_path):
    path = trained(tmp_path, "lstm", dtype="float64")
    CliRunner().invoke(main, ["export", str(path), str(tmp_path / "torch.npz")])
    ck = checkpoint.load(path)
    cfg = ck.model.cfg
    net = CharRNN("LSTM", cfg.vocab_size, cfg.hidden, cfg.layers).double()
    with np.load(tmp_path / "torch.npz", allow_pickle=False) as z:
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
    x = ck.vocab.encode(TEXT[:300])[None]
    with torch.no_grad():
        theirs, _ = net(torch.from_numpy(x.astype(np.int64)))
    np.testing.assert_allclose(theirs.numpy(), charrnn_logits(ck.model, x)[0], atol=1e-10, rtol=1e-10)
