# Every target works on a fresh clone: the venv is (re)built whenever pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TIME_LIMIT ?= 10m

.PHONY: install test lint corpus train bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check charrnn tests bench corpora

corpus: $(STAMP)
	$(PY) corpora/prepare.py shakespeare

train: corpus
	$(VENV)/bin/charrnn train corpora/shakespeare.txt --preset default --time-limit $(TIME_LIMIT)
	$(VENV)/bin/charrnn sample --temp 0.8 --length 600

clean:
	rm -rf $(VENV) checkpoints .pytest_cache
