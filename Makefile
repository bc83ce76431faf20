# The two promises: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench-fhir clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## install if needed, migrate, and serve on 127.0.0.1:8080 (./data)
	$(BIN)/sonobridge dev-setup
	$(BIN)/sonobridge serve

test: $(STAMP)  ## install if needed and run the test suite (SQLite, and PostgreSQL when reachable)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

bench-fhir: $(STAMP)  ## the FHIR REST read/ingest benchmark (not part of `make test`)
	$(BIN)/python bench/fhir_rest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
