# make install: a virtual environment in .venv (or the active one), torch, then this package with its dev extras.
# make test:    the test suite.
PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
BIN := $(VENV)/bin

.PHONY: install test bench clean

install:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU wheel on this machine's disk unless a torch is already installed
	# (e.g. a CUDA build on a GPU machine): a plain newer torch would pull a several-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"

test:
	$(BIN)/python -m pytest

bench:
	$(BIN)/python bench/engine_vs_loop.py

clean:
	rm -rf build dist *.egg-info outputs multirun .pytest_cache
