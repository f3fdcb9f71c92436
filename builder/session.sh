#!/bin/sh
# sshd ForceCommand of nrbc builders (entrypoint.sh sets it): runs the
# client's command and, while it runs, tells the client on stderr when the
# kernel kills a process of this builder for using more memory than the pod
# may. Nix itself only says "signal 9 (Killed)".

# The container's cgroup mount (a test points it elsewhere).
CGROUP=${NRBC_SESSION_CGROUP:-/sys/fs/cgroup}

# oom_kill count of this container's memory cgroup (v2, else v1); empty when
# there is none to read (not in a container).
oom_kills() {
	for f in "$CGROUP/memory.events" "$CGROUP/memory/memory.oom_control"; do
		[ -r "$f" ] || continue
		while read -r k v; do
			if [ "$k" = oom_kill ]; then
				echo "$v"
				return 0
			fi
		done <"$f"
	done
	return 0
}

memory_limit() {
	for f in "$CGROUP/memory.max" "$CGROUP/memory/memory.limit_in_bytes"; do
		if [ -r "$f" ] && read -r v <"$f"; then
			case $v in
			'' | *[!0-9]*) echo "$v" ;;
			*) echo "$((v / 1048576)) MiB" ;;
			esac
			return 0
		fi
	done
	echo unknown
}

watch_oom() {
	seen=$1
	# sleep's descriptors are not the session's: killing this loop must
	# leave nothing that holds the channel open.
	while sleep 1 </dev/null >/dev/null 2>&1; do
		now=$(oom_kills)
		if [ -n "$now" ] && [ "$now" -gt "$seen" ]; then
			echo "nrbc-builder: the kernel killed $((now - seen)) process(es) on builder" \
				"$(hostname) for using more memory than its limit ($(memory_limit)):" \
				"a build that needs more must ask for it (the request's memory resources)" >&2
			seen=$now
		fi
	done
}

start=$(oom_kills)
watcher=
if [ -n "$start" ]; then
	watch_oom "$start" </dev/null >/dev/null &
	watcher=$!
fi
rc=0
/bin/sh -c "$SSH_ORIGINAL_COMMAND" || rc=$?
[ -z "$watcher" ] || kill "$watcher" 2>/dev/null || true
# A command killed by a signal ends the same way here, so that the client
# (and the proxy) see that signal rather than a status.
if [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
	trap - "$((rc - 128))" 2>/dev/null || true
	kill -s "$((rc - 128))" "$$"
fi
exit "$rc"
