# Two commands do everything on a fresh machine:
#   make demo   the main job: prepare the embedded python-stdlib corpus, train a small model on it
#               (about five minutes on 2 CPU cores), print the summary and a sample
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

DATA := data/stdlib

demo: install
	@test -f $(DATA)/manifest.json || $(BIN)/configaformer data prepare --source python-stdlib --max-bytes 8M --out $(DATA)
	$(BIN)/configaformer train stdlib --out_dir runs/stdlib-$$(date +%Y%m%d-%H%M%S)

test: install
	$(BIN)/python -m pytest -n 2

bench: install
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks --threads 2

clean:
	rm -rf $(VENV)
