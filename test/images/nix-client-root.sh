#!/usr/bin/env bash
# Makes a Debian 13 root with its Nix client (nix-bin 2.26) and OpenSSH
# client, for the Nix client matrix (test/integration/test_nix_clients.py,
# which runs it in a mount namespace with chroot: nix_root.py). The host's
# own Nix (Debian 12: 2.8) is the other client.
#   .cache/nix-client/<key>/root   the root (read-only to the tests)
# <key> hashes this script, the package list and the apt sources it is
# made from, so a run with unchanged inputs does nothing; the last line
# printed is the root. test/setup runs it (about 45 s cold, when the
# mirror is near).
# Run as root. Needs mmdebstrap.
#   --check                 build nothing: print the root and exit 0 if it is
#                           up to date, else exit 1 (for tests)
#   NRBC_NIX_CLIENT_CACHE   cache directory (default: <repo>/.cache/nix-client)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
cache=${NRBC_NIX_CLIENT_CACHE:-$top/.cache/nix-client}
release=13
packages=nix-bin,openssh-client

sources=$(test/images/debian-sources.sh "$release")
key=$({ sha256sum test/images/nix-client-root.sh test/images/debian-sources.sh
	echo "release=$release packages=$packages"
	printf '%s\n' "$sources"; } | sha256sum | cut -c1-16)
out=$cache/$key
if [ -x "$out/root/usr/bin/nix-build" ] && [ -f "$out/done" ]; then
	echo "nix-client: up to date"
	echo "$out/root"
	exit 0
fi
if [ "${1:-}" = --check ]; then
	echo "nix-client: out of date (run test/images/nix-client-root.sh)" >&2
	exit 1
fi

t0=$SECONDS
suite=$(test/images/debian-sources.sh --suite "$release")
echo "nix-client: making a $suite root with $packages"
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
printf '%s\n' "$sources" >"$out.tmp/debian.sources"
# /work (the test's directory: stores, keys) and /exprs (the test's Nix
# files) are mount points for the tests; the root itself stays read-only.
# No apt lists or caches: the root is never updated, only made anew.
mmdebstrap --quiet --variant=minbase --include="$packages" \
	--customize-hook='mkdir -p "$1/work" "$1/exprs"' \
	--customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' \
	"$suite" "$out.tmp/root" "$out.tmp/debian.sources"
# (nix itself needs /proc: dpkg says which Nix this is)
chroot "$out.tmp/root" dpkg-query -W -f 'nix-bin ${Version}\n' nix-bin >"$out.tmp/done"
rm -rf "$out"
mv "$out.tmp" "$out"
# Older keys' roots are dead weight.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
echo "nix-client: $(cat "$out/done") in $((SECONDS - t0)) s"
echo "$out/root"
