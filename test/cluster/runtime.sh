#!/bin/sh
# Builds (once) the container runtime of the test cluster's real node
# (node.py): containerd 2 and its runc shim, and runc built with seccomp,
# from the Go module proxy, and prints the directory that holds them.
#
# Debian 12's containerd 1.6 cannot run user-namespaced pods (hostUsers:
# false), which builders need for Nix's sandbox; containerd 2 can, with a
# runc of 1.2 or later. Cached like build.sh, in its own directory so that
# a change here does not rebuild the cluster:
#   ${NRBC_RUNTIME_CACHE:-<repo>/.cache/runtime}/<key>/
# Cold: about 5 min on 2 cores; needs cgo and libseccomp-dev (test/setup).
#
# Usage: test/cluster/runtime.sh          prints the binary directory
#        test/cluster/runtime.sh --key    prints only the cache key
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

CONTAINERD=github.com/containerd/containerd/v2@v2.2.9
RUNC=github.com/opencontainers/runc@v1.4.4
BINARIES="containerd containerd-shim-runc-v2 runc"

key=$(printf '%s\n' "$CONTAINERD" "$RUNC" "tags seccomp" | sha256sum | cut -c1-16)
if [ "${1:-}" = "--key" ]; then
	echo "$key"
	exit 0
fi

cache=${NRBC_RUNTIME_CACHE:-$repo/.cache/runtime}
dir=$cache/$key

complete() {
	for b in $BINARIES; do
		[ -x "$1/$b" ] || return 1
	done
	return 0
}

if complete "$dir"; then
	echo "$dir"
	exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock-$key"
if command -v flock >/dev/null 2>&1; then
	flock 9
fi
if complete "$dir"; then
	echo "$dir"
	exit 0
fi

tmp=$cache/.tmp-$key-$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath"
export GOBIN="$tmp"

start=$(date +%s)
echo "runtime.sh: building containerd and runc into $dir (cold: ~5 min on 2 cores)" >&2
pkg=${CONTAINERD%@*}
ver=${CONTAINERD#*@}
go install -ldflags "-s -w" "$pkg/cmd/containerd@$ver" "$pkg/cmd/containerd-shim-runc-v2@$ver" >&2
# runc needs cgo for its seccomp filters (libseccomp).
CGO_ENABLED=1 go install -tags seccomp -ldflags "-s -w" "$RUNC" >&2
complete "$tmp" || { echo "runtime.sh: binaries missing after build" >&2; exit 1; }
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "runtime.sh: built in $(($(date +%s) - start)) s" >&2
echo "$dir"
