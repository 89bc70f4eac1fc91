# Verity: `make run` serves the site; `make test` runs the whole test suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint format bench bench-training install browser clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PY) not found)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_staff
	@# Export and verify the shipped model for ONNX Runtime once (cached in var/cache).
	VERITY_CACHE_DIR=$${VERITY_CACHE_DIR:-$${VERITY_VAR_DIR:-var}/cache} $(BIN)/python -m detector.runtime models/default >/dev/null
	$(BIN)/python scripts/run_stack.py

# Debian's Chromium for the browser tests (Playwright's own download does not work here).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || echo "chromium could not be installed: browser tests will skip"

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format:
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

bench-training: $(STAMP)
	$(BIN)/python bench/training.py

clean:
	rm -rf var/test-media var/test*.sqlite3 .pytest_cache
