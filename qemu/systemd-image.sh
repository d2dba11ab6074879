#!/bin/bash
# The systemd guest's disk: a Debian sid root (systemd as PID 1) with the
# guest kernel installed from its Debian packages (qemu/kernel-debs.sh)
# and liveupdate installed from ours (make deb), as on a host: DKMS builds
# the module for the kernel, update-initramfs puts it in the initramfs
# with our hook. The tests come from the checkout at run time (9p), so
# the image changes only with what is installed. Cached by content.
# Prints a directory with root.img (ext4), vmlinuz and initrd.img.
#   qemu/systemd-image.sh KERNEL_DEBS_DIR DEB...
set -euo pipefail
kdebs=$(cd "${1:?usage: systemd-image.sh KERNEL_DEBS_DIR DEB...}" && pwd)
shift
here=$(cd "$(dirname "$0")" && pwd)
cache=${LIVEUPDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liveupdate}
log() { printf '[systemd-image] %s\n' "$*" >&2; }

# What a host needs to install and run our packages, and what the tests use.
base=$("$here/debian-root.sh" systemd-guest systemd systemd-sysv udev kmod kexec-tools \
	initramfs-tools dkms gcc make libc6-dev python3 python3-pyroute2 python3-ruamel.yaml \
	procps e2fsprogs dbus)
debs=("$kdebs"/linux-image-*.deb "$kdebs"/linux-headers-*.deb "$@")
key=$( { echo "$base"; sha256sum "${debs[@]}" | cut -d' ' -f1; cat "$here/systemd-image.sh" "$here/root-install.sh"; } |
	sha256sum | cut -c1-12)
out=$cache/systemd-image-$key
if [ -f "$out/.built" ]; then
	log "reusing $out"
	echo "$out"
	exit 0
fi
rm -rf --one-file-system "$out"
mkdir -p "$out"
root=$out/root
start=$SECONDS
cp -a "$base" "$root"
rm -f "$root/.built"
mkdir -p "$root/tmp/debs"
cp "${debs[@]}" "$root/tmp/debs/"
# The guest kernel decompresses gzip only.
sed -i 's/^COMPRESS=.*/COMPRESS=gzip/' "$root/etc/initramfs-tools/initramfs.conf"
# Without udev's hardware database (14 of the initramfs's 33 MB), which
# finding a virtio disk does not need: after a kexec, unpacking the
# initramfs took the kernel 11-59 s under TCG (1.7 s at a cold boot).
# The new kernel writes into pages that held the old one's code, and
# QEMU takes its slow path for each store into such a page until the
# page's translations are gone, so the fewer pages the better.
cat > "$root/etc/initramfs-tools/hooks/zz-test-image" <<'HOOK'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
rm -f "$DESTDIR/usr/lib/udev/hwdb.bin"
HOOK
chmod 755 "$root/etc/initramfs-tools/hooks/zz-test-image"
log "installing $(cd "$root/tmp/debs" && echo *.deb) (log: $out/install.log)"
# libelf: the headers package bindeb-pkg makes runs objtool, and does not
# depend on it as Debian's own headers packages do.
"$here/root-install.sh" "$root" "$out/install.log" libelf1t64 \
	$(cd "$root" && printf '/%s ' tmp/debs/*.deb)
release=$(basename "$root"/lib/modules/*)
[ -f "$root/boot/initrd.img-$release" ] || { log "no initramfs for $release"; exit 1; }
find "$root/lib/modules/$release" -name 'liveupdate.ko*' | grep -q . ||
	{ log "DKMS built no liveupdate.ko for $release"; tail -n 30 "$out/install.log" >&2; exit 1; }
rm -rf "$root/tmp/debs"

# A host's settings: the disk is the root, the test run's shares are
# mounted where qemu/guest/stage.sh expects them, and the stage runs
# once the system is up.
cat > "$root/etc/fstab" <<'FSTAB'
/dev/vda / ext4 rw,errors=remount-ro 0 1
out /run/out 9p trans=virtio,version=9p2000.L,msize=512000,nofail 0 0
checkout /run/checkout 9p trans=virtio,version=9p2000.L,msize=512000,ro,nofail 0 0
FSTAB
echo lu-guest > "$root/etc/hostname"
cat > "$root/etc/systemd/system/lu-stage.service" <<'UNIT'
[Unit]
Description=liveupdate test stage (qemu/guest/systemd-stage.sh from the checkout)
After=multi-user.target
RequiresMountsFor=/run/out /run/checkout

[Service]
Type=oneshot
ExecStart=/bin/sh /run/checkout/qemu/guest/systemd-stage.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/lu-stage.service "$root/etc/systemd/system/multi-user.target.wants/lu-stage.service"
# No login prompt on the console the stage writes to.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"

cp "$root/boot/vmlinuz-$release" "$out/vmlinuz"
cp "$root/boot/initrd.img-$release" "$out/initrd.img"
cp "$root/boot/System.map-$release" "$out/System.map" 2>/dev/null || : > "$out/System.map"
echo "$release" > "$out/release"
size=$(( $(du -sm "$root" | cut -f1) + 768 ))
mkfs.ext4 -q -L lu-root -d "$root" "$out/root.img" "${size}M" >&2
rm -rf --one-file-system "$root"
touch "$out/.built"
# Only the newest image is kept: each change to the packages makes one.
for old in "$cache"/systemd-image-*; do
	[ "$old" = "$out" ] || rm -rf --one-file-system "$old"
done
log "ready in $((SECONDS - start)) s: $release, $(du -sh --apparent-size "$out/root.img" | cut -f1) root"
echo "$out"
