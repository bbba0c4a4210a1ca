#!/usr/bin/env bash
# Boots Debian's own INIT (sysvinit, openrc or runit) as PID 1 in throw-away namespaces over
# an overlay of this machine's root, runs the README's steps in the booted system, reboots it
# with the init's own command and boots again, BOOTS times in all; prints one JSON object per
# line (tests/boot/inside.py's facts, and the harness's own at the end of each boot).
#
# Usage: boot.sh [--boots N] [--timeout SEC] [--keep DIR] sysvinit|openrc|runit
#   --boots N     boots (default 3): the first installs (make install INIT=..., the services
#                 enabled the init's way), each checks, logs in and out, and reboots (the
#                 last powers off)
#   --timeout SEC limit for each boot, shutdown included (default 240)
#   --keep DIR    copies every boot's console log, PAM log and witness into DIR/bootN
#
# Isolation: per boot new pid, mount, uts, ipc, net (loopback only) and cgroup namespaces;
# the cgroup namespace is rooted at the boot's own directory under one cgroup2 subtree this
# script creates (scopeshim-boot-INIT-PID) and removes; nothing outside it is touched. The
# root is an overlay: the host's / below, a tmpfs upper layer kept across the run's boots
# (the disk) into which the init's Debian packages are unpacked (get-init.sh) and the
# harness's set-up is written. Nothing is installed on the host; every mount lives in a
# private mount namespace and ends with it.
# Exit: 0 every boot ran (the JSON says whether it was right); 77 cannot run here (the
# reason on stderr); 1 the harness failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
boots=3 timeout=240 keep="" init=""
while [ $# -gt 0 ]; do
  case $1 in
    --boots) boots=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --keep) keep=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
    -*) echo "boot.sh: unknown option $1" >&2; exit 2 ;;
    *) init=$1; shift ;;
  esac
done
case $init in sysvinit | openrc | runit) ;; *) sed -n '7,13s/^# \{0,1\}//p' "$0" >&2; exit 2 ;; esac
say() { echo "boot.sh[$init]: $*" >&2; }
skip() { say "cannot run here: $*"; exit 77; }

kill_tree() {  # end what is left in cgroup DIR (ours), then remove DIR bottom-up
  local d
  if [ -e "$1/cgroup.kill" ]; then echo 1 >"$1/cgroup.kill" 2>/dev/null || true
  else find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true; fi
  for _ in $(seq 50); do
    find "$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
    d=$(find "$1" -type d 2>/dev/null | head -n1 || true)
    [ -z "$d" ] && return 0
    sleep 0.1
  done
  say "could not remove $1"
}

