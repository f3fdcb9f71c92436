#!/bin/sh
# nrbc builder entrypoint: lay out the SSH user, authorized_keys, host key and
# nix.conf from the mounted Secret and ConfigMap, start nix-daemon, then run
# sshd; at SIGTERM, stop taking sessions and wait for the ones running.
#
# The same script runs in the builder image and, in tests, as a local process
# for a simulated pod (test/kubelet/). Everything it writes lives under
# $NRBC_BUILDER_ROOT (empty in a container), except the SSH user itself and
# sshd's privilege-separation directory, which are system-wide by nature.
#
# Environment (all optional):
#   NRBC_BUILDER_ROOT            prefix of every path read or written ("")
#   NRBC_BUILDER_USER            SSH user for Nix clients (nixbld)
#   NRBC_BUILDER_GROUP           its primary group (nix-users)
#   NRBC_BUILDER_LISTEN_ADDRESS  sshd ListenAddress (0.0.0.0)
#   NRBC_BUILDER_PORT            sshd Port (22)
#   NRBC_BUILDER_NIX_DAEMON      "external": do not start nix-daemon (start: start
#                                it with $ROOT/etc/nix/nix.conf, and wait for
#                                its socket before sshd listens)
#   NRBC_BUILDER_SSHD            sshd binary (/usr/sbin/sshd, else from PATH)
#   NRBC_BUILDER_LOG_LEVEL       sshd LogLevel (INFO)
#   NRBC_BUILDER_SANDBOX         "1": builds run in Nix's sandbox, never
#                                without (sandbox-fallback false), /bin/sh
#                                in it is /bin/busybox when there is one; a
#                                sandboxed build is tried before sshd
#                                listens, and if it fails the builder exits
#                                saying why (also in the termination log)
#   NRBC_BUILDER_SYSTEMS         the builder class's Nix systems, space-separated:
#                                nix.conf extra-platforms (the builder's own
#                                system stays what Nix detects)
#   NRBC_BUILDER_FEATURES        the builder class's features, space-separated:
#                                nix.conf system-features (instead of Nix's
#                                defaults, so a class without big-parallel
#                                does not take such builds)
#   NRBC_BUILDER_SIBLING_PROXY   HOST:PORT of the nrbc proxy: nix-daemon
#                                substitutes from this client key's other
#                                builders through it, logged in as
#                                nrbc-sibling with this builder's own host
#                                key, pinning the proxy's host key
#                                ($ROOT/etc/nrbc/proxy/host-key.pub); the
#                                controller sets it on every builder
#   NRBC_BUILDER_MAX_STARTUPS    sshd MaxStartups (64:30:256): every connection
#                                comes from the proxy, which already rations
#                                unauthenticated clients; sshd's default
#                                (10:30:100) drops the proxy's handshakes
#                                whenever more than 10 sessions start at once
#
# Inputs: $ROOT/etc/nrbc/ssh/public (Secret key `public`: the key allowed to
# log in), $ROOT/etc/nrbc/ssh/host-key (optional: the key `host-key` of this
# builder's own Secret, which the controller made for it and the proxy pins;
# a request's own pod gets the shared Secret's), $ROOT/etc/nix/nix.conf
# (ConfigMap). Any key type sshd loads: the controller's are ECDSA P-256 PEM.
set -eu

ROOT=${NRBC_BUILDER_ROOT:-}
BUILDER_USER=${NRBC_BUILDER_USER:-nixbld}
BUILDER_GROUP=${NRBC_BUILDER_GROUP:-nix-users}
LISTEN=${NRBC_BUILDER_LISTEN_ADDRESS:-0.0.0.0}
PORT=${NRBC_BUILDER_PORT:-22}
NIX_DAEMON=${NRBC_BUILDER_NIX_DAEMON:-start}
LOG_LEVEL=${NRBC_BUILDER_LOG_LEVEL:-INFO}
MAX_STARTUPS=${NRBC_BUILDER_MAX_STARTUPS:-64:30:256}
SANDBOX=${NRBC_BUILDER_SANDBOX:-0}

