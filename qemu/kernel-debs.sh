#!/bin/bash
# Debian packages of a finished guest kernel build, made the way a user
# packages a KHO kernel (make bindeb-pkg: linux-image and linux-headers),
# for the guest that installs them with dpkg. Made in a copy of the build,
# which stays as it is; cached beside it. Prints the packages' directory.
#   qemu/kernel-debs.sh KDIR
set -euo pipefail
kdir=$(cd "${1:?usage: kernel-debs.sh KDIR}" && pwd)
[ -f "$kdir/.built" ] || { echo "kernel-debs: $kdir is not a finished build" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[kernel-debs] %s\n' "$*" >&2; }

key=$( { echo "$kdir"; stat -c %Y "$kdir/.built"; cat "$here/kernel-debs.sh"; } | sha256sum | cut -c1-12)
out=$kdir.debs-$key
if [ -f "$out/.built" ]; then
	log "reusing $out"
	echo "$out"
	exit 0
fi
rm -rf "$out"
mkdir -p "$out/build"
start=$SECONDS
# The copy's recorded paths follow it, or Kbuild would rebuild everything.
cp -a "$kdir/." "$out/build/"
grep -rlI --null -F "$kdir" "$out/build" | xargs -0 -r sed -i "s|$kdir|$out/build|g"
src=$(readlink -f "$kdir/source")
release=$(make -s -C "$src" O="$out/build" ARCH=x86_64 kernelrelease)
log "packaging $release (log: $out/build.log)"
# dpkg-buildpackage writes beside the build directory, that is into $out.
if ! make -C "$src" O="$out/build" ARCH=x86_64 -j"$(nproc)" bindeb-pkg \
		DPKG_FLAGS=-d KDEB_PKGVERSION="$release-1" > "$out/build.log" 2>&1; then
	tail -n 30 "$out/build.log" >&2
	exit 1
fi
rm -rf "$out/build"
touch "$out/.built"
log "$(cd "$out" && echo *.deb) in $((SECONDS - start)) s"
echo "$out"
