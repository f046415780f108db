# Two commands for a newcomer: `make demo` and `make test`. Both create or
# refresh .venv first (pinned by constraints.txt), so a fresh machine needs
# nothing but python3 (3.10-3.12) and, for integration tests, Java 17.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EVENTS ?= 20000

.PHONY: demo test unit integration lint format bench clean venv

venv: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" wheel "setuptools>=70"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/riskpipe demo --events $(EVENTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: $(STAMP)
	$(PY) -m pytest -m unit -q

test: lint $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
