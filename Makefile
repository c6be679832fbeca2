# Two commands do all the set-up on a fresh machine:
#   make run    venv + runtime install + local host on $(PORT) with the offline model
#   make test   venv + test install (system packages included) + the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 7071
PYTEST_ARGS ?=

.PHONY: run test lint lock load soak bench memcheck system-deps clean help

help:
	@echo "make run [PORT=7071]   serve the app locally (offline model unless configured)"
	@echo "make test              install what the tests need and run the whole suite"
	@echo "make lint | lock | load | soak | bench | memcheck | clean"

$(PY):
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert (3, 10) <= v <= (3, 13), f"Python 3.10-3.13 needed, found {v}"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

local.settings.json:
	cp local.settings.json.template $@

run: $(VENV)/.runtime local.settings.json
	PORT=$(PORT) $(PY) -m devhost --port $(PORT)

# Debian's Chromium for the browser tests (a tool's own browser download
# cannot be used here). Skipped when it is already installed.
system-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

test: $(VENV)/.dev system-deps
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Re-pin every package (Python 3.10 to 3.13) after editing a *.in file.
lock: $(VENV)/.dev
	$(PY) -m pip install --quiet uv
	$(PY) -m uv pip compile --universal --python-version 3.10 -q requirements.in -o requirements.txt
	$(PY) -m uv pip compile --universal --python-version 3.10 -q requirements-dev.in -o requirements-dev.txt

load: $(VENV)/.dev
	$(PY) -m bench.load

soak: $(VENV)/.dev
	$(PY) -m bench.soak

bench: $(VENV)/.dev
	$(PY) -m bench.overhead

memcheck: $(VENV)/.dev
	$(PY) -m bench.memcheck

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis test-output
