# liveprogress: the everyday commands.
#
#   make run     demo site on http://127.0.0.1:8000 (venv .venv, newest Python)
#   make scale   the scale-out topology: 2 servers, 2 workers, a Celery worker, Redis,
#                PostgreSQL (scripts/scale)
#   make serve   the demo site on every core: PROCS=N server processes (default: one per
#                core) behind one port (PORT=8000), Redis between them (scripts/serve)
#   make test    docs build, mypy, migrations check + pytest on the newest Python, the
#                example site on the built wheel (scripts/example-test), and pytest again
#                on 3.11 (installs Debian's chromium for the browser tests if missing)
#   make docs    the documentation site (docs/, mkdocs.yml) into build/site, strict:
#                a broken link or reference fails the build
#   make lint    ruff check + ruff format --check, then mypy (strict, on src/liveprogress
#                only: [tool.mypy] in pyproject.toml)
#   make bench   benchmarks (bench/): a quick pass; FULL=1 the whole matrix
#   make clean   remove virtualenvs and caches
#
# Interpreters come from scripts/find-python (3.13, then 3.12, else python3 >= 3.11).
# Each venv is (re)installed only when requirements.txt or pyproject.toml changes.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
.PHONY: run scale serve test docs lint format bench clean

PY     := $(shell bash scripts/find-python)
PY311  := $(shell bash scripts/find-python 3.11 2>/dev/null)
VENV   := .venv
VENV11 := .venv-3.11
PIP     = python -m pip install --quiet --disable-pip-version-check
# Run the 3.11 line too, unless the newest Python already is 3.11 (or there is no 3.11).
ifneq ($(PY311),)
ifneq ($(shell $(PY) -c 'import sys; print(sys.version_info[:2] == (3, 11))'),True)
EXTRA_LINE := $(VENV11)
endif
endif
SHOW = -c 'import sys, django; print("==>", sys.prefix, "| Python", sys.version.split()[0], "from", sys.base_prefix, "| Django", django.get_version())'

# $(call venv,DIR,PYTHON): create the virtualenv DIR with PYTHON unless it already works.
venv = $(1)/bin/python -c '' 2>/dev/null || $(2) -m venv $(1)

$(VENV)/.stamp-run: requirements.txt pyproject.toml
	@test -n "$(PY)" || { echo "no Python >= 3.11 found" >&2; exit 1; }
	$(call venv,$(VENV),$(PY))
	$(VENV)/bin/$(PIP) -r requirements.txt -e .
	touch $@

$(VENV)/.stamp-test: requirements.txt requirements-scale.txt pyproject.toml
	@test -n "$(PY)" || { echo "no Python >= 3.11 found" >&2; exit 1; }
	$(call venv,$(VENV),$(PY))
	$(VENV)/bin/$(PIP) -r requirements-scale.txt -e '.[test]'
	touch $@

$(VENV11)/.stamp-test: requirements.txt requirements-scale.txt pyproject.toml
	$(call venv,$(VENV11),$(PY311))
	$(VENV11)/bin/$(PIP) -r requirements-scale.txt -e '.[test]'
	touch $@

$(VENV)/.stamp-scale: requirements-scale.txt requirements.txt pyproject.toml
	@test -n "$(PY)" || { echo "no Python >= 3.11 found" >&2; exit 1; }
	$(call venv,$(VENV),$(PY))
	$(VENV)/bin/$(PIP) -r requirements-scale.txt -e .
	touch $@

$(VENV)/.stamp-docs: pyproject.toml
	@test -n "$(PY)" || { echo "no Python >= 3.11 found" >&2; exit 1; }
	$(call venv,$(VENV),$(PY))
	$(VENV)/bin/$(PIP) -e '.[docs]'
	touch $@

run: $(VENV)/.stamp-run
	$(VENV)/bin/python manage.py migrate --noinput
	exec $(VENV)/bin/daphne -b 127.0.0.1 -p 8000 proyecto.asgi:application

test: $(VENV)/.stamp-test $(if $(EXTRA_LINE),$(VENV11)/.stamp-test)
	@# The docs first, in the same venv (after its stamp: no two pip runs at once).
	$(MAKE) --no-print-directory docs
	@# The library's types, as `make lint` checks them (CI runs `make test`).
	$(VENV)/bin/mypy
	bash scripts/ensure-chromium
	@$(VENV)/bin/python $(SHOW)
	$(VENV)/bin/python manage.py makemigrations --check --dry-run
	$(VENV)/bin/python -m pytest
	@# examples/minimal on the wheel, in a fresh venv, as a new user installs it.
	PY=$(PY) bash scripts/example-test
ifdef EXTRA_LINE
	@$(VENV11)/bin/python $(SHOW)
	$(VENV11)/bin/python manage.py makemigrations --check --dry-run
	@# Browser and load tests run once, above. Exit 5 = everything deselected: fine here.
	$(VENV11)/bin/python -m pytest -m "not browser" || test $$? -eq 5
else
	@echo "==> no separate Python 3.11 line (none found, or the newest Python is 3.11)"
endif

docs: $(VENV)/.stamp-docs
	@# NO_MKDOCS_2_WARNING: mkdocs-material's end-of-life banner, noise in every build.
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

scale: $(VENV)/.stamp-scale
	PY=$(VENV)/bin/python exec bash scripts/scale

serve: $(VENV)/.stamp-scale
	@# PROCS, PORT, BIND, REDIS_URL, DATABASE_URL from the command line reach the script.
	PY=$(VENV)/bin/python exec bash scripts/serve

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.stamp-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.stamp-test
	@# Quick pass (~4 min); FULL=1 runs the whole matrix (see BENCHMARKS.md).
	$(VENV)/bin/$(PIP) -e '.[bench]'
	$(VENV)/bin/python -m bench $(if $(FULL),--full)

clean:
	rm -rf $(VENV) $(VENV11) .pytest_cache .ruff_cache .mypy_cache .coverage htmlcov build dist test-output
	find . \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
