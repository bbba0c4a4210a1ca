# scopeshim: `make run` starts the daemon on a private bus; `make test` sets up and runs all tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian 12 packages the tests and `make run` use (dbus-daemon, busctl, gdbus, systemd-escape;
# pam_systemd.so and pamtester for the e2e PAM login; python3-dbusmock: the polkit peer)
APT_PACKAGES := dbus-daemon dbus-bin systemd libglib2.0-bin util-linux python3-venv \
	libpam-systemd pamtester python3-dbusmock
# the logind versions e2e fetches into ${SCOPESHIM_CACHE:-/var/cache/scopeshim} (252 is installed)
LOGIND_VERSIONS := 254 257
PYTEST_ARGS ?=

.PHONY: all deps venv logind run test e2e fuzz lint clean

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

# Debian's unmodified logind 254/257 into the cache (tests/e2e/get-logind.sh; a cache hit is
# instant). A failure prints its reason and stops nothing: the e2e tests of that version then
# skip with it (exit 77: no network, not root) or fail with it (anything else).
logind:
	@for v in $(LOGIND_VERSIONS); do tests/e2e/get-logind.sh $$v >/dev/null || true; done

test: deps venv logind
	$(BIN)/pytest $(PYTEST_ARGS)

e2e: deps venv logind  # root + namespaces: real cgroup2 tree, logind 252/254/257, PAM login
	$(BIN)/pytest tests/e2e

fuzz: deps venv  # the nightly size of the generated-call tests
	SCOPESHIM_FUZZ_EXAMPLES=5000 $(BIN)/pytest tests/bus/test_fuzz.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shim compat backends
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
