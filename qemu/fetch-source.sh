#!/bin/bash
# Fetch and unpack Debian's linux-source-7.2 (suite sid) into the cache,
# without touching the system's apt configuration.
#
# The archive is the one this machine's apt already uses
# (qemu/debian-archive.sh; set DEBIAN_ARCHIVE to override).
# Prints the unpacked source directory on stdout.
set -euo pipefail

cache=${LIVEUPDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liveupdate}
pkg=${LINUX_SOURCE_PKG:-linux-source-7.2}
suite=${LINUX_SOURCE_SUITE:-sid}
log() { printf '[fetch-source] %s\n' "$*" >&2; }

archive=$("$(dirname "$0")/debian-archive.sh") || { log "cannot fetch $pkg"; exit 1; }

apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$cache/src"
echo "deb $archive $suite main" > "$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
	  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
	  -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1
	  -o APT::Sandbox::User=root)

# Refresh the private index at most once a day.
if [ -z "$(find "$apt_dir/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
	start=$SECONDS
	log "updating the $suite index"
	apt-get "${apt_opts[@]}" -q update >&2
	log "index updated in $((SECONDS - start)) s"
fi

version=$(apt-cache "${apt_opts[@]}" show "$pkg" 2>/dev/null |
	  awk '/^Version:/ { print $2 }' | sort -V | tail -n1)
if [ -z "$version" ]; then
	log "$pkg not found in $suite"
	exit 1
fi

src=$cache/src/$pkg-$version
if [ ! -f "$src/.unpacked" ]; then
	start=$SECONDS
	log "downloading $pkg $version"
	(cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" -q download "$pkg=$version" >&2)
	deb=$(ls "$apt_dir/archives/${pkg}_${version//:/%3a}_"*.deb)
	log "unpacking $(basename "$deb")"
	tmp=$(mktemp -d "$cache/src/.unpack.XXXXXX")
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards '*.tar.xz'
	mkdir -p "$tmp/tree"
	tar -xJf "$tmp"/usr/src/"$pkg".tar.xz -C "$tmp/tree" --strip-components=1
	rm -rf "$src"
	mv "$tmp/tree" "$src"
	rm -rf "$tmp" "$deb"
	echo "$version" > "$src/.unpacked"
	log "source ready in $((SECONDS - start)) s"
fi
echo "$src"