SSH_DIR=$ROOT/etc/nrbc/ssh
NIX_DIR=$ROOT/etc/nix
RUN=$ROOT/run/nrbc
CONFIG=$RUN/sshd_config

log() { printf 'nrbc-builder: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case $PORT in
'' | *[!0-9]*) die "NRBC_BUILDER_PORT '$PORT' is not a port number" ;;
esac
case $MAX_STARTUPS in
'' | *[!0-9:]*) die "NRBC_BUILDER_MAX_STARTUPS '$MAX_STARTUPS' is not start[:rate:full]" ;;
esac
case $BUILDER_USER in
'' | *[!a-z0-9_-]*) die "NRBC_BUILDER_USER '$BUILDER_USER' is not a plain user name" ;;
esac

# --- the SSH user ----------------------------------------------------------

# Field 1 of the line of $2 (passwd/group format file) whose name is $1.
entry_field() {
	[ -r "$2" ] || return 1
	while IFS=: read -r name f1 f2 rest; do
		if [ "$name" = "$1" ]; then
			printf '%s:%s\n' "$f1" "$f2"
			return 0
		fi
	done <"$2"
	return 1
}

has_group() { entry_field "$1" /etc/group >/dev/null; }
has_user() { id "$1" >/dev/null 2>&1 || entry_field "$1" /etc/passwd >/dev/null; }

# Smallest id >= 1000 unused in column 3 of file $1.
free_id() {
	id=1000
	while cut -d: -f3 "$1" | grep -qx "$id"; do
		id=$((id + 1))
	done
	echo "$id"
}

ensure_group() {
	has_group "$BUILDER_GROUP" && return 0
	if command -v groupadd >/dev/null 2>&1; then
		groupadd "$BUILDER_GROUP"
	else
		echo "$BUILDER_GROUP:x:$(free_id /etc/group):" >>/etc/group
	fi
	log "created group $BUILDER_GROUP"
}

ensure_user() {
	ensure_group
	if ! has_user "$BUILDER_USER"; then
		if command -v useradd >/dev/null 2>&1; then
			# -g: on hosts with Nix a *group* named nixbld (the build users)
			# already exists and useradd would refuse to reuse it implicitly.
			useradd -m -g "$BUILDER_GROUP" -s /bin/sh "$BUILDER_USER"
		else
			gid=$(entry_field "$BUILDER_GROUP" /etc/group | cut -d: -f2)
			uid=$(free_id /etc/passwd)
			echo "$BUILDER_USER:x:$uid:$gid:nrbc builder:/home/$BUILDER_USER:/bin/sh" >>/etc/passwd
			if [ -f /etc/shadow ]; then
				echo "$BUILDER_USER:*:1::::::" >>/etc/shadow
			fi
			mkdir -p "/home/$BUILDER_USER"
			chown "$uid:$gid" "/home/$BUILDER_USER"
		fi
		log "created user $BUILDER_USER"
	fi
	# sshd refuses locked accounts ("!" password), which useradd creates.
	if [ -r /etc/shadow ]; then
		pw=$(entry_field "$BUILDER_USER" /etc/shadow | cut -d: -f1) || pw=
		case $pw in
		'!'*)
			if command -v usermod >/dev/null 2>&1; then
				usermod -p '*' "$BUILDER_USER"
				log "unlocked user $BUILDER_USER"
			else
				log "warning: $BUILDER_USER is locked and usermod is missing"
			fi
			;;
		esac
	fi
}

# Several builders may start at once on one host: serialise edits of
# /etc/passwd. flock when present; otherwise an mkdir lock.
with_user_lock() {
	lockdir=/run/lock
	[ -d "$lockdir" ] || lockdir=/tmp
	lock=$lockdir/nrbc-builder-user.lock
	if command -v flock >/dev/null 2>&1; then
		(
			flock -w 60 9 || die "could not lock $lock"
			"$@"
		) 9>"$lock"
		return
	fi
	n=0
	until mkdir "$lock.d" 2>/dev/null; do
		n=$((n + 1))
		[ "$n" -lt 600 ] || die "could not lock $lock.d"
		sleep 0.1
	done
	rc=0
	("$@") || rc=$?
	rmdir "$lock.d"
	return "$rc"
}

