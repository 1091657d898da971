# edgesparse: set-up, demo, tests, benchmarks. Everything installs itself:
# Debian packages (espeak-ng for the speech demo, sshd for deploy tests, the Arm
# cross compiler for microcontroller projects, Chromium for report tests) and a
# .venv with the package and its build and test dependencies.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEBIAN_PACKAGES := python3-venv espeak-ng openssh-server openssh-client rsync gcc-arm-none-eabi binutils-arm-none-eabi libnewlib-arm-none-eabi chromium

.PHONY: install system-deps demo test bench lint clean

install: $(STAMP) system-deps

# Installs only what is missing; a no-op on a machine that has them all.
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[build,test,npu,distributed]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/edgesparse build --profile rpi4 --force

# One pytest worker per core (at most 4), each test file on one worker so module fixtures (a build shared by a
# file's tests) are made once.
test: lint
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile

# BENCH="decode_compression channel_pruning" reruns only those sections of docs/benchmarks.md.
bench: install
	$(PY) bench/run_all.py $(BENCH)

# import-linter (layers, TensorFlow boundary), ruff on the whole tree, mypy on the analysis half.
lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check edgesparse tests bench demos
	$(VENV)/bin/mypy

clean:
	rm -rf build .pytest_cache
