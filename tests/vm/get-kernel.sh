#!/usr/bin/env bash
# Puts Debian's own kernel (linux-image-amd64 of the host's release) and the few modules the VM
# tier needs into DIR, and prints DIR (one line on stdout; progress goes to stderr).
#
# Usage: get-kernel.sh [--dir DIR] [--refresh]
#   --dir DIR   default ${SCOPESHIM_CACHE:-/var/cache/scopeshim}/vm/kernel
#   --refresh   fetch again even when DIR already holds a kernel
#
# DIR/vmlinuz      the kernel image, booted by qemu -kernel
# DIR/modules/     9p, its virtio transport, overlay and virtio-blk with their dependencies, in
#                  load order (DIR/modules/order); DIR/release, DIR/PACKAGE
#
# Exit status: 0 ready; 1 fetched but broken; 77 it cannot be had here (no network or mirror, no
# apt, cache not writable): the reason is on stderr and the VM tier skips with it.
#
# apt-get runs with a configuration of its own: the source entries are the host's own Debian
# ones (the files `apt-get indextargets` names), lists and archives live in a scratch directory,
# hooks are cleared. `apt-get download` fetches the .deb, `dpkg-deb -x` unpacks it; nothing is
# installed and the host's apt state is left alone.
set -euo pipefail

prog=get-kernel
say() { echo "$prog: $*" >&2; }
broken() { say "error: $*"; exit 1; }
unavailable() { say "cannot fetch the VM kernel here: $*"; exit 77; }

dir="" refresh=0
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --refresh) refresh=1; shift ;;
    *) sed -n '2,12s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
  esac
done
dir=${dir:-${SCOPESHIM_CACHE:-/var/cache/scopeshim}/vm/kernel}
dir=${dir%/}
ready() { [ -s "$dir/vmlinuz" ] && [ -s "$dir/modules/order" ] && [ -s "$dir/release" ]; }
if [ "$refresh" = 0 ] && ready; then echo "$dir"; exit 0; fi

for tool in apt-get dpkg-deb flock timeout; do
  command -v "$tool" >/dev/null || unavailable "$tool is not installed (this needs a Debian host)"
done
mkdir -p "$(dirname "$dir")" 2>/dev/null && [ -w "$(dirname "$dir")" ] ||
  unavailable "cannot write $(dirname "$dir") (run as root, or set SCOPESHIM_CACHE)"
exec 9>"$dir.lock"
flock -w 900 9 || broken "another fetch has held $dir.lock for 15 minutes"
if [ "$refresh" = 0 ] && ready; then echo "$dir"; exit 0; fi

# the files holding the host's binary archive entries, as apt itself reads them
files=$(apt-get indextargets --no-release-info --format '$(SOURCESENTRY)' \
  "Target-Of: deb" "Created-By: Packages" 2>/dev/null | sed 's/:[0-9]*$//' | sort -u) || true
[ -n "$files" ] || unavailable "the host has no apt source entries"

work=$(mktemp -d "$dir.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
apt_dir=$work/apt
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/archives/partial" \
  "$work/debs" "$work/root"
for f in $files; do
  case $f in
    *.sources | *.list) cp "$f" "$apt_dir/sources.list.d/host-$(basename "$f")" ;;
    *) cp "$f" "$apt_dir/sources.list.d/host-$(basename "$f").list" ;;  # sources.list itself
  esac
done
cat >"$apt_dir/apt.conf" <<'CONF'
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
CONF
apt=(-q -c "$apt_dir/apt.conf"
  -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  -o APT::Sandbox::User=root -o Acquire::Languages=none
  -o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)

started=$(date +%s)
say "apt-get update (the host's entries, private lists) ..."
timeout 600 apt-get "${apt[@]}" update >"$work/update.log" 2>&1 || true
# linux-image-amd64 is a metapackage: the image it depends on is the one to fetch
image=$(apt-cache "${apt[@]}" depends linux-image-amd64 2>/dev/null |
  sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1) || true
if [ -z "$image" ]; then
  grep -E '^(E:|W:|Err:)' "$work/update.log" | head -n 8 >&2 || true
  unavailable "apt knows no linux-image-amd64 (network or mirror)"
fi
say "apt-get download $image ..."
(cd "$work/debs" && timeout 900 apt-get "${apt[@]}" download "$image") >"$work/download.log" 2>&1 ||
  { tail -n 5 "$work/download.log" >&2; unavailable "apt-get download $image failed"; }
deb=$(ls "$work"/debs/*.deb)
say "fetched in $(($(date +%s) - started)) s: $(basename "$deb")"
dpkg-deb -x "$deb" "$work/root" || broken "dpkg-deb -x $deb failed"

kernel=$(ls "$work"/root/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$kernel" ] || broken "no /boot/vmlinuz-* in $deb"
release=${kernel##*/vmlinuz-}
mods=$work/root/lib/modules/$release
[ -d "$mods/kernel" ] || broken "no modules for $release in $deb"

# the wanted modules and what they depend on, dependencies first: the package ships no
# modules.dep (depmod writes it when installed), so each module's own "depends=" (modinfo) is read
mkdir -p "$work/out/modules"
: >"$work/out/modules/order"
module_file() {  # a module's file by name; "-" and "_" are the same in module names
  local pattern=${1//[-_]/[-_]}
  find "$mods/kernel" -regextype posix-extended -regex ".*/$pattern\.ko(\.xz|\.zst)?" -print -quit
}
add() {
  local name=$1 file dep
  file=$(module_file "$name")
  if [ -z "$file" ]; then
    # built into the kernel: nothing to load
    grep -qE "/${name//[-_]/[-_]}\.ko" "$mods/modules.builtin" ||
      broken "module $name is neither built in nor in the package"
    return 0
  fi
  case $file in *.ko) ;; *) broken "$file is compressed; busybox insmod wants a plain .ko" ;; esac
  grep -qxF "$(basename "$file")" "$work/out/modules/order" && return 0
  for dep in $(tr '\0' '\n' <"$file" | sed -n 's/^depends=//p' | tr , ' '); do add "$dep"; done
  cp "$file" "$work/out/modules/"
  basename "$file" >>"$work/out/modules/order"
}
for name in virtio_pci 9pnet_virtio 9p overlay virtio_blk; do add "$name"; done
cp "$kernel" "$work/out/vmlinuz"
cp "$work/root/boot/config-$release" "$work/out/config" 2>/dev/null || true
echo "$release" >"$work/out/release"
dpkg-deb --show "$deb" >"$work/out/PACKAGE"
rm -rf "$dir.old"
if [ -e "$dir" ]; then mv "$dir" "$dir.old"; fi
mv "$work/out" "$dir"
rm -rf "$dir.old"
ready || broken "$dir is incomplete"
say "ready: $release ($(paste -sd' ' "$dir/modules/order"))"
echo "$dir"
