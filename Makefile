# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build comes first and by itself, so pip picks the build for this machine:
# the local CPU wheel where one is offered (PIP_FIND_LINKS), the CUDA build from PyPI elsewhere.
TORCH_SPEC ?= torch==2.13.0
# Test processes (pytest-xdist, one module each). More than the cores: most tests wait on a
# subprocess (Ray, a server, a driver), and the suite used 42 % of 2 cores with 2 workers.
TEST_WORKERS ?= 3

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# The service on embedded defaults (SQLite, embedded Redis, local Ray, one dispatcher), with
# the default search (configs/shapes.yaml) submitted through POST /searches: a progress bar, then the best
# architecture and its page. In a terminal it keeps serving the page until Ctrl-C; from a
# script (no terminal) it ends after printing, like `segnas demo --exit`.
demo: $(VENV)/.installed
	$(VENV)/bin/segnas demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) bench/supernet_overhead.py
	$(PY) bench/controller_throughput.py
	$(PY) bench/replica_scaling.py
	$(PY) bench/search_quality.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
