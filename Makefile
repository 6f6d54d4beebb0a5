# medsec: `make run` starts the stack, `make test` runs every test. Both install what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-test venv system system-test nodered run test test-fast test-node bench lint clean firmware flash images

setup: venv system nodered

setup-test: venv system-test nodered

venv: $(VENV)/.installed

# setup.py builds the compiled key loop of auth (services/auth/_keyscan.c) into the source tree.
$(VENV)/.installed: pyproject.toml setup.py services/auth/_keyscan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system:
	scripts/install-system-packages.sh run

system-test:
	scripts/install-system-packages.sh test

nodered:
	@if [ -f nodered/Makefile ]; then $(MAKE) -C nodered install; fi

run: setup
	$(BIN)/medsec up --demo 3

# Lint and Node-RED's mocha tests first, so pytest's summary is the last line.
test: setup-test lint test-node
	$(BIN)/pytest

# The fast loop: lint, then the unit tier only (no broker, database or browser; tests/conftest.py).
test-fast: venv lint
	$(BIN)/pytest -m unit -q

test-node:
	@if [ -f nodered/Makefile ]; then $(MAKE) -C nodered test; fi

firmware: venv
	$(MAKE) -C firmware build

flash: firmware
	$(MAKE) -C firmware flash PORT=$(PORT)

bench: setup-test
	$(BIN)/python -m benchmarks.run

lint: venv
	$(BIN)/ruff check services tests benchmarks

clean:
	rm -rf $(VENV)

# Every image of the compose deployment, on a local Debian base made with debootstrap (no registry
# needed); Podman's layer cache makes a rebuild after a code change take seconds.
images:
	scripts/build-images.sh
