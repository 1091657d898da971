# edgesparse: set-up, demo, tests, benchmarks. Everything installs itself into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[build,test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/edgesparse build --profile rpi4 --force

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/run_all.py

lint: install
	$(PY) -m compileall -q edgesparse tests bench

clean:
	rm -rf build .pytest_cache
