#!/usr/bin/env bash
# `make run`: a private dbus-daemon plus scopeshim on it; Ctrl-C tears both down.
# Uses the fake cgroup backend (a directory tree): safe on any machine, no root needed.
set -euo pipefail
scopeshim=${1:-scopeshim}
dir=$(mktemp -d "${TMPDIR:-/tmp}/scopeshim-run.XXXXXX")
bus_pid="" shim_pid=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$shim_pid" ] && kill -TERM "$shim_pid" 2>/dev/null && wait "$shim_pid" 2>/dev/null
  [ -n "$bus_pid" ] && kill -TERM "$bus_pid" 2>/dev/null && wait "$bus_pid" 2>/dev/null
  rm -rf "$dir"
  echo "scopeshim: stopped, private bus gone"
}
trap cleanup EXIT INT TERM

cat > "$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$dir/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile --print-address=3 3>"$dir/address" &
bus_pid=$!
for _ in $(seq 100); do [ -s "$dir/address" ] && break; sleep 0.05; done
address=$(head -n1 "$dir/address")
[ -n "$address" ] || { echo "dbus-daemon did not start" >&2; exit 1; }

"$scopeshim" serve --address "$address" --backend fake --cgroup-root "$dir/cgroupfs" \
  --state-dir "$dir/state" &
shim_pid=$!
for _ in $(seq 100); do
  busctl --address="$address" status org.freedesktop.systemd1 >/dev/null 2>&1 && break
  sleep 0.05
done

cat <<TXT

scopeshim is serving org.freedesktop.systemd1 on a private bus (fake cgroup backend).
  bus address:  $address
  cgroup tree:  $dir/cgroupfs

Try, in another terminal:
  sleep 600 & busctl --address=$address call org.freedesktop.systemd1 /org/freedesktop/systemd1 \\
    org.freedesktop.systemd1.Manager StartTransientUnit 'ssa(sv)a(sa(sv))' \\
    demo.scope fail 2 PIDs au 1 \$! Slice s user-1000.slice 0
  busctl --address=$address get-property org.freedesktop.systemd1 \\
    /org/freedesktop/systemd1/unit/demo_2escope org.freedesktop.systemd1.Unit ActiveState
  busctl --address=$address tree org.freedesktop.systemd1

Ctrl-C stops the daemon and the bus.
TXT
wait "$shim_pid"