with_user_lock ensure_user

# sshd's own privilege-separation user and directory.
if [ -z "$ROOT" ] && ! has_user sshd; then
	echo "sshd:x:$(free_id /etc/passwd):65534:sshd privsep:/var/empty:/bin/false" >>/etc/passwd
fi
mkdir -p /run/sshd
chmod 0755 /run/sshd
if [ -z "$ROOT" ]; then
	# OpenSSH built by Nix uses /var/empty instead of Debian's /run/sshd.
	mkdir -p /var/empty
fi

# --- keys and config -------------------------------------------------------

mkdir -p "$RUN"
# sshd reads authorized_keys as the user: it must be able to get there.
chmod 0755 "$RUN"

[ -s "$SSH_DIR/public" ] || die "no public key at $SSH_DIR/public (Secret key 'public'): nobody could log in"
cp "$SSH_DIR/public" "$RUN/authorized_keys"
chmod 0644 "$RUN/authorized_keys"

HOST_KEY=$RUN/ssh_host_key
rm -f "$HOST_KEY" "$HOST_KEY.pub"
if [ -s "$SSH_DIR/host-key" ]; then
	(umask 077 && cp "$SSH_DIR/host-key" "$HOST_KEY")
	chmod 0600 "$HOST_KEY"
else
	ssh-keygen -q -t ed25519 -N '' -C "nrbc-builder-ephemeral" -f "$HOST_KEY"
	log "WARNING: no host key at $SSH_DIR/host-key (Secret key 'host-key')"
	log "WARNING: generated an EPHEMERAL host key; clients cannot verify this builder:"
	log "WARNING: $(ssh-keygen -l -f "$HOST_KEY.pub")"
fi

if [ -n "$ROOT" ]; then
	[ -r "$NIX_DIR/nix.conf" ] || log "warning: no $NIX_DIR/nix.conf (ConfigMap); Nix uses its defaults"
	# Outside a container /etc/nix is the host's: point sessions at ours.
	# Only the first SetEnv line counts, so everything goes on one.
	setenv="SetEnv NIX_CONF_DIR=$NIX_DIR PATH=$PATH"
else
	setenv="SetEnv PATH=$PATH"