if [ -z "${SCOPESHIM_BOOT_RUN:-}" ]; then
  # ------------------------------------------------------------ on the host: preflight
  [ "$(id -u)" = 0 ] || skip "needs root"
  for tool in unshare nsenter findmnt pivot_root tar script chroot; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
  done
  unshare --mount --pid --fork --cgroup --net --uts --ipc true 2>/dev/null ||
    skip "unshare of pid/mount/cgroup/net/uts/ipc namespaces refused"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    grep -qw overlay /proc/filesystems || skip "no overlay filesystem in this kernel"
  cg2=$(findmnt -n -t cgroup2 -o TARGET | head -n1)
  [ -n "$cg2" ] || skip "no cgroup2 mount"
  [ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is missing"
  layer=$("$here/get-init.sh" "$init") || exit $?
  # the wheels make install needs, for a booted system without network
  wheels=${SCOPESHIM_CACHE:-/var/cache/scopeshim}/wheels
  if ! compgen -G "$wheels/dbus_fast-*.whl" >/dev/null || ! compgen -G "$wheels/pydantic-*.whl" >/dev/null; then
    mkdir -p "$wheels"
    py=/usr/bin/python3
    [ -x "$src/.venv/bin/python" ] && py=$src/.venv/bin/python
    "$py" -m pip download -q -d "$wheels" 'setuptools>=77' wheel 'dbus-fast>=5.2,<6' 'pydantic>=2,<3' >&2 ||
      skip "pip cannot download the wheels make install needs (offline?)"
  fi
  sub=$cg2/scopeshim-boot-$init-$$
  mkdir "$sub" || skip "cannot create $sub"
  run=$(mktemp -d "/var/tmp/scopeshim-boot.$init.XXXXXX")
  chmod 755 "$run"
  # the outer namespace's mounts are gone once it has ended: only then is run removed, and
  # never across a file system boundary
  trap 'kill_tree "$sub"; rm -rf --one-file-system "$run"' EXIT
  set +e
  SCOPESHIM_BOOT_RUN=$run SCOPESHIM_BOOT_SUB=$sub SCOPESHIM_BOOT_LAYER=$layer \
    SCOPESHIM_BOOT_WHEELS=$wheels unshare --mount --propagation private -- \
    "$0" --boots "$boots" --timeout "$timeout" ${keep:+--keep "$keep"} "$init"
  rc=$?
  set -e
  exit $rc
fi

# ---------------------------------------------------------- in the outer mount namespace
[ -z "${SCOPESHIM_BOOT_TRACE:-}" ] || set -x
run=$SCOPESHIM_BOOT_RUN sub=$SCOPESHIM_BOOT_SUB
mkdir "$run/scratch" "$run/root" "$run/src" "$run/wheels" "$run/shared"
mount -n -t tmpfs -o mode=755,size=2g scopeshim-boot-scratch "$run/scratch"
mkdir "$run/scratch/upper" "$run/scratch/work"
for pair in "$src:$run/src" "$SCOPESHIM_BOOT_WHEELS:$run/wheels"; do
  mount -n --bind "${pair%%:*}" "${pair#*:}"; mount -n -o remount,bind,ro "${pair#*:}"
done

# ---- the disk before the first boot: the init's packages and what their postinst do
r=$run/root
mount -n -t overlay scopeshim-boot-prep -o "lowerdir=/,upperdir=$run/scratch/upper,workdir=$run/scratch/work" "$r"
tar -C "$SCOPESHIM_BOOT_LAYER" -c . | tar -C "$r" -x --keep-directory-symlink
layer_scripts=$(ls "$SCOPESHIM_BOOT_LAYER/etc/init.d")
# container-style: the host's own services are not part of the test (dbus is)
for f in "$r"/etc/init.d/*; do
  n=${f##*/}
  case " dbus $(echo $layer_scripts) " in *" $n "*) continue ;; esac
  rm -f "$f" "$r"/etc/rc?.d/[SK][0-9][0-9]"$n"
done
# logind: no VTs here, and a short UserStopDelaySec= so that a logout's end is seen soon
mkdir -p "$r/etc/systemd/logind.conf.d"
printf '[Login]\nNAutoVTs=0\nReserveVT=0\nUserStopDelaySec=1\nHandlePowerKey=ignore\nHandleSuspendKey=ignore\nHandleHibernateKey=ignore\nHandleLidSwitch=ignore\nIdleAction=ignore\n' \
  >"$r/etc/systemd/logind.conf.d/scopeshim-boot.conf"
# the user who logs in, and a PAM service: the host's common-session (pam_systemd) and the
# e2e hook that holds the login so that it can be looked at
chroot "$r" useradd -m -u 4711 -s /bin/sh scopeshim-boot
printf 'auth required pam_permit.so\naccount required pam_permit.so\n@include common-session\nsession required pam_exec.so /bin/sh /usr/src/scopeshim/tests/e2e/pam/session-hook.sh /run/scopeshim-boot/pam\n' \
  >"$r/etc/pam.d/scopeshim-boot"
# update-rc.d ... defaults of the packages' postinst: the runlevel links of their scripts
enable_sysv() {
  # shellcheck disable=SC2046 # one name per script
  chroot "$r" /sbin/insserv dbus scopeshim-boot-witness \
    $(echo "$layer_scripts" | grep -vx -e rc -e rcS -e README -e skeleton) >&2
}
case $init in
  sysvinit)
    # no gettys: there are no ttys here
    grep -Ev '^[^#:]*:[0-9]*:respawn:/sbin/getty' "$r/usr/share/sysvinit/inittab" >"$r/etc/inittab"
    install -m 0755 "$here/witness.sh" "$r/etc/init.d/scopeshim-boot-witness"
    enable_sysv ;;
  runit)
    # runit's preinst: the current service directory; no getty (there are no ttys here)
    ln -sfn /etc/runit/runsvdir/default "$r/etc/runit/runsvdir/current"
    rm -f "$r/etc/runit/runsvdir/default/getty-tty1"
    install -m 0755 "$here/witness.sh" "$r/etc/init.d/scopeshim-boot-witness"
    enable_sysv ;;
  openrc)
    install -m 0755 "$here/witness.openrc" "$r/etc/init.d/scopeshim-boot-witness"
    # openrc's postinst: rc2.d's services into default (dbus), its cgroups service into
    # sysinit; cgroup2 alone at /sys/fs/cgroup (README step 2), never the host's v1 hierarchies
    mkdir -p "$r"/etc/runlevels/{sysinit,boot,default,shutdown,nonetwork}
    ln -sf /etc/init.d/dbus "$r/etc/runlevels/default/dbus"
    ln -sf /etc/init.d/cgroups "$r/etc/runlevels/sysinit/cgroups"
    echo 'rc_cgroup_mode="unified"' >>"$r/etc/rc.conf"
    ln -sf /etc/init.d/scopeshim-boot-witness "$r/etc/runlevels/default/scopeshim-boot-witness" ;;
