# scopeshim: `make run` starts the daemon on a private bus; `make test` sets up and runs all tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian 12 packages the tests and `make run` use (dbus-daemon, busctl, gdbus, systemd-escape;
# pam_systemd.so and pamtester for the e2e PAM login; python3-dbusmock: the polkit peer;
# systemd-container: machined and systemd-nspawn for the Controller=/RequestStop e2e test;
# python3-gi, gir1.2-gnomedesktop-3.0: flatpak's GDBus calls and gnome_start_systemd_scope;
# libsystemd-dev, pkg-config: pystemd's build (its run() in tests/bus/test_pystemd.py);
# podman, crun, uidmap: healthchecks and rootless containers on the user manager (e2e);
# qemu-system-x86 and busybox-static: the VM tier, tests/vm)
APT_PACKAGES := dbus-daemon dbus-bin systemd libglib2.0-bin util-linux python3-venv \
	libpam-systemd pamtester python3-dbusmock runc busybox-static systemd-container podman \
	python3-gi gir1.2-gnomedesktop-3.0 qemu-system-x86 libsystemd-dev pkg-config uidmap crun
# the logind versions e2e fetches into ${SCOPESHIM_CACHE:-/var/cache/scopeshim} (252 is installed)
LOGIND_VERSIONS := 254 257 262
PYTEST_ARGS ?=

.PHONY: all deps venv logind vm-kernel run test test-vm e2e e2e-init demo fuzz stress lint bench clean

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
	@# pystemd (tests/bus/test_pystemd.py) builds against libsystemd-dev: best effort
	$(BIN)/pip install -q pystemd || echo "pystemd not installed: tests/bus/test_pystemd.py skips"
	@touch $@

venv: $(BIN)/scopeshim

run: deps venv
	@packaging/run-private-bus.sh $(BIN)/scopeshim

# Debian's unmodified logind 254/257/262 and their clients into the cache
# (tests/e2e/get-logind.sh; a cache hit is instant). A failure prints its reason and stops
# nothing: the e2e tests of that version then skip with it (exit 77: no network, not root) or
# fail with it (anything else).
logind:
	@for v in $(LOGIND_VERSIONS); do tests/e2e/get-logind.sh $$v >/dev/null || true; done

# Debian's own kernel for the VM tier into ${SCOPESHIM_CACHE:-/var/cache/scopeshim}/vm
# (tests/vm/get-kernel.sh; a cache hit is instant). A failure stops nothing: the VM tier then
# skips with the reason (exit 77) or fails with it.
vm-kernel:
	@tests/vm/get-kernel.sh >/dev/null || true

test: deps venv logind vm-kernel
	$(BIN)/pytest $(PYTEST_ARGS)

# the VM tier alone (tests/vm, docs/vm-tier.md): one qemu boot of Debian's kernel running every
# kernel-enforced check through scopeshim; SCOPESHIM_VM_KEEP=DIR keeps the guest's logs
test-vm: deps venv vm-kernel
	$(BIN)/pytest $(PYTEST_ARGS) tests/vm

# root + namespaces (tests/e2e/sandbox.sh): the logind matrix {252,254,257,262} x {hybrid,
# unified cgroup view} x {root, unprivileged} x {each lifecycle step}, PAM logins, the clients
# of 252/257/262 as root, 200 session cycles, the other sandbox tests; one line per case
# (tests/e2e/caselines.py), then "N passed, M failed"; last, a check that no cgroup, mount or
# process of the run is left. SCOPESHIM_E2E_JOBS: sandbox runs of the
# matrix at a time (default 3); SCOPESHIM_E2E_KEEP=DIR keeps every run's logs in DIR.
E2E_ARGS ?=
e2e: deps venv logind
	$(BIN)/python -m pytest -p tests.e2e.caselines -q --no-header --tb=short \
	  -o console_output_style=classic $(E2E_ARGS) tests/e2e

# real boots (tests/boot/boot.sh; part of `make test` too): Debian 12's sysvinit, OpenRC and
# runit as PID 1 in namespaces over an overlay of this machine's root (packages fetched into
# ${SCOPESHIM_CACHE:-/var/cache/scopeshim}/inits, nothing installed here), scopeshim installed
# the README's way, then SCOPESHIM_BOOTS boots (default 3) each checked; SCOPESHIM_BOOT_KEEP=DIR
# keeps every boot's console log and witness
e2e-init: deps venv
	$(BIN)/pytest -q tests/boot

