#!/bin/sh
# `make install` and `make uninstall`: packaging/install.sh install|uninstall, run from the
# source tree, configured by the environment (the Makefile passes its variables through):
#
#   DESTDIR          staging root prepended to every path below (default: none)
#   PREFIX           /usr/local
#   SBINDIR          PREFIX/sbin: the scopeshim command
#   LIBDIR           PREFIX/lib/scopeshim: scopeshim's own Python environment (a venv, so no
#                    top-level module such as shim, compat or backends lands in the system's
#                    site-packages)
#   DATADIR          PREFIX/share: man pages, reference copies of every service definition
#   MANDIR           DATADIR/man
#   SYSCONFDIR       /etc: scopeshim/scopeshim.toml and the service definition for INIT
#   DBUS_SERVICEDIR  /usr/local/share/dbus-1/system-services, whatever PREFIX is: the first
#                    of dbus-daemon's standard system service directories, ahead of
#                    /usr/share/dbus-1/system-services where Debian's systemd package keeps
#                    org.freedesktop.systemd1.service (Exec=/bin/false)
#   DBUS_POLICYDIR   SYSCONFDIR/dbus-1/system.d: read after /usr/share/dbus-1/system.d
#   INIT             service definitions to put in place, any of: sysvinit openrc runit s6
#                    upstart (space-separated; "none" for none). Default: sysvinit
#   INSTALL_PYTHON   the interpreter of the environment: /usr/bin/python3 (>= 3.11)
#   PIP_INSTALL_ARGS extra pip arguments, e.g. "--no-index --find-links DIR" offline
#
# Every file written is listed in LIBDIR/install-manifest. A configuration file under
# SYSCONFDIR that exists and differs from the shipped one is kept; the shipped one is written
# beside it as NAME.dist. `uninstall` removes what the manifest lists, configuration files only
# while they are unchanged.
set -eu

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
SBINDIR=${SBINDIR:-$PREFIX/sbin}
LIBDIR=${LIBDIR:-$PREFIX/lib/scopeshim}
DATADIR=${DATADIR:-$PREFIX/share}
MANDIR=${MANDIR:-$DATADIR/man}
SYSCONFDIR=${SYSCONFDIR:-/etc}
DBUS_SERVICEDIR=${DBUS_SERVICEDIR:-/usr/local/share/dbus-1/system-services}
DBUS_POLICYDIR=${DBUS_POLICYDIR:-$SYSCONFDIR/dbus-1/system.d}
INIT=${INIT:-sysvinit}
INSTALL_PYTHON=${INSTALL_PYTHON:-/usr/bin/python3}
PIP_INSTALL_ARGS=${PIP_INSTALL_ARGS:-}

die() { echo "install.sh: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
manifest=$LIBDIR/install-manifest

for var in PREFIX SBINDIR LIBDIR DATADIR MANDIR SYSCONFDIR DBUS_SERVICEDIR DBUS_POLICYDIR; do
  eval "value=\$$var"
  case $value in
    /*) ;;
    *) die "$var must be an absolute path, not '$value'" ;;
  esac
  case $value in *'|'* | *'@'* | *' '*) die "$var may not contain '|', '@' or spaces" ;; esac
done
case $DESTDIR in '' | /*) ;; *) die "DESTDIR must be an absolute path" ;; esac
# LIBDIR is replaced wholesale on (re)install and removed on uninstall: it must be ours
case ${LIBDIR##*/} in *scopeshim*) ;; *) die "LIBDIR's last component must name scopeshim" ;; esac

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$src/pyproject.toml" | head -n1)
[ -n "$version" ] || die "no version in $src/pyproject.toml"

# the path of LIBDIR relative to SBINDIR, so that a staged copy (DESTDIR) runs its own
rellib=$("$INSTALL_PYTHON" -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
  "$LIBDIR" "$SBINDIR")

