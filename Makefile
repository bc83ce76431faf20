# The two promises: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test peers lint bench-fhir clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## install if needed, migrate, and serve on 127.0.0.1:8080 (./data)
	$(BIN)/sonobridge dev-setup
	$(BIN)/sonobridge serve

test: $(STAMP) peers  ## install if needed and run the test suite (SQLite, and PostgreSQL when reachable)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/mypy --strict sonobridge/core sonobridge/store sonobridge/mappings
	$(BIN)/pytest -n 2 --dist loadfile
	# The DICOMweb and DIMSE tests once more with every blob in a real S3 API server (moto).
	SONOBRIDGE_TEST_BLOB=s3 $(BIN)/pytest -n 2 --dist loadfile -q -k "not postgresql" \
	  tests/dicomweb tests/hie/dimse

# The real peers the tests drive: dcmtk (echoscu, storescu, findscu, movescu, getscu, storescp)
# Node.js + npm (the npm fhirclient test), haproxy (the deployment check), poppler-utils
# (pdftotext/pdffonts read the report PDF), fonts-noto-cjk and Pango (WeasyPrint lays out the
# report PDF with them), tesseract-ocr and dicom3tools (the de-identification checks read the
# cleaned frames and validate the objects). Installed with apt-get when run as root; otherwise
# the tests that need them skip and say why.
peers:
	@missing=""; \
	command -v storescu >/dev/null 2>&1 || missing="$$missing dcmtk"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v haproxy >/dev/null 2>&1 || missing="$$missing haproxy"; \
	command -v pdftotext >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	fc-list 2>/dev/null | grep -q "Noto Sans CJK" || missing="$$missing fonts-noto-cjk"; \
	ldconfig -p 2>/dev/null | grep -q libpangoft2 || missing="$$missing libpangoft2-1.0-0"; \
	ldconfig -p 2>/dev/null | grep -q libharfbuzz-subset || missing="$$missing libharfbuzz-subset0"; \
	command -v tesseract >/dev/null 2>&1 || missing="$$missing tesseract-ocr"; \
	command -v dciodvfy >/dev/null 2>&1 || missing="$$missing dicom3tools"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing test peers:$$missing (apt-get)"; \
	  { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; } \
	    || echo "could not install$$missing: the tests that drive them will skip"; \
	else \
	  echo "not installed:$$missing (run 'sudo make peers'): the tests that drive them will skip"; \
	fi

lint: $(STAMP)  ## the gates without the tests: ruff, the layering, the types
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/mypy --strict sonobridge/core sonobridge/store sonobridge/mappings

bench-fhir: $(STAMP)  ## the FHIR REST read/ingest benchmark (not part of `make test`)
	$(BIN)/python bench/fhir_rest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
