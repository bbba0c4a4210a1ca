#!/usr/bin/env bash
# Puts Debian's unmodified systemd-logind VERSION where the end-to-end tests can run it, and
# prints the path of a program that runs it (one line on stdout; progress goes to stderr).
#
# Usage: get-logind.sh [--dir DIR] [--refresh] VERSION
#   252  the installed /lib/systemd/systemd-logind (Debian 12's own; nothing is fetched)
#   254  systemd + libsystemd-shared from bookworm-backports; bookworm's libc runs it
#   257  systemd + libsystemd-shared + libc6 + libssl3t64 (+ libpam-systemd) from trixie; it
#        runs through trixie's own dynamic loader (ld-linux ... --library-path), not the host's
#   262  the same from sid (Debian unstable), with the newer libraries libsystemd-shared-262
#        links against, through sid's loader
# The clients of the same build (systemctl, systemd-run, loginctl, busctl, systemd-cgls) and
# pam_systemd.so come in the same packages; DIR/bin/TOOL runs each of them the same way.
#   --dir DIR   where VERSION lives (default ${SCOPESHIM_CACHE:-/var/cache/scopeshim}/logind-VERSION)
#   --refresh   fetch again even when DIR already holds a working copy
#
# Exit status: 0 ready (stdout: the program); 1 fetched but broken (a bug to look at);
# 2 bad usage; 77 it cannot be had on this machine (no network or mirror, no apt, no source
# to derive, cache not writable): the reason is on stderr and the tests skip with it.
#
# Fetching leaves the host's apt state alone: apt-get runs with a configuration of its own
# (source list, preferences, lists and archive cache in a scratch directory, hooks cleared),
# whose only source is the host's own Debian archive entry as apt itself reads it
# (`apt-get indextargets`) with the suite replaced; `apt-get download` fetches the .debs and
# `dpkg-deb -x` unpacks them into DIR/root. Nothing is installed. A copy in DIR that answers
# `--version` with the right major version is reused without any network access.
set -euo pipefail

prog=get-logind
say() { echo "$prog: $*" >&2; }
broken() { say "error: $*"; exit 1; }
unavailable() { say "cannot fetch logind $version here: $*"; exit 77; }
usage() { sed -n '2,16s/^# \{0,1\}//p' "$0" >&2; exit 2; }

dir="" refresh=0 version=""
while [ $# -gt 0 ]; do
  case $1 in
    --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
    --refresh) refresh=1; shift ;;
    -h | --help) usage ;;
    -*) say "unknown option $1"; usage ;;
    *) [ -z "$version" ] || usage; version=$1; shift ;;
  esac
done
case $version in
  252 | 254 | 257 | 262) ;;
  *) say "VERSION must be 252, 254, 257 or 262 (got '${version}')"; usage ;;
esac

# "systemd 254 (254.26-1~bpo12+1)" -> ok when the major version is $version
answers_version() {
  local line
  line=$("$1" --version 2>/dev/null | head -n1) || return 1
  case $line in "systemd $version "*) return 0 ;; *) return 1 ;; esac
}

if [ "$version" = 252 ]; then
  installed=/lib/systemd/systemd-logind
  [ -x "$installed" ] || unavailable "$installed is not installed (apt-get install systemd)"
  answers_version "$installed" ||
    unavailable "$installed is '$("$installed" --version 2>&1 | head -n1)', not 252"
  echo "$installed"
  exit 0
fi

dir=${dir:-${SCOPESHIM_CACHE:-/var/cache/scopeshim}/logind-$version}
dir=${dir%/}
runner=$dir/systemd-logind

# the fast path: no lock, no network
if [ "$refresh" = 0 ] && [ -x "$runner" ] && [ -x "$dir/bin/systemctl" ] && answers_version "$runner"; then
  echo "$runner"
  exit 0
fi

for tool in apt-get dpkg-deb flock timeout; do
  command -v "$tool" >/dev/null || unavailable "$tool is not installed (this needs a Debian host)"
done
mkdir -p "$(dirname "$dir")" 2>/dev/null && [ -w "$(dirname "$dir")" ] ||
  unavailable "cannot write $(dirname "$dir") (run as root, or set SCOPESHIM_CACHE / --dir)"

# one fetch per directory at a time; whoever waited finds the copy ready
exec 9>"$dir.lock"
flock -w 600 9 || broken "another fetch has held $dir.lock for 10 minutes"
if [ "$refresh" = 0 ] && [ -x "$runner" ] && [ -x "$dir/bin/systemctl" ] && answers_version "$runner"; then
  echo "$runner"
  exit 0
fi

