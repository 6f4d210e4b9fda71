# Every target bootstraps and reuses .venv itself: `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?=

.PHONY: venv test test-slow test-all lint demo bench mutate clean

venv: $(STAMP)

# torch==2.13.0 first: any range that admits a newer torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

test: lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_FLAGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_FLAGS)

test-all: lint
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

# extra flags, e.g. make demo DEMO_ARGS="--methods radfinder,scale-vlp,fvlm,radfinder+fvlm"
demo: $(STAMP)
	$(BIN)/radfinder demo --out demo-out $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# mutation testing of the connecting modules (not part of `make test`: hours for every mutant on 2 cores), e.g.
# make mutate MUTATE_ARGS="--module serve/uploads.py --max-per-module 10"; prints the table, writes the JSON
MUTATE_ARGS ?=
mutate: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache mutation-report.json
