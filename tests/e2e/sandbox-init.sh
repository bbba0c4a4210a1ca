#!/usr/bin/env bash
# PID 1 of sandbox.sh's namespaces: private filesystems, a private bus, then COMMAND.
set -u
run=$1; view=$2; shift 2
die() { echo "sandbox-init: $*" >&2; exit 1; }
[ "$$" = 1 ] || die "must be PID 1 of a new pid namespace"
mount -t tmpfs -o mode=755,size=64m scopeshim-run /run || die "tmpfs on /run"
mkdir -p /run/systemd /run/user /run/dbus /run/lock
if [ -d /var/lib/systemd ]; then mount -t tmpfs -o mode=755 scopeshim-varlib /var/lib/systemd; fi
if [ "$view" = unified ]; then
  # the unified view: cgroup2 at /sys/fs/cgroup, as on a systemd 258+ host
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || die "cgroup2 mount"
  export SCOPESHIM_E2E_CGROOT=/sys/fs/cgroup
else
  # the hybrid view: a tmpfs with cgroup2 at unified/ (the host's v1 hierarchies hidden)
  mount -t tmpfs -o mode=755,size=1m scopeshim-cgroup /sys/fs/cgroup || die "tmpfs on /sys/fs/cgroup"
  mkdir /sys/fs/cgroup/unified
  mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified || die "cgroup2 mount"
  export SCOPESHIM_E2E_CGROOT=/sys/fs/cgroup/unified
fi
grep -qx '0::/' /proc/self/cgroup || die "not at the root of the cgroup namespace"
hostname scopeshim-e2e
# a private copy of /etc/systemd: scopeshim writes set-property drop-ins to
# /etc/systemd/system.control (as systemd does), and nothing of a run may reach the host
if [ -d /etc/systemd ]; then
  mkdir -p /run/.etc-systemd && cp -a /etc/systemd/. /run/.etc-systemd/ &&
    mount -t tmpfs -o mode=755,size=8m scopeshim-etc-systemd /etc/systemd &&
    cp -a /run/.etc-systemd/. /etc/systemd/ && rm -rf /run/.etc-systemd ||
    die "private /etc/systemd"
fi

cat > "$run/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$run/bus.conf" --nofork --nopidfile --nosyslog \
  --print-address=3 3>"$run/address" 2>"$run/dbus-daemon.log" &
for _ in $(seq 100); do [ -s "$run/address" ] && break; sleep 0.02; done
[ -s "$run/address" ] || die "dbus-daemon did not start: $(cat "$run/dbus-daemon.log")"
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
export SCOPESHIM_E2E_RUN="$run"
unset DBUS_SESSION_BUS_ADDRESS XDG_RUNTIME_DIR

"$@" &
child=$!
wait "$child"
rc=$?
# end everything else in the namespace, politely first
kill -TERM -1 2>/dev/null
for _ in $(seq 30); do
  [ -z "$(ls /proc | grep -E '^[0-9]+$' | grep -vx 1)" ] && break
  sleep 0.1
done
kill -KILL -1 2>/dev/null
exit $rc
