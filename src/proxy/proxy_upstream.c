#include "proxy_upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/sockios.h>

#include "base64.h"
#include "buf.h"
#include "log.h"
#include "proxy_keys.h"
#include "sockopt.h"

/* Handshakes the builder ends before its SSH banner are tried again: that is
 * how sshd sheds load (MaxStartups), and nothing has run on the builder yet. */
#define UPSTREAM_ATTEMPTS 3
#define UPSTREAM_RETRY_MS 50 /* then 4x per attempt */
#define UPSTREAM_MACS "hmac-sha2-256,hmac-sha2-512"
/* A keepalive is only sent while the socket has this much room, so that it
 * always goes out whole: libssh2 swallows the EAGAIN of a half-sent
 * keepalive, and its next packet would then refuse to go out. */
#define UPSTREAM_KEEPALIVE_ROOM (16 * 1024)
#define UPSTREAM_KEEPALIVE_MIN_MS 2000

enum upstream_state {
	UPSTREAM_CONNECTING,
	UPSTREAM_HANDSHAKE,
	UPSTREAM_RETRY_WAIT,
	UPSTREAM_AUTH,
	UPSTREAM_READY,
	UPSTREAM_FAILED,
	UPSTREAM_CLOSED,
};

static const char *const upstream_state_names[] = {
	[UPSTREAM_CONNECTING] = "CONNECTING",
	[UPSTREAM_HANDSHAKE] = "HANDSHAKE",
	[UPSTREAM_RETRY_WAIT] = "RETRY_WAIT",
	[UPSTREAM_AUTH] = "AUTH",
	[UPSTREAM_READY] = "READY",
	[UPSTREAM_FAILED] = "FAILED",
	[UPSTREAM_CLOSED] = "CLOSED",
};

/* One TCP connection to the builder, with its own poll handle: a retry closes
 * it (its close callback frees it) and opens the next. */
struct upstream_conn {
	uv_poll_t poll; /* first: the close callback casts back */
	int fd;
	struct proxy_upstream *u;
};

struct proxy_upstream {
	uv_loop_t *loop;
	uint64_t session_id;
	enum upstream_state state;
	struct upstream_conn *conn;
	int poll_events;
	uv_timer_t timer; /* the retry while connecting, keepalives once READY */
	int attempts;
	int pending_closes; /* handles whose close callbacks have not run */
	LIBSSH2_SESSION *ssh;
	char *host;
	int port;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char *user;
	const struct proxy_keys *keys;
	/* The pinned host key of this builder; NULL: the shared one of keys. */
	unsigned char *pin_blob;
	size_t pin_len;
	char *pin_type;
	struct proxy_upstream_events events;
	void *data;
	const void *blocked_op;
	const void *open_owner;
	int connect_errno;
	bool unreachable; /* failed before the builder took the connection */
	/* keepalive: the builder's last bytes (while we listen), our last probe */
	uint64_t keepalive_interval_ms;
	int keepalive_count;
	uint64_t heard, keepalive_sent;
	char op_keepalive;
};

static void upstream_release(struct proxy_upstream *u)
{
	if (--u->pending_closes > 0 || u->state != UPSTREAM_CLOSED)
		return;
	free(u->host);
	free(u->user);
	free(u->pin_blob);
	free(u->pin_type);
	free(u);
}

static void upstream_set_state(struct proxy_upstream *u, enum upstream_state state)
{
	if (u->state == state)
		return;
	log_debug("session=%llu upstream %s:%d: %s => %s", (unsigned long long)u->session_id,
	    u->host, u->port, upstream_state_names[u->state], upstream_state_names[state]);
	u->state = state;
}

static void upstream_on_poll(uv_poll_t *h, int status, int events);
static void upstream_set_keepalive(struct proxy_upstream *u, uint64_t interval_ms, int count);
static void upstream_close_conn(struct proxy_upstream *u);
static void upstream_handshake_lost(struct proxy_upstream *u, const char *why);

