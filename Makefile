# Every target works on a fresh clone: the venv is (re)built whenever pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TIME_LIMIT ?= 10m

.PHONY: install test test-plain test-oldest-numpy test-torch lint corpus train bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The suite with the fast path off (docs/fast-path.md): every cell on np.matmul, in one process.
test-plain: $(STAMP)
	CHARRNN_FAST=0 $(PY) -m pytest

# The suite on the oldest NumPy that pyproject.toml allows (its numpy>= floor), in a venv of its own.
OLDEST       := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed
NUMPY_FLOOR   = $(shell sed -n 's/.*"numpy>=\([0-9.]*\)".*/\1/p' pyproject.toml)
$(OLDEST_STAMP): pyproject.toml
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -e '.[dev]' 'numpy==$(NUMPY_FLOOR)'
	touch $@

test-oldest-numpy: $(OLDEST_STAMP)
	$(OLDEST)/bin/python -c "import numpy; print('NumPy', numpy.__version__)"
	$(OLDEST)/bin/python -m pytest

# The torch engine's tests (marked torch; `make test` skips them where torch is missing): the torch extra, PyTorch's
# pinned CPU build, goes into the same venv, so run it after `make test`, which tests the install without torch.
TORCH_STAMP := $(VENV)/.torch-installed
$(TORCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,torch]'
	touch $@

test-torch: $(TORCH_STAMP)
	$(PY) -m pytest -m torch

lint: $(STAMP)
	$(VENV)/bin/ruff check charrnn tests bench corpora

corpus: $(STAMP)
	$(PY) corpora/prepare.py shakespeare

# A demo: each run starts afresh, replacing the checkpoints of the one before.
train: corpus
	$(VENV)/bin/charrnn train corpora/shakespeare.txt --preset default --time-limit $(TIME_LIMIT) --overwrite
	$(VENV)/bin/charrnn sample --temp 0.8 --length 600

clean:
	rm -rf $(VENV) $(OLDEST) checkpoints .pytest_cache

# Benchmarks: never part of `make test`.  The bench extra adds PyTorch (CPU build) as the comparison peer.  Each
# script saves its figures in bench/results/; the report then remakes bench/README.md and the README's table.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BENCH_STAMP)
	$(PY) bench/roofline.py
	$(PY) bench/train_speed.py
	$(PY) bench/sample_speed.py
	$(PY) bench/scale.py
	$(PY) bench/quality.py
	$(PY) bench/forget_bias.py
	$(PY) bench/report.py
