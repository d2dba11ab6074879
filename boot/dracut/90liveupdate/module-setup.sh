#!/bin/bash
# dracut module: liveupdate.ko in the initramfs, loaded there by
# systemd-modules-load (or dracut's own module loading without systemd)
# before the switch to the real root. The module refuses to load (ENODEV,
# logged as a notice) when the kernel was booted without kho=on.

check() {
	# Only for kernels DKMS built the module for (those with KHO).
	modinfo -k "$kernel" liveupdate >/dev/null 2>&1 || return 1
	return 0
}

depends() {
	return 0
}

installkernel() {
	hostonly='' instmods liveupdate
}

install() {
	inst_simple "$moddir/liveupdate.conf" /usr/lib/modules-load.d/liveupdate.conf
}