fi
case $NIX_DIR$PATH in
*[[:space:]\"]*) die "PATH or NRBC_BUILDER_ROOT contains white space or quotes" ;;
esac

umask 022
cat >"$CONFIG.tmp" <<EOF
# Generated by nrbc builder/entrypoint.sh
ListenAddress $LISTEN
Port $PORT
HostKey $HOST_KEY
PidFile $RUN/sshd.pid
AuthorizedKeysFile $RUN/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $BUILDER_USER
StrictModes no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
PermitTunnel no
X11Forwarding no
PermitTTY no
PermitUserEnvironment no
PrintMotd no
UseDNS no
MaxStartups $MAX_STARTUPS
# Probes the proxy every 15 s of silence: the proxy hears that this builder
# lives even during a silent build, and a proxy connection that is gone is
# dropped after 45 s.
ClientAliveInterval 15
ClientAliveCountMax 3
LogLevel $LOG_LEVEL
$setenv
EOF

SSHD=${NRBC_BUILDER_SSHD:-}
if [ -z "$SSHD" ]; then
	if [ -x /usr/sbin/sshd ]; then
		SSHD=/usr/sbin/sshd
	else
		SSHD=$(command -v sshd) || die "sshd not found"
	fi
fi
case $SSHD in
/*) ;;
*) die "sshd must be an absolute path (it re-executes itself): $SSHD" ;;
esac
# OpenSSH 9.8 and later penalise a source address whose connections end
# before authentication, and all of ours come from the proxy's one address:
# a few Nix clients that vanish mid-connect would lock every user out of this
# builder. Older sshd does not know the option (Debian 12 has 9.2).
if "$SSHD" -t -f "$CONFIG.tmp" -o PerSourcePenalties=no >/dev/null 2>&1; then
	echo "PerSourcePenalties no" >>"$CONFIG.tmp"
fi
mv "$CONFIG.tmp" "$CONFIG"
"$SSHD" -t -f "$CONFIG" || die "sshd rejects $CONFIG"

# --- nix-daemon --------------------------------------------------------------

# What this client key's other builders hold, fetched from them inside the
# cluster (through the proxy, which bridges "nrbc-sibling" logged in with a
# builder's own host key to another builder of the same key) rather than
# uploaded again by the client. Paths there are the key's own, unsigned:
# trusted=true. fallback: a sibling that has gone is not a failed build.
# HostKeyAlias: Nix's known_hosts line names the host without the port.
sibling_substituter() {
	proxy_key=$ROOT/etc/nrbc/proxy/host-key.pub
	[ -n "${NRBC_BUILDER_SIBLING_PROXY:-}" ] || return 0
	if [ ! -s "$SSH_DIR/host-key" ] || [ ! -s "$proxy_key" ]; then
		log "no substituting from sibling builders: no own host key or no proxy host key"
		return 0
	fi
	sib_host=${NRBC_BUILDER_SIBLING_PROXY%:*}
	sib_port=${NRBC_BUILDER_SIBLING_PROXY##*:}
	read -r sib_type sib_key _ <"$proxy_key"
	sib_b64=$(printf '%s %s' "$sib_type" "$sib_key" | base64 | tr -d '\n')
	export NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG
}extra-substituters = ssh-ng://nrbc-sibling@$sib_host?ssh-key=$HOST_KEY&base64-ssh-public-host-key=$sib_b64&trusted=true
fallback = true"
	export NIX_SSHOPTS="-p $sib_port -o HostKeyAlias=$sib_host -o ConnectTimeout=5 -o ServerAliveInterval=10 -o ServerAliveCountMax=3"
	log "substituting from this client key's other builders through $NRBC_BUILDER_SIBLING_PROXY"
}

NIX_SOCKET=${NIX_DAEMON_SOCKET_PATH:-${NIX_STATE_DIR:-/nix/var/nix}/daemon-socket/socket}
if [ "$NIX_DAEMON" = external ]; then
	log "using the external nix-daemon"
else
	command -v nix-daemon >/dev/null 2>&1 || die "nix-daemon not found"
	log "starting nix-daemon"
	# The daemon reads the ConfigMap's nix.conf (trusted-users: without it
	# clients may not add unsigned paths); outside a container /etc/nix is
	# the host's. A socket left by an earlier run would fool the wait below.
	rm -f "$NIX_SOCKET"
	if [ "$SANDBOX" = 1 ]; then
		# After the ConfigMap's nix.conf, so these win over its sandbox line.
		sandbox_config="sandbox = true
sandbox-fallback = false"
		[ -x "$ROOT/bin/busybox" ] && sandbox_config="$sandbox_config
sandbox-paths = /bin/sh=$ROOT/bin/busybox"
		export NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG
}$sandbox_config"
	fi
	# The class's systems and features, after the ConfigMap's nix.conf.
	class_config=
	[ -n "${NRBC_BUILDER_SYSTEMS:-}" ] && class_config="extra-platforms = $NRBC_BUILDER_SYSTEMS"
	[ -n "${NRBC_BUILDER_FEATURES:-}" ] && class_config="${class_config:+$class_config
}system-features = $NRBC_BUILDER_FEATURES"
	[ -n "$class_config" ] && export NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG
}$class_config"
	sibling_substituter
	NIX_CONF_DIR=$NIX_DIR nix-daemon &
	daemon=$!
	# sshd (and so readiness) only once the daemon listens: a client let
	# in earlier would fail with "cannot connect to daemon".
	n=0
	until [ -S "$NIX_SOCKET" ]; do
		kill -0 "$daemon" 2>/dev/null || die "nix-daemon exited at start"
		n=$((n + 1))
		[ "$n" -lt 300 ] || die "nix-daemon did not create $NIX_SOCKET in 30 s"
		sleep 0.1
	done
fi

# --- the sandbox, tried before anyone relies on it ---------------------------

# A builder that cannot sandbox must say so now, in the pod's termination
# message (the NixBuilder's and request's status show it), not fail each
# user's build later with a line about cloning or mounting.
sandbox_check() {
	nonce=$(date +%s%N)
	if out=$(NIX_CONF_DIR=$NIX_DIR NIX_REMOTE=daemon timeout 120 nix-build --no-out-link \
	    -E "derivation { name = \"nrbc-sandbox-check\"; system = builtins.currentSystem;
	        builder = \"/bin/sh\"; args = [ \"-c\" \"echo > \$out\" ]; nonce = \"$nonce\"; }" \
	    2>&1); then
		log "builds run in Nix's sandbox"
		return 0
	fi
	why=$(printf '%s\n' "$out" | grep -i 'error' | tail -n 1)
	[ -n "$why" ] || why=$(printf '%s\n' "$out" | tail -n 1)
	msg="Nix cannot sandbox builds in this pod (${why#error: }): it needs the pod's own user namespace, an unmasked /proc and a seccomp profile that allows namespaces (docs/security.md, Sandboxed builds); the controller's --builder-sandbox=false turns sandboxing off"
	printf '%s\n' "$msg" >/dev/termination-log 2>/dev/null || true
	die "$msg"
}
if [ "$SANDBOX" = 1 ]; then
	sandbox_check
fi

# --- serve; drain at SIGTERM -------------------------------------------------

# This shell stays PID 1 rather than exec sshd: at SIGTERM (an eviction, a
# node drain, a scale-down, a deletion) only sshd's listener goes, so no new
# session starts here, while the sessions it holds run on until they end.
# The pod's grace period (the controller's --builder-drain-timeout) bounds
# the wait: then the kubelet kills what is left.

# Live children of process $1 (a stopped parent cannot fork, so the list
# taken while it is stopped is complete).
children_of() {
	for stat in /proc/[0-9]*/stat; do
		read -r pid _comm _state ppid _rest <"$stat" 2>/dev/null || continue
		[ "$ppid" = "$1" ] && echo "$pid"
	done
}

