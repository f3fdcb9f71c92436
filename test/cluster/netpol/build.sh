#!/bin/sh
# Builds (once) the NetworkPolicy enforcer of the test cluster's real node
# (node.py): sigs.k8s.io/kube-network-policies v0.8.0, wrapped by main.go in
# this module (the same controller, with --kubeconfig), and prints the
# directory that holds it.
#
# A cache of its own, keyed by this module's files and the link flags, so
# the cluster's binaries (../build.sh, .cache/cluster/<key>) stay valid:
#   ${NRBC_NETPOL_CACHE:-<repo>/.cache/netpol}/<key>/kube-network-policies
# Cold: 1 min 40 s on 2 cores with an empty build cache (2 min 20 s on a
# busy machine); a cache hit costs nothing. Shares the module cache with
# ../build.sh (client-go and apimachinery at v0.32.13: a client of the
# cluster's newer API server, as any older client is).
#
# Usage: test/cluster/netpol/build.sh         prints the binary directory
#        test/cluster/netpol/build.sh --key   prints only the cache key
# Everything but the final directory goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)

LDFLAGS="-s -w"
BINARY=kube-network-policies

. "$here/../go_cache.sh"
go_cache_key "${1:-}" "ldflags $LDFLAGS" "$here" go.mod go.sum main.go
go_cache_open "${NRBC_NETPOL_CACHE:-$repo/.cache/netpol}" "$BINARY"

echo "netpol/build.sh: building $BINARY into $dir (cold: ~2 min on 2 cores)" >&2
(cd "$here" && go build -trimpath -ldflags "$LDFLAGS" -o "$tmp/$BINARY" .) >&2
go_cache_close netpol/build.sh