case $version in
  254) suite=bookworm-backports; packages=(systemd libsystemd-shared) ;;
  257) suite=trixie; packages=(systemd libsystemd-shared libc6 libssl3t64 libpam-systemd) ;;
  # bookworm's libraries are too old for 262's (symbol versions): sid's of everything that
  # libsystemd-shared-262, the clients and pam_systemd link against
  262) suite=sid; packages=(systemd libsystemd-shared libsystemd0 libpam-systemd libc6
    libssl3t64 libcap2 libcrypt1 libseccomp2 libacl1 libblkid1 libmount1 libselinux1
    libpcre2-8-0 libaudit1 libcap-ng0 libzstd1 liblzma5 liblz4-1 libgcrypt20 libgpg-error0
    libpam0g) ;;
esac

# ---- the private apt source: the host's archive entry, another suite
codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"')
[ -n "$codename" ] || unavailable "no VERSION_CODENAME in /etc/os-release"
# apt's own reading of every configured source (deb822 or one-line alike):
# "<file>:<entry> <repo uri> <component> <suite>" for each binary index of the host
targets() {
  apt-get indextargets --no-release-info --format '$(SOURCESENTRY) $(REPO_URI) $(COMPONENT) $(RELEASE)' \
    "Target-Of: deb" "Created-By: Packages" 2>/dev/null | sort -u
}
entries=$(targets | awk -v code="$codename" '$4 == code') || true
if [ -z "$entries" ]; then
  # a source written with an alias (stable, oldstable, ...): any archive entry but security's
  entries=$(targets | awk '$4 !~ /[-\/](security|updates)$/') || true
fi
[ -n "$entries" ] || unavailable "no Debian archive among the host's apt sources to derive a $suite source from"
first=$(head -n1 <<<"$entries")
origin=${first%% *}        # /etc/apt/sources.list.d/debian.sources:1
uri=$(cut -d' ' -f2 <<<"$first")
release=$(cut -d' ' -f4 <<<"$first")
components=$(awk -v o="$origin" -v u="$uri" '$1 == o && $2 == u { print $3 }' <<<"$entries" |
  sort -u | paste -sd' ')

