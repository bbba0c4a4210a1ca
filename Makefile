# scopeshim: `make run` starts the daemon on a private bus; `make test` sets up and runs all tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian 12 packages the tests and `make run` use (dbus-daemon, busctl, gdbus, systemd-escape)
APT_PACKAGES := dbus-daemon dbus-bin systemd libglib2.0-bin util-linux python3-venv
PYTEST_ARGS ?=

.PHONY: all deps venv run test e2e fuzz lint clean

all: venv

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (install them as root)"; exit 1; fi; \
	fi

$(BIN)/scopeshim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	@touch $@

venv: $(BIN)/scopeshim

run: deps venv
	@packaging/run-private-bus.sh $(BIN)/scopeshim

test: deps venv
	$(BIN)/pytest $(PYTEST_ARGS)

e2e: deps venv  # root + namespaces: real cgroup2 tree and the installed systemd-logind
	$(BIN)/pytest tests/e2e

fuzz: deps venv  # the nightly size of the generated-call tests
	SCOPESHIM_FUZZ_EXAMPLES=5000 $(BIN)/pytest tests/bus/test_fuzz.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shim compat backends
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
