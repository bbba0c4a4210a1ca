#!/usr/bin/env bash
# Inside sandbox.sh: scopeshim (cgroup2 backend) as the system manager, then Debian's podman
# 4.3 as root runs a container with --health-cmd; its healthcheck timer and service are
# scopeshim's transient units (tests/e2e/test_podman_healthcheck.py). Usage: WORKDIR
set -u
work=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
"$root/.venv/bin/python" -m shim serve --system --backend cgroup2 \
  --cgroup-root "$SCOPESHIM_E2E_CGROOT" --state-dir /run/scopeshim --log-level debug \
  --config "$root/tests/e2e/scopeshim-e2e.toml" --private-socket /run/systemd/private \
  --mark-booted > "$work/scopeshim.log" 2>&1 &
daemon=$!
for _ in $(seq 150); do busctl status org.freedesktop.systemd1 >/dev/null 2>&1 && break; sleep 0.1; done
# podman's storage and settings in WORKDIR, seen at /etc/containers in this mount namespace
# only (the healthcheck service's `podman healthcheck run` reads the same files)
mkdir -p "$work/etc" "$work/storage" "$work/rootfs/bin"
cp -a /etc/containers/. "$work/etc/"
printf '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "%s"\n' \
  "$work/storage" > "$work/etc/storage.conf"
# no pids controller on this machine's cgroup2 tree: no pids limit (runc would write pids.max);
# runc, not crun, whichever podman would pick (crun's setrlimit(RLIMIT_MEMLOCK) is refused in
# the sandbox; `make deps` installs crun for the rootless tests)
printf '[engine]\nevents_logger = "file"\nruntime = "runc"\n[containers]\npids_limit = 0\n' \
  > "$work/etc/containers.conf"
mount --bind "$work/etc" /etc/containers
# podman keeps a blob-info cache in /var/lib/containers whatever graphroot says: one that
# was not there before goes at the end
had_var=no; [ -e /var/lib/containers ] && had_var=yes
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
for c in sh true sleep; do ln -s busybox "$work/rootfs/bin/$c"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
podman import -q "$work/rootfs.tar" localhost/hc-test:latest >/dev/null
id=$(podman run -d --name hc --network none --cgroup-manager systemd --health-cmd true \
  --health-interval 1s localhost/hc-test:latest sleep 600)
echo "run-status=$? id=$id"
echo "== timers"; systemctl list-timers --all --no-pager --no-legend
echo "== show"; systemctl show -p Triggers -p TimersMonotonic -p AccuracyUSec "$id.timer"
for _ in $(seq 300); do
  n=$(podman inspect --format '{{len .State.Health.Log}}' hc 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.1
done
echo "health=$(podman inspect --format '{{.State.Health.Status}} {{len .State.Health.Log}}' hc)"
echo "== service"; systemctl show -p Result -p ExecMainStatus -p TriggeredBy "$id.service"
podman rm -f -t 0 hc >/dev/null; echo "rm-status=$?"
for _ in $(seq 100); do systemctl list-units --all --plain --no-legend | grep -q "$id\.timer" || break; sleep 0.1; done
echo "left=$(systemctl list-units --all --plain --no-legend | grep -c "^$id\.\(timer\|service\)")"
podman rmi -f localhost/hc-test:latest >/dev/null 2>&1
[ "$had_var" = yes ] || rm -rf /var/lib/containers
kill "$daemon"; wait "$daemon"; echo "daemon-exit=$?"