# keep the entry's key restriction: Signed-By (deb822; possibly an inline key over several
# lines) or [signed-by=...] (one-line)
entry_file=${origin%:*}
signed_by=""
case $entry_file in
  *.sources)
    signed_by=$(awk -v uri="${uri%/}" -v code="$release" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; suites = ""; key = ""; inkey = 0
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^#/) continue
          if (line ~ /^[ \t]/) { if (inkey) key = key "\n" line; continue }
          inkey = 0
          if (tolower(line) ~ /^uris:/) uris = " " substr(line, 6) " "
          else if (tolower(line) ~ /^suites:/) suites = " " substr(line, 8) " "
          else if (tolower(line) ~ /^signed-by:/) { key = line; inkey = 1 }
        }
        gsub(/[ \t]+/, " ", uris); gsub(/[ \t]+/, " ", suites)
        if ((index(uris, " " uri " ") || index(uris, " " uri "/ ")) && index(suites, " " code " ")) {
          print key; exit
        }
      }' "$entry_file" | sed 's/^[Ss]igned-[Bb]y:[ \t]*//')
    ;;
  *)
    line_no=${origin##*:}
    opt=$(sed -n "${line_no}p" "$entry_file" 2>/dev/null | grep -o 'signed-by=[^] ]*' | head -n1) || true
    signed_by=${opt#signed-by=}
    ;;
esac

work=$(mktemp -d "$dir.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
apt_dir=$work/apt
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/preferences.d" "$apt_dir/lists/partial" \
  "$apt_dir/archives/partial" "$work/debs" "$work/root"
{
  echo "Types: deb"
  echo "URIs: $uri"
  echo "Suites: $suite"
  echo "Components: $components"
  if [ -n "$signed_by" ]; then
    # a multi-line inline key keeps its continuation lines as they are
    printf 'Signed-By: %s\n' "$signed_by"
  fi
} >"$apt_dir/sources.list.d/scopeshim-$suite.sources"
say "apt source derived from $origin, suite $suite:"
sed 's/^/    /' "$apt_dir/sources.list.d/scopeshim-$suite.sources" >&2

# read after the host's configuration: no hooks (one of them calls the system bus)
cat >"$apt_dir/apt.conf" <<'CONF'
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
CONF
apt=(apt-get -q -c "$apt_dir/apt.conf"
  -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
  -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  -o APT::Sandbox::User=root -o Acquire::Languages=none
  -o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)

# apt's complaints, for the message: errors, warnings and failed fetches
apt_errors() { grep -E '^(E:|W:|Err:)' "$1" | head -n 8 | sed 's/^/    /' >&2 || true; }

started=$(date +%s)
say "apt-get update ($suite only, private lists) ..."
timeout 600 "${apt[@]}" update >"$work/update.log" 2>&1 || true
if ! compgen -G "$apt_dir/lists/*_dists_${suite}_*Packages*" >/dev/null; then
  apt_errors "$work/update.log"
  unavailable "apt-get update got no package list for $suite from $uri (network or mirror)"
fi
specs=()
for p in "${packages[@]}"; do specs+=("$p/$suite"); done
say "apt-get download ${specs[*]} ..."
if ! (cd "$work/debs" && timeout 600 "${apt[@]}" download "${specs[@]}") >"$work/download.log" 2>&1; then
  apt_errors "$work/download.log"
  unavailable "apt-get download ${specs[*]} failed"
fi
cp "$apt_dir/sources.list.d/scopeshim-$suite.sources" "$work/apt-source"
rm -rf "$apt_dir"
say "fetched in $(($(date +%s) - started)) s"

full=""
: >"$work/PACKAGES"
for deb in "$work"/debs/*.deb; do
  name=$(dpkg-deb --field "$deb" Package)
  ver=$(dpkg-deb --field "$deb" Version)
  echo "$name $ver $suite" >>"$work/PACKAGES"
  [ "$name" = systemd ] && full=$ver
  dpkg-deb -x "$deb" "$work/root" || broken "dpkg-deb -x $deb failed"
done
case $full in "$version".*) ;; *) broken "$suite carries systemd '$full', not $version.x" ;; esac
rm -rf "$work/debs"

# ---- the runner: a sh script whose paths are relative to itself (the cache may move)
found() { find "$work/root" "$@" -print -quit; }
logind=$(found -path '*/lib/systemd/systemd-logind' -type f)
shared=$(found -name "libsystemd-shared-$version*.so" -type f)
[ -n "$logind" ] && [ -n "$shared" ] || broken "systemd-logind or libsystemd-shared-$version missing from the packages"
logind=${logind#"$work/root/"}
shared_dir=$(dirname "${shared#"$work/root/"}")
if [ "$version" = 254 ]; then
  # built for bookworm: the host's loader and libc, only libsystemd-shared-254 is ours
  run_line() { echo 'LD_LIBRARY_PATH="$root/'"$shared_dir"'${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$root/'"$1"'" "$@"'; }
  list_libs() { LD_LIBRARY_PATH="$dir/root/$shared_dir" ldd "$dir/root/$1"; }
else
  # the suite's glibc: its own loader, its libraries first, the host's for the rest. The
  # loader is the regular file: usr/lib64/ld-linux-*.so.2 is a symlink to the host's path.
  loader=$(found -name 'ld-linux*.so*' -type f)
  libc=$(found -name libc.so.6 -type f)
  [ -n "$loader" ] && [ -n "$libc" ] || broken "no loader or libc.so.6 in $suite's libc6"
  loader=${loader#"$work/root/"}
  libdir=$(dirname "${libc#"$work/root/"}")
  triplet=$(basename "$libdir")
  run_line() { echo 'exec "$root/'"$loader"'" --library-path "$root/'"$shared_dir"':$root/'"$libdir"':/lib/'"$triplet"':/usr/lib/'"$triplet"'" "$root/'"$1"'" "$@"'; }
  list_libs() {
    "$dir/root/$loader" --list \
      --library-path "$dir/root/$shared_dir:$dir/root/$libdir:/lib/$triplet:/usr/lib/$triplet" \
      "$dir/root/$1"
  }
fi
# write_runner FILE BINARY TITLE: a sh script whose paths are relative to where it lies
write_runner() {
  cat >"$1" <<SH
#!/bin/sh
# Debian's unmodified $3 $full ($suite), written by tests/e2e/get-logind.sh
root=\$(cd "\$(dirname "\$(readlink -f "\$0")")/$4" && pwd)/root
$(run_line "$2")
SH
  chmod 755 "$1"
}
write_runner "$work/systemd-logind" "$logind" systemd-logind .
# the clients of the same build: DIR/bin/TOOL
mkdir -p "$work/bin"
tools=()
for tool in systemctl systemd-run loginctl busctl systemd-cgls; do
  binary=$(found -path "*/bin/$tool" -type f)
  [ -n "$binary" ] || broken "$tool missing from the packages"
  write_runner "$work/bin/$tool" "${binary#"$work/root/"}" "$tool" ..
  tools+=("${binary#"$work/root/"}")
done

# ---- into place (an older copy is replaced), then prove it runs
rm -rf "$dir.old"
if [ -e "$dir" ]; then mv "$dir" "$dir.old"; fi
mkdir "$dir"
mv "$work/root" "$work/systemd-logind" "$work/bin" "$work/PACKAGES" "$work/apt-source" "$dir/"
rm -rf "$dir.old"
answers_version "$runner" ||
  broken "$runner does not run: $("$runner" --version 2>&1 | head -n3 | paste -sd' ')"
for binary in "$logind" "${tools[@]}"; do
  missing=$(list_libs "$binary" 2>&1 | grep 'not found' || true)
  [ -z "$missing" ] || broken "$binary has unresolved libraries: $missing"
done
for tool in "$dir"/bin/*; do
  answers_version "$tool" || broken "$tool does not run: $("$tool" --version 2>&1 | head -n3 | paste -sd' ')"
done
say "ready: $("$runner" --version | head -n1)"
echo "$runner"
