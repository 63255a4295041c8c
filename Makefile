# Everything installs itself on first use: `make up` runs the service, `make test` tests it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Installed before the project so that pip keeps it (CPU or CUDA build, whichever pip finds).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install up test lint format bench clean compose-e2e i18n-extract i18n-update \
	i18n-compile i18n-init

# Translations (see docs/operations.md, "Languages"): English msgids in the code, one
# catalog per other language under common/locale; the compiled .mo files are not committed:
# the package build compiles them (setup.py: every `pip install`, the editable one too),
# and `make install` / `make i18n-compile` recompile them in place after a .po changes.
LOCALE_DIR := common/locale
PYBABEL := $(VENV)/bin/pybabel
I18N_COMPILE := $(PYBABEL) compile -d $(LOCALE_DIR) -D messages

$(STAMP): pyproject.toml scripts/install-system-packages.sh
	scripts/install-system-packages.sh
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first: installing the project alone would pull CUDA wheels of a newer torch.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)
	$(I18N_COMPILE)

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

# The .pot template from the code; then each language's .po merged with it; then the .mo.
i18n-extract: $(STAMP)
	$(PYBABEL) extract -F babel.cfg -k N_ --add-comments=TRANSLATORS: --sort-by-file \
		--no-wrap --project="Neural Music Demixing" -o $(LOCALE_DIR)/messages.pot .

i18n-update: i18n-extract
	$(PYBABEL) update -i $(LOCALE_DIR)/messages.pot -d $(LOCALE_DIR) -D messages --no-wrap

i18n-compile: $(STAMP)
	$(I18N_COMPILE) --statistics

# A new language: `make i18n-init LOCALE=de`, then translate common/locale/de/LC_MESSAGES/
# messages.po and add "de" to common.i18n.LANGUAGES.
i18n-init: i18n-extract
	test -n "$(LOCALE)"
	$(PYBABEL) init -i $(LOCALE_DIR)/messages.pot -d $(LOCALE_DIR) -D messages --no-wrap \
		-l $(LOCALE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
