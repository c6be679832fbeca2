# Two commands do all the set-up on a fresh machine:
#   make run    venv + runtime install + local host on $(PORT) with the offline model
#   make test   venv + test install (system packages included) + the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 7071
PYTEST_ARGS ?=

.PHONY: run test lint lock soak bench bench-quick mutate system-deps node-deps agui-chat-client worker313 clean help

help:
	@echo "make run [PORT=7071]   serve the app locally (offline model unless configured)"
	@echo "make test              install what the tests need and run the whole suite"
	@echo "make bench-quick       the benchmark table, fewer rounds (bench/results/latest.json)"
	@echo "make bench             the full benchmark, with plots (several minutes)"
	@echo "make soak              10 minutes of steady streams: errors, memory slope, fds"
	@echo "make lint | lock | mutate | agui-chat-client | clean"

# PYTHON may name a pyenv version that is installed but not active (the
# shim then refuses to run it): use that version's interpreter directly.
$(PY):
	@set -e; python="$(PYTHON)"; \
	if ! "$$python" -c '' >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then \
	  version=$$(pyenv versions --bare | grep -x "$${python#python}\(\.[0-9]*\)\?" | tail -1); \
	  if [ -n "$$version" ]; then python="$$(pyenv root)/versions/$$version/bin/$$python"; fi; \
	fi; \
	"$$python" -c 'import sys; v = sys.version_info[:2]; assert (3, 11) <= v <= (3, 13), f"Python 3.11-3.13 needed, found {v}"'; \
	echo "$$python -m venv $(VENV)"; "$$python" -m venv $(VENV)
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
# resumable streams across instances; curl for the README's commands. Installs
# only what is missing.
SYSTEM_PACKAGES := chromium:/usr/bin/chromium redis-server:/usr/bin/redis-server curl:/usr/bin/curl
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

# The app under the real Python 3.13 Functions worker library
# (tests/test_worker313.py) needs its own 3.13 environment. python3.13 from
# PATH, else pyenv's; if there is none the test fails and says how to get it.
WORKER_VENV := .venv-worker313
PYTHON313 ?= $(shell for p in python3.13 $$(ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -1); do \
  "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
$(WORKER_VENV)/.installed: requirements.txt tests/worker313/requirements.txt
	@if [ -z "$(PYTHON313)" ]; then \
	  echo "warning: no Python 3.13 found (pyenv install 3.13, or apt-get install python3.13): tests/test_worker313.py will fail"; \
	else \
	  $(PYTHON313) -m venv $(WORKER_VENV) && \
	  $(WORKER_VENV)/bin/python -m pip install --quiet --upgrade pip && \
	  $(WORKER_VENV)/bin/python -m pip install --quiet -r requirements.txt -r tests/worker313/requirements.txt && \
	  touch $@; \
	fi

worker313: $(WORKER_VENV)/.installed

test: $(VENV)/.dev system-deps node-deps worker313
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# Agent Framework's AGUIChatClient against the AG-UI endpoint, in its own
# virtual environment (its pins cannot live beside the app's): optional.
AGUI_CLIENT_VENV ?= .venv-agui-client
$(AGUI_CLIENT_VENV)/.installed: tests/agui_chat_client/requirements.txt
	$(PYTHON) -m venv $(AGUI_CLIENT_VENV)
	$(AGUI_CLIENT_VENV)/bin/python -m pip install --quiet -r $<
	@touch $@

agui-chat-client: $(VENV)/.dev $(AGUI_CLIENT_VENV)/.installed
	$(PY) -m tests.agui_chat_client.check $(AGUI_CLIENT_VENV)/bin/python

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Re-pin every package (Python 3.11 to 3.13) after editing a *.in file.
lock: $(VENV)/.dev
	$(PY) -m pip install --quiet uv
	$(PY) -m uv pip compile --universal --python-version 3.11 -q requirements.in -o requirements.txt
	$(PY) -m uv pip compile --universal --python-version 3.11 -q requirements-dev.in -o requirements-dev.txt

soak: $(VENV)/.dev
	$(PY) -m bench.soak

# Throughput against in-process and naive-handler baselines, concurrency and
# start-up, in one run: a table, bench/results/latest.json and (bench) plots.
bench: $(VENV)/.dev
	$(PY) -m bench.run --plots

bench-quick: $(VENV)/.dev
	$(PY) -m bench.run --quick

# Mutation testing (mutmut; configuration in pyproject.toml): slow (an hour
# or more on 2 cores), so CI does not run it. MUTATE picks mutants by name,
# e.g. make mutate MUTATE='streaming.encoders.*'; results accumulate in
# mutants/ and only changed code is run again. Prints the score per module.
MUTATE ?=
MUTATE_JOBS ?= 2
mutate: $(VENV)/.dev
	$(PY) -m mutmut run --max-children $(MUTATE_JOBS) $(MUTATE)
	$(PY) -m tests.mutation_score

clean:
	rm -rf $(VENV) $(AGUI_CLIENT_VENV) $(WORKER_VENV) node_modules .pytest_cache .ruff_cache .hypothesis test-output mutants