esac
umount -n "$r"

children() { cat "/proc/$1/task/$1/children" 2>/dev/null; }
inside() {  # inside.py ARGS in the booted system, from the boot's cgroup
  ( echo "$BASHPID" >"$bootcg/cgroup.procs"
    exec timeout --kill-after=5 300 nsenter -t "$nsinit" -m -u -i -n -p -C -r -w \
      env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LANG=C.UTF-8 /usr/bin/python3 /usr/src/scopeshim/tests/boot/inside.py "$@" )
}
for n in $(seq 1 "$boots"); do
  bootcg=$sub/boot$n
  mkdir "$bootcg"
  rm -rf --one-file-system "${run:?}/shared"/*
  echo "$n" >"$run/shared/boot"
  [ "$n" = "$boots" ] && action=poweroff || action=reboot
  say "boot $n of $boots"
  start=$(date +%s)
  # script(1) gives the boot a pty for /dev/console; what it shows is the console log
  ( echo "$BASHPID" >"$bootcg/cgroup.procs"
    SHELL=/bin/bash exec script -qfec "exec unshare --pid --fork --kill-child --mount --uts \
      --ipc --net --cgroup --propagation private -- bash $here/boot-init.sh $run $init" /dev/null
  ) </dev/null >"$run/console$n.log" 2>&1 &
  scriptpid=$!
  ushare="" nsinit=""
  for _ in $(seq 100); do  # PID 1 is up once boot-init.sh has exec'd the init
    ushare=$(children "$scriptpid") && ushare=${ushare%% *} &&
      [ "$(cat "/proc/$ushare/comm" 2>/dev/null)" = unshare ] &&
      nsinit=$(children "$ushare") && nsinit=${nsinit%% *} && [ -n "$nsinit" ] &&
      case $(cat "/proc/$nsinit/comm" 2>/dev/null) in bash | unshare | '') false ;; esac && break
    nsinit=""
    sleep 0.1
  done
  [ -n "$nsinit" ] || { say "boot $n: no PID 1"; cat "$run/console$n.log" >&2; exit 1; }
  # the boot (bounded), the README's steps on the first, the checks, a login, the init's
  # own reboot; whatever fails shows in the JSON
  inside booted "$init" "$n" || true
  if [ "$n" = 1 ]; then inside install "$init" || true; fi
  inside check "$init" "$n" || true
  inside login "$init" "$n" || true
  inside shutdown "$init" "$action" || true
  # reboot(2) in a pid namespace ends its PID 1 with SIGHUP (restart) or SIGINT (halt,
  # power-off); unshare and script(1) pass that on as 128+signal
  timed_out=false
  end=$((start + timeout))
  while kill -0 "$scriptpid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
  if kill -0 "$scriptpid" 2>/dev/null; then timed_out=true; kill -KILL "$nsinit" 2>/dev/null || true; fi
  set +e; wait "$scriptpid"; status=$?; set -e
  case $status in 129) ended=reboot ;; 130) ended=poweroff ;; *) ended="exit $status" ;; esac
  left_cgroups=$(cd "$bootcg" && find . -mindepth 1 -type d | sort | paste -sd' ')
  left_procs=$(find "$bootcg" -name cgroup.procs -exec cat {} + 2>/dev/null | wc -l)
  witness=$(cat "$run/shared/witness.json" 2>/dev/null || echo null)
  printf '{"step":"end","boot":%d,"asked":"%s","ended":"%s","timed_out":%s,"seconds":%d,"left_processes":%d,"left_cgroups":"%s","witness":%s}\n' \
    "$n" "$action" "$ended" "$timed_out" $(($(date +%s) - start)) "$left_procs" "$left_cgroups" "$witness"
  if [ -n "$keep" ]; then
    mkdir -p "$keep/boot$n" && cp -r "$run/shared/." "$run/console$n.log" "$keep/boot$n/" 2>/dev/null || true
  fi
  kill_tree "$bootcg"
  [ "$ended" = reboot ] || [ "$n" = "$boots" ] || { say "boot $n did not reboot ($ended)"; break; }
done
