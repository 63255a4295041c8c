# Everything installs itself on first use: `make up` runs the service, `make test` tests it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Installed before the project so that pip keeps it (CPU or CUDA build, whichever pip finds).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install up test lint format bench clean compose-e2e

$(STAMP): pyproject.toml scripts/install-system-packages.sh
	scripts/install-system-packages.sh
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first: installing the project alone would pull CUDA wheels of a newer torch.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

up: install
	$(VENV)/bin/demix up

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The images built and the Compose stack run end to end (needs a Docker engine; see
# scripts/compose-e2e.sh). `make compose-e2e ARGS=--cheap` for config and the bot image only.
compose-e2e: install
	scripts/compose-e2e.sh $(ARGS)

bench: install
	$(PY) bench/speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
