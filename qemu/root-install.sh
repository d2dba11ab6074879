#!/bin/bash
# Installs packages (names, or .deb paths as seen inside ROOT) into the
# Debian root ROOT with its own apt, /proc mounted meanwhile; apt's output
# is appended to LOG, whose tail is shown when it fails.
#   qemu/root-install.sh ROOT LOG PACKAGE...
set -euo pipefail
root=${1:?usage: root-install.sh ROOT LOG PACKAGE...} log=${2:?usage: root-install.sh ROOT LOG PACKAGE...}
shift 2
mount -t proc proc "$root/proc"
trap 'umount "$root/proc"' EXIT
if ! { chroot "$root" apt-get -q update &&
       DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get -q -y \
		--no-install-recommends install "$@"; } >> "$log" 2>&1; then
	tail -n 30 "$log" >&2
	exit 1
fi
