#!/bin/sh
# Prints apt sources (deb822) for Debian release $1 (12 or 13) on the mirrors
# the host uses: the host's /etc/apt/sources.list.d/debian.sources with its
# own release's suite names (bookworm, bookworm-updates, bookworm-security)
# replaced by the wanted one's. So a Debian 12 host makes Debian 13 roots
# (mmdebstrap) from the mirror it already reaches; the archive keyring of
# Debian 12 (2023.3+deb12u2 and later) holds trixie's keys.
#   debian-sources.sh 13            the sources
#   debian-sources.sh --suite 13    only the suite name (trixie)
#   DEBIAN_SOURCES                  the host's file (default as above)
set -eu
suite_of() {
	case $1 in
	12) echo bookworm ;;
	13) echo trixie ;;
	*) echo "debian-sources: unknown Debian release '$1' (12 or 13)" >&2; exit 2 ;;
	esac
}
if [ "${1:-}" = --suite ]; then
	suite_of "${2:-}"
	exit 0
fi
want=$(suite_of "${1:-}")
src=${DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -r "$src" ] || { echo "debian-sources: no $src (deb822 apt sources)" >&2; exit 1; }
# The host's own suite: the first word of the first Suites line.
have=$(sed -n 's/^Suites:[[:space:]]*\([a-z]*\).*/\1/p' "$src" | head -n 1)
[ -n "$have" ] || { echo "debian-sources: no Suites line in $src" >&2; exit 1; }
# Only Suites lines change: URIs, components and keyrings stay the host's.
sed "/^Suites:/ s/\\b$have\\b/$want/g" "$src"
