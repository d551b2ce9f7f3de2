# Every target works on a fresh clone: the venv is (re)built whenever pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TIME_LIMIT ?= 10m

.PHONY: install test test-plain test-oldest-numpy lint corpus train bench clean

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

# Benchmarks: never part of `make test`.  The bench extra adds PyTorch (CPU build) as the comparison peer.
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
