# Two commands do all the set-up on a fresh machine:
#   make run    venv + runtime install + local host on $(PORT) with the offline model
#   make test   venv + test install (system packages included) + the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 7071
PYTEST_ARGS ?=

.PHONY: run test lint lock load soak bench memcheck mutate system-deps node-deps clean help

help:
	@echo "make run [PORT=7071]   serve the app locally (offline model unless configured)"
	@echo "make test              install what the tests need and run the whole suite"
	@echo "make lint | lock | load | soak | bench | memcheck | mutate | clean"

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

# System packages the tests use, from Debian: Chromium for the browser tests
# (a tool's own browser download cannot be used here) and redis-server for
# resumable streams across instances. Installs only what is missing.
SYSTEM_PACKAGES := chromium:/usr/bin/chromium redis-server:/usr/bin/redis-server
system-deps:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
	  [ -x "$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# Real clients from npm (httpyac for demo.http, @ag-ui/client), pinned in
# package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@

node-deps: node_modules/.installed

test: $(VENV)/.dev system-deps node-deps
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

# Mutation testing (mutmut; configuration in pyproject.toml): slow, so CI
# does not run it. MUTATE picks mutants by name, e.g.
# make mutate MUTATE='streaming.encoders.*'; results accumulate in mutants/.
# MUTATE_SERVERS=1 also counts the tests that drive a server in another
# process (much slower; rm -rf mutants when switching). Prints the score per module.
MUTATE ?= settings.* streaming.* tools.* llm.*
MUTATE_JOBS ?= 2
MUTATE_SERVERS ?= 0
mutate: $(VENV)/.dev
	set -f; MUTMUT_SERVER_TESTS=$(MUTATE_SERVERS) $(PY) -m mutmut run --max-children $(MUTATE_JOBS) $(MUTATE)
	$(PY) -m tests.mutation_score

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis test-output mutants
