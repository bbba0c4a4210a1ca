#!/usr/bin/env bash
# PID 1 of one boot of boot.sh (new pid, mount, uts, ipc, net and cgroup namespaces, the
# cgroup one rooted at the boot's own subtree): lays the overlay (the host's / below, the
# run's scratch upper layer above), gives it a container's view (private /run, minimal /dev
# with script(1)'s pty as /dev/console, read-only /proc/sys and /sys, cgroup2 at
# /sys/fs/cgroup), pivots into it and execs the init. Started by boot.sh only.
# Usage: boot-init.sh RUN_DIR INIT
set -eu
run=$1 init=$2
die() { echo "boot-init: $*" >&2; exit 1; }
[ "$$" = 1 ] || die "must be PID 1 of a new pid namespace"
cons=$(tty || true)
r=$run/root
mount -n -t overlay scopeshim-boot -o "lowerdir=/,upperdir=$run/scratch/upper,workdir=$run/scratch/work" "$r" ||
  die "overlay mount"
mount -n -t proc proc "$r/proc"
mount -n --bind "$r/proc/sys" "$r/proc/sys"; mount -n -o remount,bind,ro "$r/proc/sys"
mount -n --bind /dev/null "$r/proc/sysrq-trigger" 2>/dev/null || true
mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -n -t cgroup2 -o nsdelegate cgroup2 "$r/sys/fs/cgroup" || mount -n -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
mount -n -t tmpfs -o mode=755,size=64m,nosuid,nodev scopeshim-boot-run "$r/run"
mkdir -p "$r/run/lock" "$r/run/scopeshim-boot"
mount -n --bind "$run/shared" "$r/run/scopeshim-boot"        # the harness's window (witness, PAM hook)
mount -n -t tmpfs -o mode=755,size=1m scopeshim-boot-dev "$r/dev"
for n in null zero full random urandom tty; do touch "$r/dev/$n"; mount -n --bind "/dev/$n" "$r/dev/$n"; done
mkdir "$r/dev/pts" "$r/dev/shm" "$r/dev/mqueue"
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$r/dev/pts"; ln -s pts/ptmx "$r/dev/ptmx"
mount -n -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
touch "$r/dev/console"
case $cons in /dev/pts/*) mount -n --bind "$cons" "$r/dev/console" ;; *) die "no pty for /dev/console" ;; esac
ln -s /proc/self/fd "$r/dev/fd"; ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"; ln -s /proc/self/fd/2 "$r/dev/stderr"
# the source tree and the wheel directory (read-only binds made by boot.sh), for make install
for pair in "$run/src:/usr/src/scopeshim" "$run/wheels:/usr/src/scopeshim-wheels"; do
  mkdir -p "$r${pair#*:}"; mount -n --bind "${pair%%:*}" "$r${pair#*:}"
  mount -n -o remount,bind,ro "$r${pair#*:}"
done
hostname "scopeshim-boot-$init"
cd "$r"
mkdir -p .oldroot
pivot_root . .oldroot
umount -n -l /.oldroot
rmdir /.oldroot
cd /
case $init in
  openrc) exe=/sbin/openrc-init ;;
  *) exe=/sbin/init ;;
esac
exec env -i container=scopeshim-boot PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb "$exe" \
  </dev/console >/dev/console 2>&1
