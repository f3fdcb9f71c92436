#!/usr/bin/env bash
# Builds the two images from the repository's Containerfiles without any
# image registry (none is reachable on the test machines) and exports each
# as an OCI archive:
#   .cache/images/<key>/nrbc.tar          localhost/nrbc:dev
#   .cache/images/<key>/nrbc-builder.tar  localhost/nrbc-builder:dev
# <key> hashes every input, so a run with unchanged inputs does nothing; the
# last line printed is the directory. Load into containerd with
#   ctr -n k8s.io images import --base-name localhost/nrbc .../nrbc.tar
# (podman's OCI archives name the image by its tag only: see README.md here).
#
# debian:13-slim (trixie), the base of both, is made here with mmdebstrap
# from the host's Debian mirror (the host may be Debian 12: its sources are
# rewritten for trixie, test/images/debian-sources.sh) and tagged
# docker.io/library/debian:13-slim in a private containers-storage, and every
# build runs with --pull=never.
# Run as root. Needs mmdebstrap, podman (with buildah inside), runc.
#   --check             build nothing: print the directory and exit 0 if it
#                       is up to date, else exit 1 (for tests)
#   NRBC_IMAGES_CACHE   cache directory (default: <repo>/.cache/images)
#   NRBC_BUILDER_DEBIAN 13 (default: Nix 2.26, OpenSSH 10) or 12 (Nix 2.8,
#                       OpenSSH 9.2): the Debian release of the builder image
#                       (builder/Containerfile's build argument DEBIAN); 12
#                       makes debian:12-slim the same way
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
cache=${NRBC_IMAGES_CACHE:-$top/.cache/images}

# --- key: every file that goes into either image, and this script ----------
inputs=(Containerfile meson.build meson_options.txt builder/Containerfile
	builder/entrypoint.sh test/images/build.sh test/images/containers.conf
	test/images/debian-sources.sh)
builder_debian=${NRBC_BUILDER_DEBIAN:-13}
case $builder_debian in
12 | 13) ;;
*) echo "images: NRBC_BUILDER_DEBIAN must be 12 or 13, not '$builder_debian'" >&2; exit 2 ;;
esac
# sha256sum lists names and contents: a renamed file changes the key too.
key=$({ sha256sum "${inputs[@]}" $(find src -type f | LC_ALL=C sort)
	[ "$builder_debian" = 13 ] || echo "builder-debian=$builder_debian"; } | sha256sum | cut -c1-16)
out=$cache/$key
if [ -s "$out/nrbc.tar" ] && [ -s "$out/nrbc-builder.tar" ]; then
	echo "images: up to date"
	echo "$out"
	exit 0
fi
if [ "${1:-}" = --check ]; then
	echo "images: out of date (run test/images/build.sh)" >&2
	exit 1
fi

# --- podman, set up for this machine -------------------------------------
# A private storage root keeps the host's (if any) untouched and survives
# between runs, so the base image and unchanged layers are reused.
# containers.conf: runc + cgroupfs (crun refuses hybrid cgroups), no
# default ulimits (raising them above the host's hard limits fails).
export CONTAINERS_CONF=$top/test/images/containers.conf
store=$cache/storage
pod() {
	podman --root "$store/root" --runroot "$store/run" --storage-driver overlay \
		--runtime runc --cgroup-manager cgroupfs "$@"
}

# --- base images -----------------------------------------------------------
# debian:N-slim, made once per storage. minbase is what the official slim
# image holds (essential + apt); the mirror list is the host's, rewritten for
# the release, so RUN apt-get in the builds reaches the same mirror.
base_image() {
	local release=$1 base=docker.io/library/debian:$1-slim suite t0=$SECONDS
	pod image exists "$base" && return 0
	suite=$(test/images/debian-sources.sh --suite "$release")
	echo "images: making $base ($suite) with mmdebstrap"
	tmp=$(mktemp -d /var/tmp/nrbc-debootstrap.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	test/images/debian-sources.sh "$release" >"$tmp/debian.sources"
	mmdebstrap --quiet --variant=minbase \
		--setup-hook='mkdir -p "$1/etc/apt/sources.list.d"' \
		--customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' \
		"$suite" "$tmp/rootfs.tar" "$tmp/debian.sources"
	pod import --quiet --change 'CMD ["bash"]' "$tmp/rootfs.tar" "$base" >/dev/null
	rm -rf "$tmp"
	trap - EXIT
	echo "images: $base made in $((SECONDS - t0)) s"
}
base_image 13
base_image "$builder_debian"

# --- the two images ----------------------------------------------------------
# --network host: RUN apt-get needs the mirror, and DNS is the host's.
build() {
	local tag=$1 file=$2 context=$3 t0=$SECONDS
	shift 3
	echo "images: building $tag"
	pod build --quiet --pull=never --network host --layers "$@" \
		-t "$tag" -f "$file" "$context" >/dev/null
	echo "images: $tag built in $((SECONDS - t0)) s"
}
# The nrbc image's context is the repository: copy only what it uses, not
# .git, build directories or this cache.
ctx=$(mktemp -d /var/tmp/nrbc-context.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp -r meson.build meson_options.txt src "$ctx/"
build localhost/nrbc:dev Containerfile "$ctx"
build localhost/nrbc-builder:dev builder/Containerfile builder --build-arg DEBIAN="$builder_debian"

mkdir -p "$out.tmp"
rm -f "$out.tmp"/*.tar
pod save --quiet --format oci-archive -o "$out.tmp/nrbc.tar" localhost/nrbc:dev
pod save --quiet --format oci-archive -o "$out.tmp/nrbc-builder.tar" localhost/nrbc-builder:dev
rm -rf "$out"
mv "$out.tmp" "$out"
# Older keys' archives are dead weight (the storage keeps the layers).
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name storage ! -name "$key" -exec rm -rf {} +
echo "$out"
