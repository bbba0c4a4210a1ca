#!/usr/bin/env bash
# Fetches Debian's packages of an init system (from the host's own Debian suite) and unpacks
# them into a directory the boot harness lays over the host root; prints that directory.
# Nothing is installed on the host.
#
# Usage: get-init.sh [--refresh] sysvinit|openrc|runit
#   the layer is ${SCOPESHIM_CACHE:-/var/cache/scopeshim}/inits/INIT/root (a cache hit needs
#   no network)
#
# Exit status: 0 ready (stdout: the directory); 1 fetched but broken; 2 bad usage; 77 cannot
# be had here (not root, no apt, no network or mirror): the reason is on stderr.
#
# As tests/e2e/get-logind.sh does: apt-get runs with a configuration of its own (source list,
# lists and archive cache in a scratch directory, hooks cleared) whose only source is the
# host's own Debian archive entry as apt reads it (`apt-get indextargets`); `apt-get download`
# fetches the .debs and `dpkg-deb -x` unpacks them. Maintainer scripts do not run: the harness
# (boot.sh) does what their postinst would (inittab, runlevel links) inside the overlay.
set -euo pipefail
prog=get-init
say() { echo "$prog: $*" >&2; }
unavailable() { say "cannot fetch $init here: $*"; exit 77; }
refresh=0
[ "${1:-}" = --refresh ] && { refresh=1; shift; }
init=${1:-}
case $init in
  # sysv-rc's runlevel links need insserv and startpar; sysvinit-utils and mount are on
  # every Debian host already
  sysvinit) packages=(sysvinit-core initscripts sysv-rc insserv startpar) ;;
  # openrc-init as PID 1; OpenRC runs Debian's LSB scripts (dbus) too
  openrc) packages=(openrc libeinfo1 librc1 insserv initscripts) ;;
  # runit-init's stages 1 and 3 run the sysv scripts of rcS.d, rc2.d and rc6.d/rc0.d
  runit) packages=(runit runit-init runit-helper sysuser-helper getty-run insserv initscripts sysv-rc startpar) ;;
  *) sed -n '5,7s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
dir=${SCOPESHIM_CACHE:-/var/cache/scopeshim}/inits/$init
if [ "$refresh" = 0 ] && [ -s "$dir/PACKAGES" ] && [ -d "$dir/root" ]; then echo "$dir/root"; exit 0; fi
[ "$(id -u)" = 0 ] || unavailable "needs root"
for tool in apt-get dpkg-deb flock timeout; do
  command -v "$tool" >/dev/null || unavailable "$tool is not installed (this needs a Debian host)"
done
mkdir -p "$(dirname "$dir")" 2>/dev/null || unavailable "cannot write $(dirname "$dir")"
exec 9>"$dir.lock"
flock -w 600 9 || { say "another fetch has held $dir.lock for 10 minutes"; exit 1; }
if [ "$refresh" = 0 ] && [ -s "$dir/PACKAGES" ] && [ -d "$dir/root" ]; then echo "$dir/root"; exit 0; fi

codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"')
[ -n "$codename" ] || unavailable "no VERSION_CODENAME in /etc/os-release"
targets() {
  apt-get indextargets --no-release-info --format '$(SOURCESENTRY) $(REPO_URI) $(COMPONENT) $(RELEASE)' \
    "Target-Of: deb" "Created-By: Packages" 2>/dev/null | sort -u
}
entries=$(targets | awk -v code="$codename" '$4 == code') || true
[ -n "$entries" ] || unavailable "no $codename archive among the host's apt sources"
first=$(head -n1 <<<"$entries")
origin=${first%% *}
uri=$(cut -d' ' -f2 <<<"$first")
components=$(awk -v o="$origin" -v u="$uri" '$1 == o && $2 == u { print $3 }' <<<"$entries" |
  sort -u | paste -sd' ')
# the archive is checked with apt's trusted keys, as for the host's own entry
work=$(mktemp -d "$dir.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
a=$work/apt
mkdir -p "$a/sources.list.d" "$a/preferences.d" "$a/lists/partial" "$a/archives/partial" \
  "$work/debs" "$work/root"
printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\n' "$uri" "$codename" "$components" \
  >"$a/sources.list.d/scopeshim-inits.sources"
# read after the host's configuration: no hooks (one of them calls the system bus)
printf '#clear APT::Update::Pre-Invoke;\n#clear APT::Update::Post-Invoke;\n#clear APT::Update::Post-Invoke-Success;\n#clear DPkg::Pre-Invoke;\n#clear DPkg::Post-Invoke;\n' >"$a/apt.conf"
apt=(apt-get -q -c "$a/apt.conf"
  -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$a/sources.list.d"
  -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$a/preferences.d"
  -o "Dir::State::Lists=$a/lists" -o "Dir::Cache::Archives=$a/archives"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  -o APT::Sandbox::User=root -o Acquire::Languages=none
  -o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
say "apt source derived from $origin: $uri $codename $components"
timeout 600 "${apt[@]}" update >"$work/update.log" 2>&1 || true
compgen -G "$a/lists/*_dists_${codename}_*Packages*" >/dev/null ||
  unavailable "apt-get update got no package list for $codename from $uri (network or mirror)"
(cd "$work/debs" && timeout 600 "${apt[@]}" download "${packages[@]}") >"$work/download.log" 2>&1 ||
  { grep -E '^(E:|W:|Err:)' "$work/download.log" >&2 || true; unavailable "apt-get download ${packages[*]} failed"; }
: >"$work/PACKAGES"
for deb in "$work"/debs/*.deb; do
  echo "$(dpkg-deb --field "$deb" Package) $(dpkg-deb --field "$deb" Version)" >>"$work/PACKAGES"
  dpkg-deb -x "$deb" "$work/root" || { say "dpkg-deb -x $deb failed"; exit 1; }
done
rm -rf "$dir"
mkdir -p "$dir"
mv "$work/root" "$work/PACKAGES" "$dir/"
say "ready: $(paste -sd, "$dir/PACKAGES")"
echo "$dir/root"
