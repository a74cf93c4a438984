# make run:  set up (if needed) and train the default experiment.
# make test: set up (if needed) and run the whole test suite (CI runs this).
# make check: the fast tier for the edit-test loop: the tests that stay in one process (no CLI, DDP, servers, pip).
# Set-up: a virtual environment in .venv (or the active one), torch (the CPU wheel, only when no torch is
# installed: a GPU machine keeps its CUDA build), then this package with its dev and sweep extras.
PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
BIN := $(VENV)/bin
STAMP := $(VENV)/.dltrain-installed

.PHONY: install run test check bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU wheel on this machine's disk unless a torch is already installed
	# (e.g. a CUDA build on a GPU machine): a plain newer torch would pull a several-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev,sweep]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/dltrain

test: $(STAMP)
	$(BIN)/python -m pytest

# check runs on up to 4 worker processes, one per core (pytest-xdist): 861 tests in 70 s on 2 cores, 115 s in one.
# test stays in one process: its DDP, TensorBoard-server and kill tests have not been tried beside another worker.
check: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e and not slow" -x -n auto --maxprocesses=4

bench: $(STAMP)
	$(BIN)/python bench/engine_vs_loop.py

clean:
	rm -rf build dist *.egg-info outputs multirun .pytest_cache
