#!/bin/sh
# Builds (once) the binaries of the local test cluster -- etcd,
# kube-apiserver, kube-controller-manager, kubectl, and for the optional
# real node (node.py) kubelet and kube-scheduler -- from the Go modules
# in test/cluster/{etcd,k8s} and prints the directory that holds them.
#
# The directory is a cache keyed by the module files and the link flags:
#   ${NRBC_CLUSTER_CACHE:-<repo>/.cache/cluster}/<key>/
# so a machine (or CI cache) builds once per version change. A cold build
# takes 6-13 minutes on 2 cores (13 min measured on a busy machine) and
# needs only Go and the module proxy (about 820 MB of modules, 2.8 GB of
# build cache).
#
# Usage: test/cluster/build.sh            prints the binary directory
#        test/cluster/build.sh --key      prints only the cache key
# Everything but the final directory goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

K8S_VERSION=v1.35.4
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35"
BINARIES="etcd kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler"

. "$here/go_cache.sh"
go_cache_key "${1:-}" "ldflags $LDFLAGS" "$here" \
	k8s/go.mod k8s/go.sum etcd/go.mod etcd/go.sum etcd/main.go
go_cache_open "${NRBC_CLUSTER_CACHE:-$repo/.cache/cluster}" "$BINARIES"

echo "build.sh: building test cluster binaries into $dir (cold: ~6 min on 2 cores)" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .) >&2
(cd "$here/k8s" && go build -trimpath -ldflags "$LDFLAGS" -o "$tmp/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kubectl \
	k8s.io/kubernetes/cmd/kubelet \
	k8s.io/kubernetes/cmd/kube-scheduler) >&2
go_cache_close build.sh
