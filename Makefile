# Two entry points, each creates or reuses .venv and installs what it needs:
#   make demo   - the main job: python -m sepconv demo
#   make test   - the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sepconv-installed
ARGS ?=

$(STAMP): requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

.PHONY: install test demo bench
install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

demo: $(STAMP)
	$(PY) -m sepconv demo $(ARGS)

bench: $(STAMP)
	$(PY) -m sepconv bench $(ARGS)