subst() {
  sed -e "s|@SBINDIR@|$SBINDIR|g" -e "s|@LIBDIR@|$LIBDIR|g" -e "s|@RELLIB@|$rellib|g" \
    -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" -e "s|@DATADIR@|$DATADIR|g" \
    -e "s|@DBUS_SERVICEDIR@|$DBUS_SERVICEDIR|g" -e "s|@DBUS_POLICYDIR@|$DBUS_POLICYDIR|g" \
    -e "s|@VERSION@|$version|g" -e "s|@DATE@|$date|g" \
    -e "s|@ACTIVATE_INIT@|${activate_init:-none}|g" "$@"
}

# put MODE SOURCE TARGET: install one file (placeholders substituted), record it
put() {
  mkdir -p "$DESTDIR${3%/*}"
  subst "$2" >"$DESTDIR$3.new"
  chmod "$1" "$DESTDIR$3.new"
  mv -f "$DESTDIR$3.new" "$DESTDIR$3"
  echo "file $3" >>"$DESTDIR$manifest"
}

# conf MODE SOURCE TARGET: a configuration file; an existing one that differs is kept
conf() {
  mkdir -p "$DESTDIR${3%/*}"
  subst "$2" >"$DESTDIR$3.new"
  chmod "$1" "$DESTDIR$3.new"
  sum=$(sha256sum <"$DESTDIR$3.new" | cut -d' ' -f1)
  if [ -e "$DESTDIR$3" ] && ! cmp -s "$DESTDIR$3.new" "$DESTDIR$3"; then
    mv -f "$DESTDIR$3.new" "$DESTDIR$3.dist"
    echo "install.sh: kept $3 (changed locally); the shipped one is $3.dist"
    echo "conf $sum $3.dist" >>"$DESTDIR$manifest"
  else
    mv -f "$DESTDIR$3.new" "$DESTDIR$3"
    echo "conf $sum $3" >>"$DESTDIR$manifest"
  fi
}

# where each init's definition goes: lines "MODE SOURCE TARGET REFERENCE [conf]", REFERENCE
# being the copy's path under DATADIR/scopeshim/init. Each init also gets a definition that
# starts Debian's systemd-logind after scopeshim (Debian ships none for these inits).
init_files() {
  i=$here/init
  case $1 in
    sysvinit)
      echo "0755 $i/sysvinit/scopeshim.in $SYSCONFDIR/init.d/scopeshim sysvinit/init.d/scopeshim"
      echo "0644 $i/sysvinit/scopeshim.default $SYSCONFDIR/default/scopeshim sysvinit/default/scopeshim conf"
      echo "0755 $i/sysvinit/systemd-logind.in $SYSCONFDIR/init.d/systemd-logind sysvinit/init.d/systemd-logind" ;;
    openrc)
      echo "0755 $i/openrc/scopeshim.in $SYSCONFDIR/init.d/scopeshim openrc/init.d/scopeshim"
      echo "0644 $i/openrc/scopeshim.confd $SYSCONFDIR/conf.d/scopeshim openrc/conf.d/scopeshim conf"
      echo "0755 $i/openrc/systemd-logind.in $SYSCONFDIR/init.d/systemd-logind openrc/init.d/systemd-logind" ;;
    runit)
      echo "0755 $i/runit/run.in $SYSCONFDIR/sv/scopeshim/run runit/scopeshim/run"
      echo "0755 $i/runit/check.in $SYSCONFDIR/sv/scopeshim/check runit/scopeshim/check"
      echo "0755 $i/runit/log/run $SYSCONFDIR/sv/scopeshim/log/run runit/scopeshim/log/run"
      echo "0755 $i/runit-logind/run $SYSCONFDIR/sv/systemd-logind/run runit/systemd-logind/run"
      echo "0755 $i/runit-logind/check $SYSCONFDIR/sv/systemd-logind/check runit/systemd-logind/check" ;;
    s6)
      echo "0644 $i/s6/type $SYSCONFDIR/s6/sv/scopeshim/type s6/scopeshim/type"
      echo "0755 $i/s6/run.in $SYSCONFDIR/s6/sv/scopeshim/run s6/scopeshim/run"
      echo "0644 $i/s6/notification-fd $SYSCONFDIR/s6/sv/scopeshim/notification-fd s6/scopeshim/notification-fd"
      echo "0644 $i/s6/dependencies.d/dbus $SYSCONFDIR/s6/sv/scopeshim/dependencies.d/dbus s6/scopeshim/dependencies.d/dbus"
      echo "0644 $i/s6-logind/type $SYSCONFDIR/s6/sv/systemd-logind/type s6/systemd-logind/type"
      echo "0755 $i/s6-logind/run $SYSCONFDIR/s6/sv/systemd-logind/run s6/systemd-logind/run"
      echo "0644 $i/s6-logind/dependencies.d/scopeshim $SYSCONFDIR/s6/sv/systemd-logind/dependencies.d/scopeshim s6/systemd-logind/dependencies.d/scopeshim" ;;
    upstart)
      echo "0644 $i/upstart/scopeshim.conf.in $SYSCONFDIR/init/scopeshim.conf upstart/scopeshim.conf"
      echo "0644 $i/upstart/systemd-logind.conf $SYSCONFDIR/init/systemd-logind.conf upstart/systemd-logind.conf" ;;
    *) die "unknown INIT '$1' (sysvinit, openrc, runit, s6, upstart or none)" ;;
  esac
}

