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

. "$here/go_cache.sh"
go_cache_open "${NRBC_RUNTIME_CACHE:-$repo/.cache/runtime}" "$BINARIES"
export GOFLAGS="$GOFLAGS -trimpath"
export GOBIN="$tmp"

echo "runtime.sh: building containerd and runc into $dir (cold: ~5 min on 2 cores)" >&2
pkg=${CONTAINERD%@*}
ver=${CONTAINERD#*@}
go install -ldflags "-s -w" "$pkg/cmd/containerd@$ver" "$pkg/cmd/containerd-shim-runc-v2@$ver" >&2
# runc needs cgo for its seccomp filters (libseccomp).
CGO_ENABLED=1 go install -tags seccomp -ldflags "-s -w" "$RUNC" >&2
go_cache_close runtime.sh
