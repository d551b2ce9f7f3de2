"""Choosing an engine, without PyTorch: the NumPy engine never imports torch, asking for the torch engine where it
is missing is one line saying how to install it, and the torch engine's options refuse the NumPy engine.
(tests/test_engine_torch.py holds the torch engine's own tests.)"""

import importlib.util
import subprocess
import sys

import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main

TEXT = "".join(f"{i} green bottles, hanging on the wall\n" for i in range(40))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "bottles.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def train(corpus, *args):
    return CliRunner().invoke(main, ["train", str(corpus), "--out", str(corpus.parent / "out"), "--steps", "2",
                                     "-B", "4", "-T", "8", "-H", "8", *args])


def test_a_numpy_run_never_imports_torch(corpus):
    code = ("import sys\n"
            "from charrnn.cli.commands import main\n"
            f"try:\n    main(['train', {str(corpus)!r}, '--steps', '2', '-B', '4', '-T', '8', '-H', '8', '-q',\n"
            f"          '--out', {str(corpus.parent / 'out')!r}])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("procs", ["1", "2"])
def test_the_torch_engine_without_torch_is_one_line_saying_how_to_install_it(corpus, monkeypatch, procs):
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find(name, *a))
    result = train(corpus, "--engine", "torch", "--procs", procs)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: the torch engine needs PyTorch, which is not installed: pip install 'charrnn[torch]'"]
    assert not (corpus.parent / "out").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--device", "cuda"], "--device and --procs are options of --engine torch"),
    (["--procs", "2"], "--device and --procs are options of --engine torch"),
    (["--engine", "torch", "--device", "gpu"], "'gpu' is not a device; choose cpu, cuda, cuda:N or mps"),
    (["--engine", "jax"], "'jax' is not one of 'numpy', 'torch'"),
])
def test_engine_options_refuse_what_cannot_run(corpus, args, fragment):
    result = train(corpus, *args)
    assert result.exit_code == 2 and fragment in result.stderr, result.output
    assert not (corpus.parent / "out").exists()


def test_many_processes_refuse_the_numpy_engine(corpus, monkeypatch):
    """A process that torchrun started, asked for the NumPy engine: it would train alone, on all the streams."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = train(corpus)
    assert result.exit_code == 1
    assert "a run of many processes (torchrun, --procs) needs --engine torch" in result.stderr
