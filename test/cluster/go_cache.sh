# Sourced by the build scripts of the test cluster's binaries (build.sh,
# runtime.sh, netpol/build.sh): one directory of binaries per cache key,
# built into a temporary directory and moved into place whole (so one that
# exists is complete), under a lock so two runs starting at once do not
# both build it. After setting $key (go_cache_key, or your own):
#   go_cache_open CACHE "BINARIES"  prints the directory and exits 0 when it
#                                   is built; else sets $dir and $tmp
#   (build into $tmp)
#   go_cache_close NAME             checks, moves $tmp to $dir, prints $dir

# go_cache_key ARG1 FIRST_LINE DIR FILE...: sets $key from FIRST_LINE and
# the sha256 of each FILE (named relative to DIR); when ARG1 (the script's
# own first argument) is --key, prints it and exits.
go_cache_key() {
	go_cache_arg=$1
	go_cache_first=$2
	go_cache_base=$3
	shift 3
	key=$(
		{
			echo "$go_cache_first"
			for f in "$@"; do
				echo "$f $(sha256sum <"$go_cache_base/$f" | cut -d' ' -f1)"
			done
		} | sha256sum | cut -c1-16
	)
	if [ "$go_cache_arg" = "--key" ]; then
		echo "$key"
		exit 0
	fi
}

go_cache_complete() {
	for b in $2; do
		[ -x "$1/$b" ] || return 1
	done
	return 0
}

go_cache_open() {
	go_cache_binaries=$2
	dir=$1/$key
	if go_cache_complete "$dir" "$go_cache_binaries"; then
		echo "$dir"
		exit 0
	fi
	mkdir -p "$1"
	exec 9>"$1/.lock-$key"
	if command -v flock >/dev/null 2>&1; then
		flock 9
	fi
	if go_cache_complete "$dir" "$go_cache_binaries"; then
		echo "$dir"
		exit 0
	fi
	tmp=$1/.tmp-$key-$$
	rm -rf "$tmp"
	mkdir -p "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	# A toolchain switch would mean a download; the module files ask for a
	# Go this machine has.
	export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
	# VCS stamping would need git (and a trusted checkout) and changes nothing.
	case " ${GOFLAGS:-} " in
	*" -buildvcs="*) ;;
	*) export GOFLAGS="${GOFLAGS:-} -buildvcs=false" ;;
	esac
	go_cache_start=$(date +%s)
}

go_cache_close() {
	go_cache_complete "$tmp" "$go_cache_binaries" ||
		{ echo "$1: binaries missing after build" >&2; exit 1; }
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
	echo "$1: built in $(($(date +%s) - go_cache_start)) s" >&2
	echo "$dir"
}
