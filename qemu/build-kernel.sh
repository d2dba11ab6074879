#!/bin/bash
# Build the guest kernel (bzImage + Module.symvers for out-of-tree modules)
# from the fetched source and qemu/kernel.config. The build lives in the
# cache, keyed by source version and config hash, and is reused when both
# are unchanged. Prints the build directory (usable as KDIR) on stdout.
# KERNEL_BASE may name a finished build of the same source to start from:
# Kbuild then recompiles only what the differing options touch (the
# mainline kernel differs from the lean one in a few).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${LIVEUPDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liveupdate}
fragment=${KERNEL_FRAGMENT:-$here/kernel.config}
jobs=${JOBS:-$(nproc)}
log() { printf '[build-kernel] %s\n' "$*" >&2; }

src=$("$here/fetch-source.sh")
version=$(cat "$src/.unpacked")
key=$(cat "$fragment" "$here/build-kernel.sh" | sha256sum | cut -c1-12)
kb=$cache/kernel/$(basename "$fragment" .config)-$version-$key

if [ -f "$kb/.built" ]; then
	log "reusing $kb"
	echo "$kb"
	exit 0
fi

rm -rf "$kb"
mkdir -p "$kb"
base=${KERNEL_BASE:-}
if [ -n "$base" ] && [ -f "$base/.built" ]; then
	log "starting from $base"
	cp -a "$base/." "$kb/"
	rm -f "$kb/.built" "$kb/build.log"
	# objtool's build and the output Makefile record the directory: a
	# changed path would rebuild objtool, and with it every object.
	grep -rlI --null -F "$base" "$kb" | xargs -0 -r sed -i "s|$base|$kb|g"
fi
kmake() { make -C "$src" O="$kb" ARCH=x86_64 "$@"; }

start=$SECONDS
kmake -s tinyconfig >&2
kmake -s kvm_guest.config >&2
"$src/scripts/kconfig/merge_config.sh" -m -O "$kb" "$kb/.config" "$fragment" >/dev/null
kmake -s olddefconfig >&2
missing=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*) grep -qxF "$line" "$kb/.config" || { log "not applied: $line"; missing=1; } ;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }; opt=${opt%% *}
		if grep -q "^$opt=" "$kb/.config"; then log "not disabled: $opt"; missing=1; fi ;;
	esac
done < "$fragment"
[ $missing = 0 ] || exit 1
log "configured in $((SECONDS - start)) s"

start=$SECONDS
log "building bzImage and modules with $jobs jobs (about 5 min on 2 cores); log: $kb/build.log"
kmake -j"$jobs" bzImage modules_prepare modules > "$kb/build.log" 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
	sleep 30
	kill -0 $pid 2>/dev/null &&
		log "still building: $(find "$kb" -name '*.o' | wc -l) objects, $((SECONDS - start)) s"
done
if ! wait $pid; then
	tail -n 30 "$kb/build.log" >&2
	log "build failed after $((SECONDS - start)) s"
	exit 1
fi
log "built $(stat -c %s "$kb/arch/x86/boot/bzImage") byte bzImage in $((SECONDS - start)) s"
touch "$kb/.built"
echo "$kb"
