# Two commands set up everything on a fresh machine: `make lab` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: lab test smoke install up down status reset demo bench lint api

# The venv is rebuilt only when the pins change.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

lab: install  ## start the embedded stack and open JupyterLab on the lessons
	$(PY) -m cdc_kit lab

test: install  ## lint and type-check, then every test (real services, every notebook executed)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

smoke:  ## the smoke on another Python, in a venv of its own: make smoke PY=python3.13
	.ci/smoke $(PY)

up: install
	$(PY) -m cdc_kit up
down: install
	$(PY) -m cdc_kit down
status: install
	$(PY) -m cdc_kit status
reset: install
	$(PY) -m cdc_kit reset
demo: install
	$(PY) -m cdc_kit demo
api: install  ## the seed's HTTP write API on 127.0.0.1:3002
	$(PY) -m cdc_kit api --port 3002
bench: install
	$(PY) bench/run_all.py
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
