# Two commands for a newcomer: `make demo` and `make test`. Both create or
# refresh .venv first (pinned by constraints.txt), so a fresh machine needs
# nothing but python3 (3.10-3.12) and, for integration tests, Java 17.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EVENTS ?= 20000

.PHONY: demo demo-stream test unit integration lint format bench clean venv stack-up stack-down

venv: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" wheel "setuptools>=70"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/riskpipe demo --events $(EVENTS)

# Kafka over TLS (local broker) → the same pipelines in stream mode; needs Java 17 + Maven
demo-stream: $(STAMP)
	$(VENV)/bin/riskpipe demo --stream --events 2000 --rate 1000

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: $(STAMP)
	$(PY) -m pytest -m unit -q

stack-up: $(STAMP)
	$(PY) -m runners.stack up

stack-down: $(STAMP)
	$(PY) -m runners.stack down

# Every tier: the local stack comes up first and always goes down after.
test: lint $(STAMP)
	$(PY) -m runners.stack up
	$(PY) -m pytest -q; rc=$$?; $(PY) -m runners.stack down; exit $$rc

integration: $(STAMP)
	$(PY) -m runners.stack up
	$(PY) -m pytest -m integration -q; rc=$$?; $(PY) -m runners.stack down; exit $$rc

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