# a real logind session through scopeshim in the sandbox, shown step by step, then torn down
# (tests/e2e/demo.py; DEMO_ARGS="--user root" or "--logind PATH")
DEMO_ARGS ?=
demo: deps venv
	@tests/e2e/sandbox.sh --timeout 120 -- $(BIN)/python tests/e2e/demo.py $(DEMO_ARGS)

fuzz: deps venv  # the nightly size of the generated-call tests
	SCOPESHIM_FUZZ_EXAMPLES=5000 $(BIN)/pytest tests/bus/test_fuzz.py

# the larger load run: 10,000 start/stop cycles from 50 clients, 1,000 logind sessions, 20,000
# generated calls per fuzz test (make test: 1,000 cycles, 200 sessions, 200 calls)
stress: deps venv logind
	SCOPESHIM_STRESS_CYCLES=10000 SCOPESHIM_STRESS_SESSIONS=1000 SCOPESHIM_FUZZ_EXAMPLES=20000 \
	  $(BIN)/pytest -s --timeout 3600 tests/bus/test_load.py tests/e2e/test_cycles.py \
	  tests/bus/test_fuzz.py

# Benchmarks side by side (bench/run.py): scopeshim (fake; cgroup2 in tests/e2e/sandbox.sh) vs
# the real systemd 252 (../shared/lab), python-dbusmock's systemd template and a dbus-fast floor,
# each on its own private bus. Outputs in bench/results/. BENCH_QUICK=1: fewer repeats, 100 and
# 1,000 live units only; BENCH_ONLY=floor,scopeshim-fake,...: a subset; BENCH_PHASES=kube,...:
# the driver's phases, a subset (bench/README.md).
BENCH_QUICK ?=
BENCH_ONLY ?=
BENCH_PHASES ?=
$(VENV)/.bench-deps: pyproject.toml $(BIN)/scopeshim
	$(BIN)/pip install -q -e '.[test,dev,bench]'
	@touch $@

bench: deps venv $(VENV)/.bench-deps
	$(BIN)/python bench/run.py $(if $(BENCH_QUICK),--quick) $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(if $(BENCH_PHASES),--phases $(BENCH_PHASES))

# `make install [DESTDIR=...] [PREFIX=/usr/local] [INIT=sysvinit]` (packaging/install.sh):
# scopeshim in its own Python environment (PREFIX/lib/scopeshim, built with INSTALL_PYTHON and
# pip), PREFIX/sbin/scopeshim, /etc/scopeshim/scopeshim.toml, scopeshim(8) and
# scopeshim.toml(5), the system bus policy (/etc/dbus-1/system.d/scopeshim.conf), the D-Bus
# activation file (/usr/local/share/dbus-1/system-services, ahead of the distribution's) and
# the service definition for INIT (sysvinit openrc runit s6 upstart none; copies of all in
# PREFIX/share/scopeshim/init). `make uninstall` removes it (changed configuration stays).
PREFIX ?= /usr/local
DESTDIR ?=
INIT ?= sysvinit
INSTALL_PYTHON ?= /usr/bin/python3
INSTALL_VARS = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" INIT="$(INIT)" \
	INSTALL_PYTHON="$(INSTALL_PYTHON)" SBINDIR="$(SBINDIR)" LIBDIR="$(LIBDIR)" \
	DATADIR="$(DATADIR)" MANDIR="$(MANDIR)" SYSCONFDIR="$(SYSCONFDIR)" \
	DBUS_SERVICEDIR="$(DBUS_SERVICEDIR)" DBUS_POLICYDIR="$(DBUS_POLICYDIR)" \
	PIP_INSTALL_ARGS="$(PIP_INSTALL_ARGS)"

.PHONY: install uninstall
install:
	@$(INSTALL_VARS) packaging/install.sh install

uninstall:
	@$(INSTALL_VARS) packaging/install.sh uninstall

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shim compat backends
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
