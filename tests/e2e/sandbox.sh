#!/usr/bin/env bash
# Runs COMMAND as root in throw-away namespaces for end-to-end tests:
#   - a cgroup2 subtree made for this run (scopeshim-test-e2e-*), removed afterwards,
#     which the cgroup namespace makes the root of the tree the sandbox sees;
#   - mount, pid, uts and ipc namespaces: a private /run, and a /sys/fs/cgroup that shows
#     only that cgroup2 tree at /sys/fs/cgroup/unified (the hybrid layout; the host's v1
#     hierarchies are hidden, so nothing inside can touch them);
#   - a private system bus at /run/dbus/system_bus_socket (never the host's).
# Usage: sandbox.sh [--timeout SEC] [--unified] -- COMMAND [ARGS...]
#   --unified  the cgroup2 tree at /sys/fs/cgroup itself (the unified view, the only one
#              systemd 258+ supports) instead of the hybrid view; COMMAND finds the tree's
#              path in $SCOPESHIM_E2E_CGROOT either way
# Environment: SCOPESHIM_E2E_KEEP=DIR copies the run's logs (*.log: the daemon's, logind's,
# dbus-daemon's) to DIR before the run directory is removed; SCOPESHIM_E2E_TAG=WORD goes
# into the names of the cgroup subtree and the run directory, so that a harness can tell its
# own runs from anyone else's when it checks that nothing is left.
# Exit: COMMAND's status; 77 when this machine cannot run it (the reason on stderr);
# 124 when the timeout killed it.
set -euo pipefail
timeout=120
view=hybrid
while [ $# -gt 0 ]; do
  case $1 in
    --timeout) timeout=$2; shift 2 ;;
    --unified) view=unified; shift ;;
    --) shift; break ;;
    *) echo "sandbox: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "sandbox: no command" >&2; exit 2; }
skip() { echo "sandbox: cannot run here: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root"
for tool in unshare findmnt dbus-daemon timeout; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done
cg2=$(findmnt -n -t cgroup2 -o TARGET | head -n1)
[ -n "$cg2" ] || skip "no cgroup2 mount"
unshare --cgroup --mount --pid --fork true 2>/dev/null || skip "unshare of cgroup/mount/pid namespaces refused"

here=$(cd "$(dirname "$0")" && pwd)
tag=${SCOPESHIM_E2E_TAG:-}
case $tag in *[!A-Za-z0-9]*) echo "sandbox: SCOPESHIM_E2E_TAG must be alphanumeric" >&2; exit 2 ;; esac
name="scopeshim-test-e2e-${tag:+$tag-}$$-$RANDOM"
sub="$cg2/$name"
mkdir "$sub" || skip "cannot create $sub"
run=$(mktemp -d "/tmp/scopeshim-e2e.${tag:+$tag-}XXXXXX")

cleanup() {
  # whatever is left in the subtree is ours: end it, then remove the subtree bottom-up
  if [ -e "$sub/cgroup.kill" ]; then echo 1 > "$sub/cgroup.kill" 2>/dev/null || true
  else
    find "$sub" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
      kill -KILL "$pid" 2>/dev/null || true; done
  fi
  for _ in $(seq 50); do
    find "$sub" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$sub" ] || break
    sleep 0.1
  done
  [ -d "$sub" ] && echo "sandbox: could not remove $sub" >&2
  if [ -n "${SCOPESHIM_E2E_KEEP:-}" ]; then
    mkdir -p "$SCOPESHIM_E2E_KEEP" && cp "$run"/*.log "$SCOPESHIM_E2E_KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT

set +e
# the subshell moves itself into the subtree (cgroup2 only: v1 memberships stay as they are),
# then becomes unshare; its child is PID 1 of the new namespaces
( echo "$BASHPID" > "$sub/cgroup.procs" || exit 99
  exec timeout --kill-after=5 "$timeout" unshare --mount --pid --fork --kill-child \
    --mount-proc --cgroup --uts --ipc --propagation private -- \
    "$here/sandbox-init.sh" "$run" "$view" "$@" )
rc=$?
set -e
exit $rc