python_environment() {
  # built beside the old one and swapped in at the end: a failed build (no network, say)
  # leaves an installed scopeshim as it was. A venv does not record its own location (its
  # python3 is a symlink to INSTALL_PYTHON), so it can be built in one place and moved.
  lib=$DESTDIR$LIBDIR
  if [ -e "$lib" ] && [ ! -e "$lib/pyvenv.cfg" ]; then
    die "$lib exists and is not scopeshim's environment"
  fi
  "$INSTALL_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$INSTALL_PYTHON is older than Python 3.11"
  new=$lib.new
  rm -rf "$new" "$lib.old"
  mkdir -p "${lib%/*}"
  "$INSTALL_PYTHON" -m venv "$new" ||
    die "$INSTALL_PYTHON -m venv failed (Debian: apt-get install python3-venv)"
  # build from a copy: the build writes build/ and *.egg-info next to the sources
  build=$(mktemp -d "${TMPDIR:-/tmp}/scopeshim-build.XXXXXX")
  trap 'rm -rf "$build" "$new"' EXIT
  cp -R "$src/pyproject.toml" "$src/README.md" "$src/shim" "$src/compat" "$src/backends" "$build/"
  find "$build" -name __pycache__ -prune -exec rm -rf {} +
  # shellcheck disable=SC2086 # PIP_INSTALL_ARGS is a list of arguments
  "$new/bin/python3" -m pip install --quiet --no-compile --disable-pip-version-check \
    $PIP_INSTALL_ARGS "$build[config]" || die "pip could not install scopeshim (see above)"
  "$new/bin/python3" -m pip uninstall --quiet --yes pip setuptools >/dev/null 2>&1 || true
  # activate scripts and console scripts name the build path; SBINDIR/scopeshim is the command
  find "$new/bin" -mindepth 1 ! -name 'python*' -exec rm -f {} +
  sed -i '/^command = /d' "$new/pyvenv.cfg"  # how it was made, naming the build path
  "$new/bin/python3" -m compileall -q -j 0 "$new/lib" >/dev/null
  if [ -e "$lib" ]; then mv "$lib" "$lib.old"; fi
  mv "$new" "$lib"
  rm -rf "$lib.old" "$build"
  trap - EXIT
}

