#!/bin/bash
# Prints the Debian archive this machine's apt already uses for its stable
# release (so a local mirror is respected), or $DEBIAN_ARCHIVE if set.
set -euo pipefail
archive=${DEBIAN_ARCHIVE:-}
if [ -z "$archive" ]; then
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	archive=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
		awk -v rel="$codename" '$2 == rel { print $1; exit }')
fi
if [ -z "$archive" ]; then
	echo "no Debian archive found in apt's configuration; set DEBIAN_ARCHIVE=<uri>" >&2
	exit 1
fi
echo "$archive"