static void upstream_set_events(struct proxy_upstream *u, int events)
{
	int rc;

	if (!u->conn || events == u->poll_events)
		return;
	u->poll_events = events;
	if (!events) {
		uv_poll_stop(&u->conn->poll);
		return;
	}
	/* libuv refuses only a second handle on the same fd or bad events, both
	 * bugs here. Failing the connection from inside the many callers would
	 * call the owner back in the middle of its own call: say it loudly. */
	rc = uv_poll_start(&u->conn->poll, events, upstream_on_poll);
	if (rc < 0)
		log_error("session=%llu builder %s:%d: cannot watch the connection: %s",
		    (unsigned long long)u->session_id, u->host, u->port, uv_strerror(rc));
}

/* One way out for every failure: stop watching, tell the owner once. */
static void upstream_vfail(struct proxy_upstream *u, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void upstream_vfail(struct proxy_upstream *u, const char *fmt, va_list ap)
{
	struct buf msg;

	if (u->state == UPSTREAM_FAILED || u->state == UPSTREAM_CLOSED)
		return;
	buf_init(&msg, 4096);
	if (buf_vprintf(&msg, fmt, ap) < 0)
		buf_append_str(&msg, "builder connection failed");
	upstream_set_state(u, UPSTREAM_FAILED);
	upstream_set_events(u, 0);
	log_info("session=%llu builder %s:%d: %s", (unsigned long long)u->session_id, u->host,
	    u->port, msg.data ? msg.data : "failed");
	u->events.failed(u->data, msg.data ? msg.data : "builder connection failed");
	buf_finish(&msg);
}

static void upstream_fail(struct proxy_upstream *u, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void upstream_fail(struct proxy_upstream *u, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	upstream_vfail(u, fmt, ap);
	va_end(ap);
}

/* The builder took no connection (refused, reset, or dropped before its
 * banner): nothing was said to it, so another builder may be tried. */
static void upstream_fail_unreachable(struct proxy_upstream *u, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void upstream_fail_unreachable(struct proxy_upstream *u, const char *fmt, ...)
{
	va_list ap;

	u->unreachable = true;
	va_start(ap, fmt);
	upstream_vfail(u, fmt, ap);
	va_end(ap);
}

bool proxy_upstream_unreachable(const struct proxy_upstream *u)
{
	return u && u->unreachable;
}

const char *proxy_upstream_error(const struct proxy_upstream *u)
{
	char *msg = NULL;

	if (!u->ssh)
		return "no session";
	libssh2_session_last_error(u->ssh, &msg, NULL, 0);
	return msg && *msg ? msg : "unknown error";
}

/* "SHA256:..." like ssh-keygen -l, for host key messages. */
static char *blob_fingerprint(const unsigned char *blob, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char *b64, *fp;
	size_t n;

	if (!EVP_Digest(blob, len, md, &md_len, EVP_sha256(), NULL))
		return NULL;
	b64 = base64_encode(md, md_len);
	if (!b64)
		return NULL;
	n = strlen(b64);
	while (n && b64[n - 1] == '=')
		b64[--n] = '\0';
	fp = str_printf("SHA256:%s", b64);
	free(b64);
	return fp;
}

/* The host key this builder must present: its own when the controller
 * recorded one, else the shared builder host key. */
static const unsigned char *upstream_wanted_key(const struct proxy_upstream *u, size_t *len,
    const char **type)
{
	if (u->pin_blob) {
		*len = u->pin_len;
		*type = u->pin_type;
		return u->pin_blob;
	}
	return proxy_keys_builder_host_key(u->keys, len, type);
}

static bool upstream_check_host_key(struct proxy_upstream *u)
{
	size_t got_len = 0, want_len = 0;
	int got_type = 0;
	const char *want_type = NULL;
	const unsigned char *got = (const unsigned char *)libssh2_session_hostkey(u->ssh,
	    &got_len, &got_type);
	const unsigned char *want = upstream_wanted_key(u, &want_len, &want_type);
	char *got_fp, *want_fp;

	if (!want) {
		upstream_fail(u, "cannot verify the builder's host key: the proxy has no host "
		    "key configured (it generated an ephemeral one); configure the Secret's "
		    "host-key or --builder-host-key");
		return false;
	}
	if (got && got_len == want_len && memcmp(got, want, want_len) == 0)
		return true;
	got_fp = got ? blob_fingerprint(got, got_len) : NULL;
	want_fp = blob_fingerprint(want, want_len);
	if (u->pin_blob)
		upstream_fail(u, "builder %s:%d presented host key %s, not its own host key "
		    "%s %s that the controller recorded: refusing to connect", u->host, u->port,
		    got_fp ? got_fp : "(none)", want_type, want_fp ? want_fp : "?");
	else
		upstream_fail(u, "builder %s:%d presented host key %s, expected %s %s: refusing "
		    "to connect (the builder must use the SSH key Secret's host-key)", u->host,
		    u->port, got_fp ? got_fp : "(none)", want_type, want_fp ? want_fp : "?");
	free(got_fp);
	free(want_fp);
	return false;
}

/* Re-arm for the direction libssh2 is blocked on. */
static void upstream_wait(struct proxy_upstream *u)
{
	int dirs = libssh2_session_block_directions(u->ssh);
	int events = 0;

	if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND)
		events |= UV_READABLE;
	if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		events |= UV_WRITABLE;
	upstream_set_events(u, events ? events : UV_READABLE);
}

static void upstream_step(struct proxy_upstream *u);

/* libssh2's recv, noting when the builder was last heard from. */
static LIBSSH2_RECV_FUNC(upstream_recv)
{
	struct proxy_upstream *u = *abstract;
	ssize_t n = recv(socket, buffer, length, flags);

	if (n < 0)
		return -errno;
	if (n > 0)
		u->heard = uv_now(u->loop);
	return n;
}

/* Room for a whole keepalive packet in the socket, and nothing of ours
 * half-sent. */
static bool upstream_keepalive_fits(const struct proxy_upstream *u)
{
	int queued = 0, sndbuf = 0;
	socklen_t len = sizeof(sndbuf);

	if (u->blocked_op || !u->conn)
		return false;
	if (ioctl(u->conn->fd, SIOCOUTQ, &queued) < 0 ||
	    getsockopt(u->conn->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0)
		return false;
	return sndbuf - queued >= UPSTREAM_KEEPALIVE_ROOM;
}

/* Builders' sshd probes us every 15 s (ClientAliveInterval, builder/
 * entrypoint.sh), which keeps a live builder from ever being silent for a
 * whole interval. Only a builder that does not (an older image) is probed
 * here, and libssh2 keeps each of its answers (an SSH_MSG_REQUEST_FAILURE)
 * until the session is freed: about 100 bytes a probe. */
static void upstream_on_keepalive(uv_timer_t *t)
{
	struct proxy_upstream *u = t->data;
	uint64_t now = uv_now(u->loop);
	uint64_t limit = u->keepalive_interval_ms * (uint64_t)u->keepalive_count;
	uint64_t since = u->heard > u->keepalive_sent ? u->heard : u->keepalive_sent;

	if (u->state != UPSTREAM_READY)
		return;
	if (now - u->heard >= limit) {
		upstream_fail(u, "builder %s:%d answered no keepalive for %llus", u->host, u->port,
		    (unsigned long long)(now - u->heard) / 1000);
		return;
	}
	if (now - since >= u->keepalive_interval_ms && upstream_keepalive_fits(u)) {
		int rc = libssh2_keepalive_send(u->ssh, NULL);

		if (rc && rc != LIBSSH2_ERROR_EAGAIN) {
			upstream_fail(u, "connection to builder %s:%d lost: %s", u->host, u->port,
			    proxy_upstream_error(u));
			return;
		}
		u->keepalive_sent = now;
		/* It wants a reply: listen even if no channel reads now. */
		upstream_set_events(u, u->poll_events | UV_READABLE);
	}
	since = u->heard > u->keepalive_sent ? u->heard : u->keepalive_sent;
	uv_timer_start(&u->timer, upstream_on_keepalive,
	    since + u->keepalive_interval_ms > now ? since + u->keepalive_interval_ms - now : 1, 0);
}

static void upstream_start_keepalive(struct proxy_upstream *u)
{
	if (!u->keepalive_interval_ms)
		return;
	/* libssh2 sends whenever asked (an interval of 1 s is its minimum of 2). */
	libssh2_keepalive_config(u->ssh, 1, 1);
	u->heard = u->keepalive_sent = uv_now(u->loop);
	uv_timer_start(&u->timer, upstream_on_keepalive, u->keepalive_interval_ms, 0);
}

static void upstream_step_connecting(struct proxy_upstream *u)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (u->connect_errno)
		err = u->connect_errno;
	else if (getsockopt(u->conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY) {
		upstream_set_events(u, UV_WRITABLE);
		return;
	}
	if (err == ECONNRESET) {
		/* Accepted, then reset before we saw it: shed like a closed banner. */
		upstream_handshake_lost(u, strerror(err));
		return;
	}
	if (err) {
		upstream_fail_unreachable(u, "cannot connect to builder %s:%d: %s", u->host, u->port,
		    strerror(err));
		return;
	}
	u->ssh = libssh2_session_init_ex(NULL, NULL, NULL, u);
	if (!u->ssh) {
		upstream_fail(u, "cannot create an SSH session for builder %s:%d", u->host, u->port);
		return;
	}
	libssh2_session_set_blocking(u->ssh, 0);
#if LIBSSH2_VERSION_NUM >= 0x010b01
	/* 1.11.1 takes a function pointer, and deprecates the void * setter. */
	libssh2_session_callback_set2(u->ssh, LIBSSH2_CALLBACK_RECV,
	    (libssh2_cb_generic *)upstream_recv);
#else
	{
		union {
			LIBSSH2_RECV_FUNC((*fn));
			void *ptr;
		} recv_cb = { .fn = upstream_recv };

		libssh2_session_callback_set(u->ssh, LIBSSH2_CALLBACK_RECV, recv_cb.ptr);
	}
#endif
	libssh2_session_flag(u->ssh, LIBSSH2_FLAG_COMPRESS, 0);
	/* The builder is known: ask for the host key type it must have, and for
	 * the cheapest strong cipher libssh2 1.10 has (no AES-GCM, chacha20 or
	 * ETM MACs there). It encrypts 16 bytes per call, so AES-256's extra
	 * rounds cost more than the call; measured in docs/benchmarks.md, P1. */
	{
		size_t want_len;
		const char *want_type = NULL;

		if (upstream_wanted_key(u, &want_len, &want_type) && want_type &&
		    strcmp(want_type, "ssh-rsa") != 0)
			libssh2_session_method_pref(u->ssh, LIBSSH2_METHOD_HOSTKEY, want_type);
	}
	libssh2_session_method_pref(u->ssh, LIBSSH2_METHOD_CRYPT_CS,
	    "aes128-ctr,aes256-ctr,aes192-ctr");
	libssh2_session_method_pref(u->ssh, LIBSSH2_METHOD_CRYPT_SC,
	    "aes128-ctr,aes256-ctr,aes192-ctr");
	/* SHA-2 MACs only: libssh2's default list goes on to MD5 and RIPEMD-160.
	 * hmac-sha1 would be acceptable as an SSH MAC, but with SHA-NI it is
	 * only 10% cheaper than hmac-sha2-256 here, 2% of the proxy's CPU. */
	libssh2_session_method_pref(u->ssh, LIBSSH2_METHOD_MAC_CS, UPSTREAM_MACS);
	libssh2_session_method_pref(u->ssh, LIBSSH2_METHOD_MAC_SC, UPSTREAM_MACS);
	upstream_set_state(u, UPSTREAM_HANDSHAKE);
	upstream_step(u);
}

static int upstream_open(struct proxy_upstream *u);

static void upstream_on_retry(uv_timer_t *t)
{
	struct proxy_upstream *u = t->data;
	int rc;

	if (u->state == UPSTREAM_RETRY_WAIT && (rc = upstream_open(u)) < 0)
		upstream_fail_unreachable(u, "cannot connect to builder %s:%d: %s", u->host, u->port,
		    uv_strerror(rc));
}

/* The connection ended during the handshake: again on a new connection while
 * attempts remain, else the session fails with why. */
static void upstream_handshake_lost(struct proxy_upstream *u, const char *why)
{
	uint64_t delay = UPSTREAM_RETRY_MS;

	if (u->attempts >= UPSTREAM_ATTEMPTS) {
		upstream_fail_unreachable(u, "SSH handshake with builder %s:%d failed: %s (%d "
		    "attempts)",
		    u->host, u->port, why, u->attempts);
		return;
	}
	for (int i = 1; i < u->attempts; i++)
		delay *= 4;
	log_info("session=%llu builder %s:%d ended the SSH handshake (%s): trying again in "
	    "%llu ms", (unsigned long long)u->session_id, u->host, u->port, why,
	    (unsigned long long)delay);
	upstream_close_conn(u);
	upstream_set_state(u, UPSTREAM_RETRY_WAIT);
	uv_timer_start(&u->timer, upstream_on_retry, delay, 0);
}

static void upstream_step_handshake(struct proxy_upstream *u)
{
	int rc = libssh2_session_handshake(u->ssh, u->conn->fd);

	if (rc == LIBSSH2_ERROR_EAGAIN) {
		upstream_wait(u);
		return;
	}
	if (rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_SOCKET_RECV ||
	    rc == LIBSSH2_ERROR_SOCKET_SEND || rc == LIBSSH2_ERROR_BANNER_RECV) {
		upstream_handshake_lost(u, proxy_upstream_error(u));
		return;
	}
	if (rc) {
		upstream_fail(u, "SSH handshake with builder %s:%d failed: %s", u->host, u->port,
		    proxy_upstream_error(u));
		return;
	}
	if (!upstream_check_host_key(u))
		return;
	upstream_set_state(u, UPSTREAM_AUTH);
	upstream_step(u);
}

static void upstream_step_auth(struct proxy_upstream *u)
{
	size_t priv_len, pub_len;
	const char *priv = proxy_keys_upstream_private(u->keys, &priv_len);
	const char *pub = proxy_keys_upstream_public(u->keys, &pub_len);
	int rc = libssh2_userauth_publickey_frommemory(u->ssh, u->user, strlen(u->user), pub,
	    pub_len, priv, priv_len, NULL);

	if (rc == LIBSSH2_ERROR_EAGAIN) {
		upstream_wait(u);
		return;
	}
	if (rc) {
		upstream_fail(u, "builder %s:%d refused the proxy's key for user %s: %s", u->host,
		    u->port, u->user, proxy_upstream_error(u));
		return;
	}
	upstream_set_state(u, UPSTREAM_READY);
	upstream_set_events(u, UV_READABLE);
	upstream_start_keepalive(u);
	u->events.ready(u->data);
}

static void upstream_step(struct proxy_upstream *u)
{
	switch (u->state) {
	case UPSTREAM_CONNECTING:
		upstream_step_connecting(u);
		break;
	case UPSTREAM_HANDSHAKE:
		upstream_step_handshake(u);
		break;
	case UPSTREAM_AUTH:
		upstream_step_auth(u);
		break;
	case UPSTREAM_READY:
		u->events.io(u->data);
		break;
	case UPSTREAM_RETRY_WAIT:
	case UPSTREAM_FAILED:
	case UPSTREAM_CLOSED:
		break;
	}
}

static void upstream_on_poll(uv_poll_t *h, int status, int events)
{
	struct proxy_upstream *u = h->data;

	(void)events;
	if (status < 0 && u->state != UPSTREAM_CONNECTING) {
		/* libuv reports POLLERR as EBADF; the socket knows the real cause. */
		int soerr = 0;
		socklen_t len = sizeof(soerr);
		const char *why = uv_strerror(status);
		if (status == UV_EBADF &&
		    getsockopt(u->conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr)
			why = strerror(soerr);
		if (u->state == UPSTREAM_HANDSHAKE)
			upstream_handshake_lost(u, why);
		else
			upstream_fail(u, "connection to builder %s:%d lost: %s", u->host, u->port, why);
		return;
	}
	upstream_step(u);
}

static void upstream_conn_on_close(uv_handle_t *h)
{
	struct upstream_conn *c = (struct upstream_conn *)h;
	struct proxy_upstream *u = c->u;

	if (c->fd >= 0)
		close(c->fd);
	free(c);
	upstream_release(u);
}

/* Frees the SSH session on the connection, then the connection itself once
 * its poll handle has closed (the descriptor must outlive the handle). */
static void upstream_close_conn(struct proxy_upstream *u)
{
	struct upstream_conn *c = u->conn;
	int rc = 0;

	if (u->ssh) {
		/* A non-blocking libssh2_session_free() returns EAGAIN while it
		 * still has channels to close politely. With the socket shut
		 * down those closes fail at once, and the free goes through. */
		if (c)
			shutdown(c->fd, SHUT_RDWR);
		for (int i = 0; i < 16; i++) {
			rc = libssh2_session_free(u->ssh);
			if (rc != LIBSSH2_ERROR_EAGAIN)
				break;
		}
		if (rc == LIBSSH2_ERROR_EAGAIN)
			log_warnx("session=%llu cannot free the builder SSH session",
			    (unsigned long long)u->session_id);
		u->ssh = NULL;
	}
	if (!c)
		return;
	u->conn = NULL;
	u->poll_events = 0;
	u->pending_closes++;
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, upstream_conn_on_close);
}

/* A new connection attempt: CONNECTING, the result arrives by the poll.
 * 0, or a libuv error code. */
static int upstream_open(struct proxy_upstream *u)
{
	struct upstream_conn *c = calloc(1, sizeof(*c));
	int one = 1, rc;

	if (!c)
		return UV_ENOMEM;
	c->u = u;
	c->fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	rc = c->fd < 0 ? uv_translate_sys_error(errno) :
	    uv_poll_init_socket(u->loop, &c->poll, c->fd);
	if (rc < 0) {
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		return rc;
	}
	c->poll.data = u;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (sockopt_keepalive(c->fd, u->keepalive_interval_ms, u->keepalive_count) < 0)
		log_warn("session=%llu cannot set TCP keepalive towards the builder",
		    (unsigned long long)u->session_id);
	u->conn = c;
	u->attempts++;
	u->connect_errno = 0;
	/* Connection errors (refused, unreachable) surface through SO_ERROR once
	 * the socket turns writable; an immediate one is kept for that moment,
	 * so both take the one failure path. */
	if (connect(c->fd, (struct sockaddr *)&u->addr, u->addr_len) < 0 && errno != EINPROGRESS)
		u->connect_errno = errno;
	upstream_set_state(u, UPSTREAM_CONNECTING);
	upstream_set_events(u, UV_WRITABLE);
	return 0;
}

struct proxy_upstream *proxy_upstream_create(uv_loop_t *loop, uint64_t session_id,
    const struct proxy_upstream_options *opts, const struct proxy_upstream_events *events,
    void *data)
{
	struct proxy_upstream *u = calloc(1, sizeof(*u));
	int rc;

	if (!u)
		return NULL;
	u->loop = loop;
	u->session_id = session_id;
	u->port = opts->port;
	u->keys = opts->keys;
	u->events = *events;
	u->data = data;
	upstream_set_keepalive(u, opts->keepalive_interval_ms, opts->keepalive_count);
	if (uv_timer_init(loop, &u->timer) < 0) {
		free(u);
		return NULL;
	}
	u->timer.data = u;
	u->host = strdup(opts->host);
	u->user = strdup(opts->user);
	if (!u->host || !u->user)
		goto bad;
	if (opts->host_key && *opts->host_key) {
		char *err = NULL;

		if (proxy_keys_parse_host_public(opts->host_key, &u->pin_blob, &u->pin_len,
		    &u->pin_type, &err) < 0) {
			log_error("session=%llu builder host key \"%s\": %s",
			    (unsigned long long)session_id, opts->host_key, err ? err : "invalid");
			free(err);
			goto bad;
		}
	}
	if (uv_ip4_addr(opts->host, opts->port, (struct sockaddr_in *)&u->addr) == 0) {
		u->addr_len = sizeof(struct sockaddr_in);
	} else if (uv_ip6_addr(opts->host, opts->port, (struct sockaddr_in6 *)&u->addr) == 0) {
		u->addr_len = sizeof(struct sockaddr_in6);
	} else {
		log_error("session=%llu builder address \"%s\" is not a numeric IP address",
		    (unsigned long long)session_id, opts->host);
		goto bad;
	}
	rc = upstream_open(u);
	if (rc < 0) {
		log_error("session=%llu cannot open a connection to builder %s:%d: %s",
		    (unsigned long long)session_id, opts->host, opts->port, uv_strerror(rc));
		goto bad;
	}
	return u;
bad:
	/* The timer is initialised: memory goes after its close callback. */
	proxy_upstream_destroy(u);
	return NULL;
}

static void upstream_timer_on_close(uv_handle_t *h)
{
	upstream_release(h->data);
}

void proxy_upstream_destroy(struct proxy_upstream *u)
{
	if (!u)
		return;
	if (u->ssh && (u->state == UPSTREAM_READY || u->state == UPSTREAM_AUTH))
		/* One non-blocking try; the builder notices the TCP close anyway. */
		libssh2_session_disconnect(u->ssh, "nrbc proxy session closed");
	upstream_set_state(u, UPSTREAM_CLOSED);
	upstream_close_conn(u);
	u->pending_closes++;
	uv_timer_stop(&u->timer);
	uv_close((uv_handle_t *)&u->timer, upstream_timer_on_close);
}

static void upstream_set_keepalive(struct proxy_upstream *u, uint64_t interval_ms, int count)
{
	u->keepalive_interval_ms = interval_ms;
	if (u->keepalive_interval_ms && u->keepalive_interval_ms < UPSTREAM_KEEPALIVE_MIN_MS)
		u->keepalive_interval_ms = UPSTREAM_KEEPALIVE_MIN_MS;
	u->keepalive_count = count > 0 ? count : 1;
}

void proxy_upstream_adopt(struct proxy_upstream *u, uint64_t session_id,
    const struct proxy_upstream_events *events, void *data, uint64_t keepalive_interval_ms,
    int keepalive_count)
{
	log_debug("session=%llu upstream %s:%d: made ahead as session=%llu, taken",
	    (unsigned long long)session_id, u->host, u->port,
	    (unsigned long long)u->session_id);
	u->session_id = session_id;
	u->events = *events;
	u->data = data;
	upstream_set_keepalive(u, keepalive_interval_ms, keepalive_count);
	if (u->state == UPSTREAM_READY) {
		uv_timer_stop(&u->timer);
		upstream_set_events(u, UV_READABLE);
		upstream_start_keepalive(u);
	}
}

bool proxy_upstream_is_ready(const struct proxy_upstream *u)
{
	return u && u->state == UPSTREAM_READY;
}

bool proxy_upstream_is_open(const struct proxy_upstream *u)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int err = 0;
	socklen_t elen = sizeof(err);

	if (!proxy_upstream_is_ready(u) || !u->conn)
		return false;
	if (getsockopt(u->conn->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err)
		return false;
	if (getsockopt(u->conn->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return false;
	return ti.tcpi_state == TCP_ESTABLISHED;
}

LIBSSH2_SESSION *proxy_upstream_session(const struct proxy_upstream *u)
{
	return u->ssh;
}

bool proxy_upstream_may_call(const struct proxy_upstream *u, const void *op)
{
	return u->state == UPSTREAM_READY && (!u->blocked_op || u->blocked_op == op);
}

int proxy_upstream_after(struct proxy_upstream *u, const void *op, int rc)
{
	if (rc == LIBSSH2_ERROR_EAGAIN &&
	    (libssh2_session_block_directions(u->ssh) & LIBSSH2_SESSION_BLOCK_OUTBOUND))
		u->blocked_op = op;
	else if (u->blocked_op == op)
		u->blocked_op = NULL;
	if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN && u->state == UPSTREAM_READY &&
	    (rc == LIBSSH2_ERROR_SOCKET_SEND || rc == LIBSSH2_ERROR_SOCKET_RECV ||
	        rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_DECRYPT ||
	        rc == LIBSSH2_ERROR_KEX_FAILURE || rc == LIBSSH2_ERROR_TIMEOUT)) {
		/* The transport is gone for every channel, not just this one. */
		upstream_fail(u, "connection to builder %s:%d lost: %s", u->host, u->port,
		    proxy_upstream_error(u));
	}
	return rc;
}

bool proxy_upstream_claim_open(struct proxy_upstream *u, const void *owner)
{
	if (u->open_owner && u->open_owner != owner)
		return false;
	u->open_owner = owner;
	return true;
}

void proxy_upstream_release_open(struct proxy_upstream *u, const void *owner)
{
	if (u->open_owner == owner)
		u->open_owner = NULL;
}

void proxy_upstream_update_poll(struct proxy_upstream *u, bool want_read)
{
	int events = 0;

	if (u->state != UPSTREAM_READY)
		return;
	if (want_read)
		events |= UV_READABLE;
	else
		u->heard = uv_now(u->loop); /* silence while nobody listens is no sign */
	if (u->blocked_op &&
	    (libssh2_session_block_directions(u->ssh) & LIBSSH2_SESSION_BLOCK_OUTBOUND))
		events |= UV_WRITABLE;
	upstream_set_events(u, events);
}