# How many of the processes $* still run (an exited one that nobody reaped
# yet is a zombie: state Z).
count_alive() {
	n=0
	for pid in "$@"; do
		read -r _pid _comm state _rest <"/proc/$pid/stat" 2>/dev/null || continue
		[ "$state" = Z ] || n=$((n + 1))
	done
	echo "$n"
}

stop_daemon() {
	[ -n "${daemon:-}" ] || return 0
	kill -TERM "$daemon" 2>/dev/null || true
	wait "$daemon" 2>/dev/null || true
}

drain() {
	kill -STOP "$sshd" 2>/dev/null || true
	# shellcheck disable=SC2046 # one pid per word
	set -- $(children_of "$sshd")
	kill -TERM "$sshd" 2>/dev/null || true
	kill -CONT "$sshd" 2>/dev/null || true
	wait "$sshd" 2>/dev/null || true
	left=$(count_alive "$@")
	log "asked to stop (SIG$stop): no new sessions; waiting for $left to end"
	waited=0
	while [ "$left" -gt 0 ]; do
		sleep 1
		waited=$((waited + 1))
		now=$(count_alive "$@")
		if [ "$now" != "$left" ] || [ $((waited % 30)) -eq 0 ]; then
			log "draining: $now sessions left after ${waited}s"
		fi
		left=$now
	done
	log "no sessions left: stopping"
	stop_daemon
	exit 0
}

stop=
trap 'stop=TERM' TERM
trap 'stop=INT' INT
"$SSHD" -D -e -f "$CONFIG" &
sshd=$!
log "sshd on $LISTEN:$PORT for user $BUILDER_USER"
while :; do
	rc=0
	wait "$sshd" || rc=$?
	[ -z "$stop" ] || drain
	if ! kill -0 "$sshd" 2>/dev/null; then
		log "sshd exited with status $rc"
		stop_daemon
		exit "$rc"
	fi
done
