#!/bin/bash
# DKMS with the liveupdate-dkms package as built by `make deb`, outside
# the system's DKMS tree: it builds liveupdate.ko for the kernel build
# tree KDIR (a KHO kernel), with the hand-over formats in its modinfo, and
# skips a kernel without KHO, or with mainline's LUO built in, with its
# BUILD_EXCLUSIVE refusal (exit 77).
#   qemu/check-dkms.sh KDIR DEB
set -uo pipefail
kdir=${1:?usage: check-dkms.sh KDIR DEB} deb=${2:?usage: check-dkms.sh KDIR DEB}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/root" || exit 1
version=$(dpkg-deb -f "$deb" Version)
release=$(make -s -C "$kdir" kernelrelease)
dkms() { command dkms "$@" --sourcetree "$work/root/usr/src" --dkmstree "$work/tree" -m liveupdate -v "$version"; }
mkdir "$work/tree"
dkms add > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; cat "$work/log"; }

dkms build -k "$release" --kernelsourcedir "$kdir" > "$work/log" 2>&1
module=$(find "$work/tree" -name liveupdate.ko | head -n1)
if [ -n "$module" ] && [ "$(modinfo -F handover_reads "$module")" != "" ] &&
   [ "$(modinfo -F version "$module")" = "${version%%-*}" ]; then
	ok "built for $release: $(modinfo -F vermagic "$module")"
else
	bad "no liveupdate.ko built for $release"
fi

# Kernels DKMS must skip, each with its BUILD_EXCLUSIVE refusal (exit 77).
refused() {
	local name=$1 config=$2 tree=$work/$1 rc
	mkdir -p "$tree/include/config"
	printf '%b' "$config" > "$tree/.config"
	cp "$tree/.config" "$tree/include/config/auto.conf"
	dkms build -k "7.0.0-$name" --kernelsourcedir "$tree" > "$work/log" 2>&1
	rc=$?
	if [ $rc = 77 ] && grep -q "BUILD_EXCLUSIVE directive which does not match" "$work/log"; then
		ok "a kernel with $name is skipped (exit 77)"
	else
		bad "a kernel with $name: exit $rc"
	fi
}
refused no-kho 'CONFIG_KEXEC_FILE=y\n# CONFIG_KEXEC_HANDOVER is not set\n'
refused mainline-luo 'CONFIG_KEXEC_FILE=y\nCONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\n'
echo "dkms: $pass passed, $fail failed"
[ $fail = 0 ]
