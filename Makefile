# `make demo` runs the main job on the embedded default data (bounded: 10 minutes in all, 2 per trial); `make test` runs the tests.
# Both create .venv at the repo root on first use (torch pinned by constraints.txt: no multi-GB download).
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ""

demo: install
	$(PY) cli.py search --budget 4.5GFLOPs --time-budget 600 --trial-time-limit 120 --trials 24

lint: install
	$(VENV)/bin/ruff check .

.PHONY: install test test-all demo lint