install_all() {
  date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y "$src/man/scopeshim.8.in")}" +%Y-%m-%d)
  inits=
  for init in $INIT; do
    [ "$init" = none ] && continue
    init_files "$init" >/dev/null
    inits="$inits $init"
  done
  case " $inits " in *" sysvinit "*)
    case " $inits " in *" openrc "*)
      die "INIT: sysvinit and openrc both use $SYSCONFDIR/init.d/scopeshim; choose one" ;;
    esac ;;
  esac

  # D-Bus activation hands the start to the first INIT (packaging/activate.in)
  set -- $inits
  activate_init=${1:-none}
  python_environment
  : >"$DESTDIR$manifest"
  put 0755 "$here/scopeshim.in" "$SBINDIR/scopeshim"
  put 0755 "$here/activate.in" "$LIBDIR/activate"
  conf 0644 "$here/scopeshim.toml" "$SYSCONFDIR/scopeshim/scopeshim.toml"
  put 0644 "$here/scopeshim.toml" "$DATADIR/scopeshim/scopeshim.toml"
  put 0644 "$src/man/scopeshim.8.in" "$MANDIR/man8/scopeshim.8"
  put 0644 "$src/man/scopeshim.toml.5.in" "$MANDIR/man5/scopeshim.toml.5"
  put 0644 "$here/dbus/org.freedesktop.systemd1.service.in" \
    "$DBUS_SERVICEDIR/org.freedesktop.systemd1.service"
  put 0644 "$here/dbus/scopeshim.conf" "$DBUS_POLICYDIR/scopeshim.conf"
  # every init's definition, for reference (and for another init than INIT)
  for init in sysvinit openrc runit s6 upstart; do
    init_files "$init" | while read -r mode file _ reference _; do
      put "$mode" "$file" "$DATADIR/scopeshim/init/$reference"
    done
  done
  for init in $inits; do
    init_files "$init" | while read -r mode file target _ kind; do
      if [ "$kind" = conf ]; then conf "$mode" "$file" "$target"; else put "$mode" "$file" "$target"; fi
    done
  done
  echo "installed scopeshim $version in ${DESTDIR:-/}: $SBINDIR/scopeshim (environment" \
    "$LIBDIR), $SYSCONFDIR/scopeshim/scopeshim.toml, service definitions:${inits:- none}"
}

uninstall_all() {
  [ -r "$DESTDIR$manifest" ] || die "$DESTDIR$manifest not found: nothing installed there"
  while read -r kind a b; do
    if [ "$kind" = conf ]; then
      [ -e "$DESTDIR$b" ] || continue
      if [ "$(sha256sum <"$DESTDIR$b" | cut -d' ' -f1)" = "$a" ]; then
        rm -f "$DESTDIR$b"
      else
        echo "install.sh: kept $b (changed locally)"
      fi
    else
      rm -f "$DESTDIR$a"
    fi
  done <"$DESTDIR$manifest"
  rm -rf "$DESTDIR$LIBDIR"
  # directories only scopeshim uses, once empty
  [ -d "$DESTDIR$DATADIR/scopeshim" ] &&
    find "$DESTDIR$DATADIR/scopeshim" -depth -type d -empty -delete
  for dir in "$SYSCONFDIR/sv/scopeshim/log" "$SYSCONFDIR/sv/scopeshim" \
    "$SYSCONFDIR/sv/systemd-logind" "$SYSCONFDIR/s6/sv/scopeshim/dependencies.d" \
    "$SYSCONFDIR/s6/sv/scopeshim" "$SYSCONFDIR/s6/sv/systemd-logind/dependencies.d" \
    "$SYSCONFDIR/s6/sv/systemd-logind" "$SYSCONFDIR/scopeshim"; do
    if [ -d "$DESTDIR$dir" ]; then rmdir "$DESTDIR$dir" 2>/dev/null || true; fi
  done
  echo "uninstalled scopeshim from ${DESTDIR:-/}"
}

case ${1:-} in
  install) install_all ;;
  uninstall) uninstall_all ;;
  *) die "usage: install.sh install|uninstall" ;;
esac
