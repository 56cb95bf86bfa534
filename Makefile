# Two commands for a new user: `make run` and `make test`. Both create .venv and install on first use only.
PY ?= python3
VENV ?= .venv
CORPUS ?= python-docs
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned first: on these machines 2.13.0 resolves to a local CPU wheel; a bare `torch` pulls CUDA.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "torch==2.13.0" || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# make stays the app's parent and keeps a hang-up's SIGHUP to itself; the app notices the terminal
# going away on its own (tui/driver.py) and exits, leaving runs running.
run: $(STAMP)
	$(BIN)/smallgpt-tui --corpus $(CORPUS)

# Two workers, each test file on one (its module fixtures built once): much of the suite waits on trainer
# processes and the UI, so two workers share 2 cores well.
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) corpora/cache
