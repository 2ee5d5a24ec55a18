# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build comes first and by itself, so pip picks the build for this machine:
# the local CPU wheel where one is offered (PIP_FIND_LINKS), the CUDA build from PyPI elsewhere.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# Until the search service exists, the demo describes the paper's architecture and trains a
# small child on the embedded digits (about 2.5 minutes on 2 CPU cores).
demo: $(VENV)/.installed
	$(VENV)/bin/segnas arch describe "0 5 5 2 2 2 4 5 3 5 3 4" --classes 22 --size 256
	$(VENV)/bin/segnas train --arch "2 2 2 2 2 2" --layers 6 --channels 16 --epochs 7 --batch-size 16 --dataset digits

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) bench/supernet_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
