# Depth Arena: `make run` starts the service with demo data, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Tests run against PostgreSQL and Redis unless the caller points them elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/depth_arena
TEST_REDIS_URL ?= redis://127.0.0.1:6379/14
# The port `make run` serves on: make run PORT=8123.
PORT ?= 8000
# The CPU build of torch lies on disk here; without it pip would fetch a multi-gigabyte CUDA build.
PIP_FIND := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: run test lint bench clean

$(BIN)/.installed-run: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is missing: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_FIND) -r requirements.txt
	@touch $@

$(BIN)/.installed-dev: $(BIN)/.installed-run requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_FIND) -r requirements-dev.txt
	@touch $@

run: $(BIN)/.installed-run
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py build_tiny_moe
	$(BIN)/python manage.py load_demo --schedule
	$(BIN)/python manage.py serve --port $(PORT)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(BIN)/.installed-dev
	bin/ensure-test-services
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python manage.py build_tiny_moe
	DJANGO_DEBUG=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m pytest --create-db $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
