#!/bin/bash
# A Debian sid root filesystem with the packages given, built once with
# debootstrap into the cache and reused (keyed by the packages and this
# script). Prints its directory on stdout.
#   qemu/debian-root.sh NAME PACKAGE...
# `make deb` builds the Debian packages in one (Debian's packaging tools
# of the release the packages are for, not the host's).
set -euo pipefail

name=${1:?usage: debian-root.sh NAME PACKAGE...}
shift
here=$(cd "$(dirname "$0")" && pwd)
cache=${LIVEUPDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liveupdate}
suite=${DEBIAN_ROOT_SUITE:-sid}
log() { printf '[debian-root] %s\n' "$*" >&2; }

key=$( { echo "$suite" "$@"; cat "$here/debian-root.sh" "$here/root-install.sh"; } | sha256sum | cut -c1-12)
root=$cache/root/$name-$key
if [ -f "$root/.built" ]; then
	log "reusing $root"
	echo "$root"
	exit 0
fi
command -v debootstrap >/dev/null || { log "debootstrap is needed: apt-get install debootstrap"; exit 1; }
archive=$("$here/debian-archive.sh")
umount "$root/proc" 2>/dev/null || true  # left by an interrupted build
rm -rf --one-file-system "$root"
mkdir -p "$root"
start=$SECONDS
log "debootstrap $suite ($name) into $root"
# debootstrap's own resolver misses virtual packages (perl-openssl-abi-3):
# a minimal base first, then apt inside it installs the rest.
if ! debootstrap --variant=minbase "$suite" "$root" "$archive" > "$root.log" 2>&1; then
	tail -n 20 "$root.log" >&2
	exit 1
fi
echo "deb $archive $suite main" > "$root/etc/apt/sources.list"
# How this machine's apt reaches the archive (a proxy; a mirror whose
# Release files it accepts past their date) holds inside too.
apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
	> "$root/etc/apt/apt.conf.d/00host" || true
"$here/root-install.sh" "$root" "$root.log" "$@"
chroot "$root" apt-get clean
touch "$root/.built"
# Only the newest root of a name is kept.
for old in "$cache/root/$name"-*; do
	case $old in "$root"|"$root.log") ;; *) rm -rf --one-file-system "$old" ;; esac
done
log "ready in $((SECONDS - start)) s"
echo "$root"
