# Two commands do everything on a fresh machine:
#   make demo   build the seed example config, print its layer table and run a forward pass
#   make test   run the test suite
# Both create .venv first (CPU torch 2.13.0, then this package with its dev extras).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/configaformer demo

test: install
	$(BIN)/python -m pytest -n 2

bench: install
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks --threads 2

clean:
	rm -rf $(VENV)
