#include "proxy_session.h"

#include <fcntl.h>
#include <libssh/callbacks.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "proxy_bridge.h"
#include "proxy_builder.h"
#include "proxy_keys.h"
#include "proxy_upstream.h"

#define SESSION_MAX_CHANNELS 32
/* Hex digits of the client identity (128 bits of the key's SHA-256). */
#define PROXY_SESSION_IDENTITY_LEN 32
/* libssh reads 4 KiB per poll; this many polls per wakeup before the
 * channels are pumped, so reading the client never outruns the bridge. */
#define SESSION_POLLS_PER_RUN 32
#define SESSION_MAX_ROUNDS 32

/* Requests refused without a word to the client are logged once a session. */
#define SESSION_REFUSED_ENV 1u
#define SESSION_REFUSED_FORWARD 2u
#define SESSION_REFUSED_X11 4u
#define SESSION_REFUSED_AGENT 8u
#define SESSION_REFUSED_GLOBAL 16u
#define SESSION_REFUSED_OTHER 32u

enum session_state {
	SESSION_KEX,
	SESSION_AUTH,
	SESSION_READY,
	SESSION_WAIT_BUILDER,
	SESSION_CONNECTING,
	SESSION_BRIDGING,
	SESSION_FAILED,
	SESSION_CLOSING,
};

static const char *const session_state_names[] = {
	[SESSION_KEX] = "KEX",
	[SESSION_AUTH] = "AUTH",
	[SESSION_READY] = "READY",
	[SESSION_WAIT_BUILDER] = "WAIT_BUILDER",
	[SESSION_CONNECTING] = "CONNECTING",
	[SESSION_BRIDGING] = "BRIDGING",
	[SESSION_FAILED] = "FAILED",
	[SESSION_CLOSING] = "CLOSING",
};

struct proxy_session {
	const struct proxy_session_env *env;
	uint64_t id;
	char peer[64];
	enum session_state state;
	ssh_session ssh;
	ssh_event event;
	struct ssh_server_callbacks_struct server_cb;
	/* The client socket as the uv_poll sees it: a duplicate of libssh's
	 * descriptor, owned by the session and closed only after the poll
	 * handle is closed. libssh closes its own descriptor by itself when a
	 * write fails (ssh_socket_nonblocking_flush); the poll must never be
	 * left on, or restarted on, a closed descriptor (epoll_ctl EBADF is an
	 * abort() in libuv, and a reused number would be someone else's). */
	int poll_fd;
	uv_poll_t poll;
	uv_timer_t timer;
	uv_idle_t kick;
	int pending_closes;
	int poll_events;
	bool running, again;
	/* authentication */
	bool authenticated;
	int auth_failures;
	int auth_nones;       /* "none" attempts: the first is free */
	char *limit_refusal;  /* admitted by the key but over a session limit */
	struct ssh_channel_callbacks_struct guard_cb; /* env/subsystem, before the bridge's */
	unsigned refused_logged; /* SESSION_REFUSED_* bits: one log line each */
	uint64_t wait_started; /* loop time the builder was asked for */
	char *user;
	char *key_comment;
	/* Hex SHA-256 prefix of the client's public key: which builders this
	 * session may be served by (never the key itself). */
	char identity[PROXY_SESSION_IDENTITY_LEN + 1];
	/* channels */
	struct proxy_bridge *bridges[SESSION_MAX_CHANNELS];
	int n_bridges;
	unsigned channel_seq;
	/* builder */
	bool builder_acquired, builder_released;
	char *builder_status;
	struct proxy_upstream *upstream;
	char *upstream_failure;
	char *failure;
	bool bridged;
	/* time */
	uint64_t created_at, state_since, last_activity;
};

static void session_run(struct proxy_session *s);
static void session_on_client_poll(uv_poll_t *h, int status, int events);

static void session_arm_timer(struct proxy_session *s);

/* Every state has its own deadline: the timer follows each transition. */
static void session_set_state(struct proxy_session *s, enum session_state state)
{
	if (s->state == state)
		return;
	log_debug("session=%llu %s => %s", (unsigned long long)s->id,
	    session_state_names[s->state], session_state_names[state]);
	s->state = state;
	s->state_since = uv_now(s->env->loop);
	if (state == SESSION_READY || state == SESSION_BRIDGING)
		s->last_activity = s->state_since;
	if (state != SESSION_CLOSING)
		session_arm_timer(s);
}

uint64_t proxy_session_id(const struct proxy_session *s)
{
	return s->id;
}

bool proxy_session_is_closing(const struct proxy_session *s)
{
	return s->state == SESSION_CLOSING;
}

bool proxy_session_is_idle(const struct proxy_session *s)
{
	for (int i = 0; i < s->n_bridges; i++) {
		if (proxy_bridge_wants_builder(s->bridges[i]) || proxy_bridge_ran(s->bridges[i]))
			return false;
	}
	return true;
}

static void session_wake(void *data)
{
	struct proxy_session *s = data;

	s->again = true;
}

/* ---- teardown ---- */

static void session_on_handle_closed(uv_handle_t *h)
{
	struct proxy_session *s = h->data;
	struct proxy_session_stats stats;

	if (--s->pending_closes > 0)
		return;
	stats.authenticated = s->authenticated;
	stats.bridged = s->bridged;
	stats.failed = s->failure != NULL;
	if (s->event) {
		ssh_event_remove_session(s->event, s->ssh);
		ssh_event_free(s->event);
	}
	/* Sends SSH_MSG_DISCONNECT if it can, and closes the socket. */
	ssh_disconnect(s->ssh);
	ssh_free(s->ssh);
	/* The poll handle is closed: its descriptor may go now. */
	if (s->poll_fd >= 0)
		close(s->poll_fd);
	s->env->on_closed(s->env->data, s->id, &stats);
	free(s->user);
	free(s->key_comment);
	free(s->limit_refusal);
	free(s->builder_status);
	free(s->upstream_failure);
	free(s->failure);
	free(s);
}

static void session_release_builder(struct proxy_session *s, bool ok, const char *message)
{
	if (!s->builder_acquired || s->builder_released)
		return;
	s->builder_released = true;
	proxy_builder_release(s->env->builder, s->id, ok, message);
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* What the request's status says when the session ends without a builder
 * failure: words for the user, not libssh's. Heap string or NULL. */
static char *session_outcome(const struct proxy_session *s, const char *reason)
{
	const char *why = strstr(reason, "Socket error: ");

	if (s->failure)
		return strdup(s->failure);
	if (starts_with(reason, "client disconnected") ||
	    starts_with(reason, "client connection lost")) {
		if (why && !strstr(why, "disconnected"))
			return str_printf("%s; the connection to the Nix client was lost: %s",
			    s->bridged ? "session ended" : "the Nix client left before its builder "
			    "was ready", why + strlen("Socket error: "));
		return strdup(s->bridged ? "session ended: the Nix client closed it" :
		    "the Nix client left before its builder was ready");
	}
	return str_printf("session ended: %s", reason);
}

/* The session ends under channels still in use (shutdown, idle timeout):
 * each is told why on its stderr, with exit status 1, as far as the socket
 * takes it at once. */
static void session_tell_channels(struct proxy_session *s, const char *why)
{
	bool told = false;

	if (ssh_get_fd(s->ssh) == SSH_INVALID_SOCKET ||
	    (ssh_get_status(s->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR)))
		return;
	for (int i = 0; i < s->n_bridges; i++) {
		struct proxy_bridge *b = s->bridges[i];

		if (proxy_bridge_is_done(b) ||
		    (!proxy_bridge_wants_builder(b) && !proxy_bridge_ran(b)))
			continue;
		proxy_bridge_fail(b, why, 1);
		proxy_bridge_run(b, NULL);
		told = true;
	}
	/* A few hundred bytes into a socket that is normally writable. */
	if (told)
		ssh_blocking_flush(s->ssh, 100);
}

void proxy_session_close(struct proxy_session *s, const char *reason)
{
	uint64_t secs;
	char *outcome;

	if (s->state == SESSION_CLOSING)
		return;
	secs = (uv_now(s->env->loop) - s->created_at) / 1000;
	log_info("session=%llu closed after %llus (%s): %s", (unsigned long long)s->id,
	    (unsigned long long)secs, session_state_names[s->state], reason);
	if (starts_with(reason, "proxy ")) {
		char *why = str_printf("the nrbc proxy is shutting down (%s): retry the build",
		    reason);
		session_tell_channels(s, why ? why : reason);
		free(why);
	} else if (starts_with(reason, "idle for")) {
		session_tell_channels(s, reason);
	}
	outcome = session_outcome(s, reason);
	session_release_builder(s, !s->failure && s->bridged, outcome ? outcome : reason);
	free(outcome);
	session_set_state(s, SESSION_CLOSING);
	for (int i = 0; i < s->n_bridges; i++)
		proxy_bridge_destroy(s->bridges[i], false);
	s->n_bridges = 0;
	proxy_upstream_destroy(s->upstream);
	s->upstream = NULL;
	uv_poll_stop(&s->poll);
	uv_timer_stop(&s->timer);
	uv_idle_stop(&s->kick);
	s->pending_closes = 3;
	uv_close((uv_handle_t *)&s->poll, session_on_handle_closed);
	uv_close((uv_handle_t *)&s->timer, session_on_handle_closed);
	uv_close((uv_handle_t *)&s->kick, session_on_handle_closed);
}

static void session_closef(struct proxy_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void session_closef(struct proxy_session *s, const char *fmt, ...)
{
	struct buf b;
	va_list ap;

	buf_init(&b, 2048);
	va_start(ap, fmt);
	if (buf_vprintf(&b, fmt, ap) < 0)
		buf_append_str(&b, "closed");
	va_end(ap);
	proxy_session_close(s, b.data ? b.data : "closed");
	buf_finish(&b);
}

/* ---- failure of the builder: every waiting or running channel is told ---- */

static void session_fail(struct proxy_session *s, const char *message)
{
	if (s->state == SESSION_CLOSING || s->state == SESSION_FAILED)
		return;
	free(s->failure);
	s->failure = strdup(message);
	for (int i = 0; i < s->n_bridges; i++) {
		if (proxy_bridge_wants_builder(s->bridges[i]) || proxy_bridge_ran(s->bridges[i]))
			proxy_bridge_fail(s->bridges[i], message, 1);
	}
	if (s->upstream) {
		proxy_upstream_destroy(s->upstream);
		s->upstream = NULL;
	}
	session_release_builder(s, false, message);
	session_set_state(s, SESSION_FAILED);
	s->again = true;
}

/* ---- timers ---- */

static uint64_t session_deadline(const struct proxy_session *s)
{
	const struct proxy_session_env *e = s->env;

	switch (s->state) {
	case SESSION_KEX:
	case SESSION_AUTH:
		return s->created_at + e->login_grace_ms;
	case SESSION_WAIT_BUILDER:
	case SESSION_CONNECTING:
		return e->builder_timeout_ms ? s->state_since + e->builder_timeout_ms : 0;
	case SESSION_READY:
	case SESSION_BRIDGING:
	case SESSION_FAILED:
		return e->idle_timeout_ms ? s->last_activity + e->idle_timeout_ms : 0;
	case SESSION_CLOSING:
		break;
	}
	return 0;
}

static void session_on_timer(uv_timer_t *t);

static void session_arm_timer(struct proxy_session *s)
{
	uint64_t deadline = session_deadline(s), now = uv_now(s->env->loop);

	if (!deadline) {
		uv_timer_stop(&s->timer);
		return;
	}
	uv_timer_start(&s->timer, session_on_timer, deadline > now ? deadline - now : 0, 0);
}

static void session_on_timer(uv_timer_t *t)
{
	struct proxy_session *s = t->data;
	uint64_t deadline = session_deadline(s);
	char *msg;

	if (!deadline || uv_now(s->env->loop) < deadline) {
		session_arm_timer(s);
		return;
	}
	switch (s->state) {
	case SESSION_KEX:
	case SESSION_AUTH:
		session_closef(s, "not authenticated within %llus",
		    (unsigned long long)s->env->login_grace_ms / 1000);
		return;
	case SESSION_WAIT_BUILDER:
	case SESSION_CONNECTING:
		msg = str_printf("gave up waiting for a builder after %llus%s%s%s",
		    (unsigned long long)s->env->builder_timeout_ms / 1000,
		    s->builder_status ? " (last status: " : "",
		    s->builder_status ? s->builder_status : "", s->builder_status ? ")" : "");
		session_fail(s, msg ? msg : "gave up waiting for a builder");
		free(msg);
		session_run(s);
		return;
	default:
		session_closef(s, "idle for %llus: closed (--idle-timeout)",
		    (unsigned long long)s->env->idle_timeout_ms / 1000);
		return;
	}
}

/* ---- libssh server callbacks ---- */

/* The first bytes of the key's SHA-256 in hex: stable for a key, says
 * nothing about it, short enough for a label value. */
static int session_identity_of(ssh_key pubkey, char out[PROXY_SESSION_IDENTITY_LEN + 1])
{
	unsigned char *hash = NULL;
	size_t hlen = 0;

	if (ssh_get_publickey_hash(pubkey, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) < 0 ||
	    hlen * 2 < PROXY_SESSION_IDENTITY_LEN) {
		ssh_clean_pubkey_hash(&hash);
		return -1;
	}
	for (int i = 0; i < PROXY_SESSION_IDENTITY_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", hash[i]);
	out[PROXY_SESSION_IDENTITY_LEN] = '\0';
	ssh_clean_pubkey_hash(&hash);
	return 0;
}

/* Every authentication attempt, of every method, goes through here: counted
 * (toward --max-auth-tries and in nrbc_proxy_auth_attempts_total) and logged
 * with the method, the user name (escaped) and, for keys, the fingerprint. */
static void session_auth_count(struct proxy_session *s, const char *method, const char *result)
{
	char labels[96];

	if (!s->env->metrics)
		return;
	snprintf(labels, sizeof(labels), "method=\"%s\",result=\"%s\"", method, result);
	metric_add(metrics_counter(s->env->metrics, "nrbc_proxy_auth_attempts_total",
	    "Client authentication attempts, by method and result.", labels), 1);
}

static void session_auth_failed(struct proxy_session *s, const char *method, const char *user,
    const char *fingerprint, const char *why)
{
	char u[LOG_ESCAPE_MAX];

	s->auth_failures++;
	metric_add(s->env->auth_failures, 1);
	session_auth_count(s, method, "failure");
	log_info("session=%llu from %s: %s authentication refused for user \"%s\"%s%s: %s "
	    "(%d/%d)", (unsigned long long)s->id, s->peer, method,
	    log_escape(u, 64, user, (size_t)-1), fingerprint ? " key " : "",
	    fingerprint ? fingerprint : "", why, s->auth_failures, s->env->max_auth_tries);
	s->again = true;
}

static bool session_user_ok(const struct proxy_session *s, const char *user)
{
	return !s->env->client_user || !*s->env->client_user ||
	    strcmp(user, s->env->client_user) == 0;
}

/* "SHA256:..." (heap, free with ssh_string_free_char) or NULL. */
static char *session_key_fingerprint(ssh_key key)
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp;

	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) < 0)
		return NULL;
	fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	return fp;
}

static int session_on_auth_pubkey(ssh_session ssh, const char *user, struct ssh_key_struct *pubkey,
    char signature_state, void *userdata)
{
	struct proxy_session *s = userdata;
	const char *comment = NULL;
	int idx = proxy_keys_find_client(s->env->keys, pubkey, &comment);
	char *fp, *refusal = NULL;
	char u[LOG_ESCAPE_MAX], c[LOG_ESCAPE_MAX];

	if (s->authenticated || s->auth_failures >= s->env->max_auth_tries)
		return SSH_AUTH_DENIED;
	fp = session_key_fingerprint(pubkey);
	if (!session_user_ok(s, user)) {
		char why[160];
		snprintf(why, sizeof(why), "not the user name clients log in as (\"%.64s\")",
		    s->env->client_user);
		session_auth_failed(s, "publickey", user, fp, why);
		goto denied;
	}
	if (idx < 0 || (signature_state != SSH_PUBLICKEY_STATE_NONE &&
	    signature_state != SSH_PUBLICKEY_STATE_VALID)) {
		session_auth_failed(s, "publickey", user, fp,
		    idx >= 0 ? "bad signature" : "key not in the authorized keys");
		goto denied;
	}
	if (signature_state == SSH_PUBLICKEY_STATE_NONE) {
		ssh_string_free_char(fp);
		return SSH_AUTH_SUCCESS; /* "would this key do?": yes */
	}
	if (session_identity_of(pubkey, s->identity) < 0) {
		log_error("session=%llu cannot hash the client key", (unsigned long long)s->id);
		goto denied;
	}
	if (s->env->on_authenticated &&
	    s->env->on_authenticated(s->env->data, s->id, idx, &refusal) < 0) {
		/* Authenticated, but it may not have a builder: every command it
		 * runs gets the reason (stderr, exit 1). */
		s->limit_refusal = refusal ? refusal : strdup("the proxy is at a session limit");
		session_auth_count(s, "publickey", "limited");
	} else {
		session_auth_count(s, "publickey", "success");
	}
	s->authenticated = true;
	s->user = strdup(user);
	s->key_comment = strdup(comment ? comment : "");
	log_info("session=%llu from %s: authenticated user \"%s\" with key %s \"%s\"%s%s",
	    (unsigned long long)s->id, s->peer, log_escape(u, 64, user, (size_t)-1),
	    fp ? fp : "?", log_escape(c, 100, comment ? comment : "", (size_t)-1),
	    s->limit_refusal ? "; refused: " : "", s->limit_refusal ? s->limit_refusal : "");
	ssh_string_free_char(fp);
	s->again = true;
	return SSH_AUTH_SUCCESS;
denied:
	ssh_string_free_char(fp);
	return SSH_AUTH_DENIED;
}

static int session_on_auth_password(ssh_session ssh, const char *user, const char *password,
    void *userdata)
{
	struct proxy_session *s = userdata;

	if (!s->authenticated && s->auth_failures < s->env->max_auth_tries)
		session_auth_failed(s, "password", user, NULL, "only keys are accepted");
	return SSH_AUTH_DENIED;
}

static int session_on_auth_none(ssh_session ssh, const char *user, void *userdata)
{
	struct proxy_session *s = userdata;
	char u[LOG_ESCAPE_MAX];

	if (s->authenticated || s->auth_failures >= s->env->max_auth_tries)
		return SSH_AUTH_DENIED;
	/* Clients start with "none" to learn the methods: the first is free. */
	if (s->auth_nones++ == 0) {
		session_auth_count(s, "none", "failure");
		log_debug("session=%llu none authentication for user \"%s\": denied",
		    (unsigned long long)s->id, log_escape(u, 64, user, (size_t)-1));
		return SSH_AUTH_DENIED;
	}
	session_auth_failed(s, "none", user, NULL, "only keys are accepted");
	return SSH_AUTH_DENIED;
}

static void session_log_refused_once(struct proxy_session *s, unsigned bit, const char *what)
{
	if (s->refused_logged & bit)
		return;
	s->refused_logged |= bit;
	log_info("session=%llu refused %s (logged once a session)", (unsigned long long)s->id,
	    what);
}

/* Whatever no other callback took: other authentication methods (counted
 * like the rest), forwarding, X11, agent, global requests. 1: libssh sends
 * the default refusal. */
static int session_on_message(ssh_session ssh, ssh_message msg, void *userdata)
{
	struct proxy_session *s = userdata;
	char what[LOG_ESCAPE_MAX + 64], d[LOG_ESCAPE_MAX];
	const char *method;

	switch (ssh_message_type(msg)) {
	case SSH_REQUEST_AUTH:
		if (s->authenticated || s->auth_failures >= s->env->max_auth_tries)
			return 1;
		switch (ssh_message_subtype(msg)) {
		case SSH_AUTH_METHOD_INTERACTIVE: method = "keyboard-interactive"; break;
		case SSH_AUTH_METHOD_PASSWORD: method = "password"; break;
		case SSH_AUTH_METHOD_HOSTBASED: method = "hostbased"; break;
		case SSH_AUTH_METHOD_GSSAPI_MIC: method = "gssapi-with-mic"; break;
		default: method = "unknown"; break;
		}
		session_auth_failed(s, method, ssh_message_auth_user(msg), NULL,
		    "only keys are accepted");
		return 1;
	case SSH_REQUEST_CHANNEL_OPEN:
		switch (ssh_message_subtype(msg)) {
		case SSH_CHANNEL_DIRECT_TCPIP:
			snprintf(what, sizeof(what), "port forwarding (to \"%s\" port %d)",
			    log_escape(d, 100, ssh_message_channel_request_open_destination(msg),
			    (size_t)-1), ssh_message_channel_request_open_destination_port(msg));
			session_log_refused_once(s, SESSION_REFUSED_FORWARD, what);
			break;
		case SSH_CHANNEL_X11:
			session_log_refused_once(s, SESSION_REFUSED_X11, "an X11 channel");
			break;
		case SSH_CHANNEL_AUTH_AGENT:
			session_log_refused_once(s, SESSION_REFUSED_AGENT, "an agent channel");
			break;
		default:
			session_log_refused_once(s, SESSION_REFUSED_FORWARD, "a forwarding channel");
			break;
		}
		return 1;
	case SSH_REQUEST_CHANNEL:
		if (ssh_message_subtype(msg) == SSH_CHANNEL_REQUEST_X11)
			session_log_refused_once(s, SESSION_REFUSED_X11, "X11 forwarding");
		else if (ssh_message_subtype(msg) != SSH_CHANNEL_REQUEST_WINDOW_CHANGE)
			session_log_refused_once(s, SESSION_REFUSED_OTHER, "a channel request");
		return 1;
	case SSH_REQUEST_GLOBAL:
		if (ssh_message_subtype(msg) == SSH_GLOBAL_REQUEST_TCPIP_FORWARD)
			session_log_refused_once(s, SESSION_REFUSED_GLOBAL,
			    "remote port forwarding (tcpip-forward)");
		return 1;
	default:
		return 1;
	}
}

/* Before the bridge's callbacks on every channel: env is refused (the
 * builder gets a fixed environment), subsystems are refused here with the
 * name escaped. */
static int session_on_env(ssh_session ssh, ssh_channel channel, const char *name,
    const char *value, void *userdata)
{
	struct proxy_session *s = userdata;
	char n[LOG_ESCAPE_MAX], what[LOG_ESCAPE_MAX + 64];

	snprintf(what, sizeof(what), "env request(s) (first: \"%s\"); env is not passed on",
	    log_escape(n, 100, name, (size_t)-1));
	session_log_refused_once(s, SESSION_REFUSED_ENV, what);
	return 1;
}

/* libssh swallows agent requests (no reply is wanted); this only logs. */
static void session_on_agent_req(ssh_session ssh, ssh_channel channel, void *userdata)
{
	session_log_refused_once(userdata, SESSION_REFUSED_AGENT, "agent forwarding");
}

static int session_on_subsystem(ssh_session ssh, ssh_channel channel, const char *subsystem,
    void *userdata)
{
	struct proxy_session *s = userdata;
	char n[LOG_ESCAPE_MAX];
	char *msg;

	for (int i = 0; i < s->n_bridges; i++) {
		if (proxy_bridge_channel(s->bridges[i]) != channel)
			continue;
		/* A channel already running (or about to run) a command keeps it:
		 * the late request is just refused. */
		if (proxy_bridge_wants_builder(s->bridges[i]) || proxy_bridge_ran(s->bridges[i]))
			return 1;
		log_escape(n, 100, subsystem, (size_t)-1);
		log_info("session=%llu refused subsystem \"%s\"", (unsigned long long)s->id, n);
		msg = str_printf("subsystem \"%s\" is not available: this proxy only runs the "
		    "commands Nix uses for remote builds", n);
		proxy_bridge_fail(s->bridges[i], msg ? msg : "subsystems are not available", 1);
		free(msg);
		s->again = true;
		return 0;
	}
	return 1;
}

static int session_on_service_request(ssh_session ssh, const char *service, void *userdata)
{
	return strcmp(service, "ssh-userauth") == 0 ? 0 : -1;
}

static ssh_channel session_on_channel_open(ssh_session ssh, void *userdata)
{
	struct proxy_session *s = userdata;
	struct proxy_bridge_env env;
	struct proxy_bridge *b;

	if (!s->authenticated || s->state == SESSION_CLOSING ||
	    s->n_bridges == SESSION_MAX_CHANNELS) {
		log_info("session=%llu refused a channel (%d open)", (unsigned long long)s->id,
		    s->n_bridges);
		return NULL;
	}
	env.policy = s->env->policy;
	env.session_id = s->id;
	env.channel_no = s->channel_seq++;
	env.wake = session_wake;
	env.data = s;
	env.bytes_up = s->env->bytes_up;
	env.bytes_down = s->env->bytes_down;
	b = proxy_bridge_create(ssh, &env);
	if (!b)
		return NULL;
	/* Prepended: libssh asks the first structure that has the callback. */
	ssh_set_channel_callbacks(proxy_bridge_channel(b), &s->guard_cb);
	s->bridges[s->n_bridges++] = b;
	s->again = true;
	return proxy_bridge_channel(b);
}

/* ---- builder connection events ---- */

static void session_upstream_ready(void *data)
{
	struct proxy_session *s = data;

	if (s->state == SESSION_CONNECTING) {
		log_info("session=%llu connected to the builder", (unsigned long long)s->id);
		session_set_state(s, SESSION_BRIDGING);
	}
	session_run(s);
}

static void session_upstream_failed(void *data, const char *message)
{
	struct proxy_session *s = data;

	/* Handled by the run loop: this may come from inside a bridge's call. */
	if (!s->upstream_failure)
		s->upstream_failure = strdup(message);
	session_run(s);
}

static void session_upstream_io(void *data)
{
	session_run(data);
}

static const struct proxy_upstream_events session_upstream_events = {
	.ready = session_upstream_ready,
	.failed = session_upstream_failed,
	.io = session_upstream_io,
};

void proxy_session_builder_progress(struct proxy_session *s, const char *message)
{
	if (s->state != SESSION_WAIT_BUILDER)
		return;
	if (!s->builder_status || strcmp(s->builder_status, message) != 0) {
		free(s->builder_status);
		s->builder_status = strdup(message);
		log_info("session=%llu builder: %s", (unsigned long long)s->id, message);
	}
	for (int i = 0; i < s->n_bridges; i++)
		proxy_bridge_notify(s->bridges[i], message);
	session_run(s);
}

void proxy_session_builder_ready(struct proxy_session *s, const char *host, int port)
{
	if (s->state != SESSION_WAIT_BUILDER) {
		log_debug("session=%llu builder ready in state %s: ignored",
		    (unsigned long long)s->id, session_state_names[s->state]);
		return;
	}
	metric_observe(s->env->builder_wait,
	    (double)(uv_now(s->env->loop) - s->wait_started) / 1000.0);
	log_info("session=%llu builder ready at %s:%d", (unsigned long long)s->id, host, port);
	s->upstream = proxy_upstream_create(s->env->loop, s->id, host, port, s->env->remote_user,
	    s->env->keys, &session_upstream_events, s);
	if (!s->upstream) {
		session_fail(s, "cannot connect to the builder (see the proxy's log)");
		session_run(s);
		return;
	}
	session_set_state(s, SESSION_CONNECTING);
}

void proxy_session_builder_failed(struct proxy_session *s, const char *message)
{
	/* While bridging too: the builder's pod was deleted or failed, the
	 * commands on it cannot finish; the user hears why from us rather than
	 * from a connection that breaks. */
	if (s->state != SESSION_WAIT_BUILDER && s->state != SESSION_CONNECTING &&
	    s->state != SESSION_BRIDGING)
		return;
	session_fail(s, message);
	session_run(s);
}

/* ---- the run loop ---- */

static void session_step_channels(struct proxy_session *s)
{
	struct proxy_upstream *u = proxy_upstream_is_ready(s->upstream) ? s->upstream : NULL;
	bool wants_builder = false;
	size_t moved = 0;
	int kept = 0;

	if (s->upstream_failure) {
		char *msg = s->upstream_failure;
		s->upstream_failure = NULL;
		session_fail(s, msg);
		free(msg);
		u = NULL;
	}
	for (int i = 0; i < s->n_bridges; i++) {
		if (s->state == SESSION_FAILED && proxy_bridge_wants_builder(s->bridges[i]))
			proxy_bridge_fail(s->bridges[i], s->failure, 1);
		moved += proxy_bridge_run(s->bridges[i], u);
		if (proxy_bridge_wants_builder(s->bridges[i]))
			wants_builder = true;
		if (proxy_bridge_ran(s->bridges[i]))
			s->bridged = true;
	}
	/* Done channels go; none was freed while the loop above ran. */
	for (int i = 0; i < s->n_bridges; i++) {
		if (proxy_bridge_is_done(s->bridges[i]))
			proxy_bridge_destroy(s->bridges[i], u != NULL);
		else
			s->bridges[kept++] = s->bridges[i];
	}
	s->n_bridges = kept;
	if (moved)
		s->last_activity = uv_now(s->env->loop);
	if (s->state == SESSION_READY && wants_builder && s->limit_refusal) {
		session_fail(s, s->limit_refusal);
		return;
	}
	if (s->state == SESSION_READY && wants_builder) {
		s->builder_acquired = true;
		s->wait_started = uv_now(s->env->loop);
		session_set_state(s, SESSION_WAIT_BUILDER);
		if (proxy_builder_acquire(s->env->builder, s->id, s->identity) < 0) {
			s->builder_released = true; /* no event will follow */
			session_fail(s, "cannot request a builder (see the proxy's log)");
		}
	}
}

static void session_step(struct proxy_session *s)
{
	int rc;

	if (s->auth_failures >= s->env->max_auth_tries) {
		session_closef(s, "too many authentication failures (%d)", s->auth_failures);
		return;
	}
	switch (s->state) {
	case SESSION_KEX:
		/* KEX and authentication can both complete within one batch of
		 * packets; libssh then reports neither as "KEX done". */
		rc = s->authenticated ? SSH_OK : ssh_handle_key_exchange(s->ssh);
		if (rc == SSH_AGAIN)
			return;
		if (rc != SSH_OK) {
			session_closef(s, "key exchange failed: %s", ssh_get_error(s->ssh));
			return;
		}
		session_set_state(s, SESSION_AUTH);
		/* fall through */
	case SESSION_AUTH:
		if (!s->authenticated)
			return;
		session_set_state(s, SESSION_READY);
		/* fall through */
	case SESSION_READY:
	case SESSION_WAIT_BUILDER:
	case SESSION_CONNECTING:
	case SESSION_BRIDGING:
	case SESSION_FAILED:
		session_step_channels(s);
		return;
	case SESSION_CLOSING:
		return;
	}
}

/* libssh closed its socket (a failed write) or gave up on the connection:
 * the session cannot go on. Says why, once. */
static bool session_client_lost(struct proxy_session *s)
{
	const char *why;

	if (s->state == SESSION_CLOSING)
		return true;
	if (ssh_get_fd(s->ssh) != SSH_INVALID_SOCKET &&
	    !(ssh_get_status(s->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR)))
		return false;
	why = ssh_get_error(s->ssh);
	session_closef(s, "client connection lost%s%s", why && *why ? ": " : "", why ? why : "");
	return true;
}

static void session_update_polls(struct proxy_session *s)
{
	int events = UV_READABLE;
	bool want_read = false;

	/* Never (re)start the poll for a client libssh has already let go. */
	if (session_client_lost(s))
		return;

	/* Writable only while libssh holds unsent bytes: its poll flags ask for
	 * POLLOUT after every send, which would cost a wakeup per write. */
	if (ssh_get_status(s->ssh) & SSH_WRITE_PENDING)
		events |= UV_WRITABLE;
	if (events != s->poll_events) {
		s->poll_events = events;
		uv_poll_start(&s->poll, events, session_on_client_poll);
	}
	if (s->upstream) {
		for (int i = 0; i < s->n_bridges && !want_read; i++)
			want_read = proxy_bridge_wants_upstream_read(s->bridges[i]);
		proxy_upstream_update_poll(s->upstream, want_read);
	}
}

static void session_on_kick(uv_idle_t *h)
{
	struct proxy_session *s = h->data;

	uv_idle_stop(&s->kick);
	session_run(s);
}

static void session_run(struct proxy_session *s)
{
	int rounds = 0;

	if (s->state == SESSION_CLOSING)
		return;
	if (s->running) {
		s->again = true;
		return;
	}
	s->running = true;
	do {
		s->again = false;
		session_step(s);
	} while (s->again && s->state != SESSION_CLOSING && ++rounds < SESSION_MAX_ROUNDS);
	s->running = false;
	if (s->state == SESSION_CLOSING || session_client_lost(s))
		return;
	/* Work left over (a long burst): continue on the next loop turn
	 * rather than starve other sessions. */
	if (s->again)
		uv_idle_start(&s->kick, session_on_kick);
	session_update_polls(s);
}

static void session_client_io(struct proxy_session *s)
{
	int rc = SSH_OK;

	for (int i = 0; i < SESSION_POLLS_PER_RUN && rc == SSH_OK; i++) {
		rc = ssh_event_dopoll(s->event, 0);
		if (s->auth_failures >= s->env->max_auth_tries)
			break;
	}
	if (s->auth_failures >= s->env->max_auth_tries) {
		session_closef(s, "too many authentication failures (%d)", s->auth_failures);
		return;
	}
	if (rc == SSH_ERROR || (ssh_get_status(s->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR))) {
		const char *why = ssh_get_error(s->ssh);
		session_closef(s, "client disconnected%s%s", why && *why ? ": " : "",
		    why ? why : "");
	}
}

static void session_on_client_poll(uv_poll_t *h, int status, int events)
{
	struct proxy_session *s = h->data;

	if (s->state == SESSION_CLOSING)
		return;
	if (status < 0 && status != UV_EBADF) {
		/* Let libssh read the error or EOF itself, for its message. */
		log_debug("session=%llu client socket: %s", (unsigned long long)s->id,
		    uv_strerror(status));
	}
	session_client_io(s);
	if (s->state == SESSION_CLOSING)
		return;
	session_run(s);
}

struct proxy_session *proxy_session_create(const struct proxy_session_env *env, uint64_t id,
    int fd, const char *peer)
{
	struct proxy_session *s = calloc(1, sizeof(*s));
	int rc;

	if (!s) {
		close(fd);
		return NULL;
	}
	s->env = env;
	s->id = id;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	s->created_at = s->state_since = s->last_activity = uv_now(env->loop);
	s->ssh = ssh_new();
	if (!s->ssh) {
		close(fd);
		free(s);
		return NULL;
	}
	if (ssh_bind_accept_fd(env->bind, s->ssh, fd) != SSH_OK) {
		log_error("session=%llu cannot set up the SSH session: %s", (unsigned long long)id,
		    ssh_get_error(env->bind));
		close(fd);
		ssh_free(s->ssh);
		free(s);
		return NULL;
	}
	/* From here libssh owns fd. */
	s->server_cb.userdata = s;
	s->server_cb.auth_pubkey_function = session_on_auth_pubkey;
	s->server_cb.auth_password_function = session_on_auth_password;
	s->server_cb.auth_none_function = session_on_auth_none;
	s->server_cb.service_request_function = session_on_service_request;
	s->server_cb.channel_open_request_session_function = session_on_channel_open;
	ssh_callbacks_init(&s->server_cb);
	ssh_set_server_callbacks(s->ssh, &s->server_cb);
	ssh_set_message_callback(s->ssh, session_on_message, s);
	s->guard_cb.userdata = s;
	s->guard_cb.channel_env_request_function = session_on_env;
	s->guard_cb.channel_subsystem_request_function = session_on_subsystem;
	s->guard_cb.channel_auth_agent_req_function = session_on_agent_req;
	ssh_callbacks_init(&s->guard_cb);
	ssh_set_auth_methods(s->ssh, SSH_AUTH_METHOD_PUBLICKEY);
	ssh_set_blocking(s->ssh, 0);
	/* The first call sends our banner and sets up libssh's poll handle;
	 * the session then moves into its own event. */
	rc = ssh_handle_key_exchange(s->ssh);
	if (rc == SSH_ERROR || !(s->event = ssh_event_new()) ||
	    ssh_event_add_session(s->event, s->ssh) != SSH_OK) {
		log_info("session=%llu from %s: cannot start: %s", (unsigned long long)id, peer,
		    ssh_get_error(s->ssh));
		if (s->event)
			ssh_event_free(s->event);
		ssh_disconnect(s->ssh);
		ssh_free(s->ssh);
		free(s);
		return NULL;
	}
	s->poll_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (s->poll_fd < 0 || uv_poll_init_socket(env->loop, &s->poll, s->poll_fd) < 0) {
		log_warn("session=%llu from %s: cannot watch the socket", (unsigned long long)id,
		    peer);
		if (s->poll_fd >= 0)
			close(s->poll_fd);
		ssh_event_remove_session(s->event, s->ssh);
		ssh_event_free(s->event);
		ssh_disconnect(s->ssh);
		ssh_free(s->ssh);
		free(s);
		return NULL;
	}
	uv_timer_init(env->loop, &s->timer);
	uv_idle_init(env->loop, &s->kick);
	s->poll.data = s->timer.data = s->kick.data = s;
	s->state = SESSION_KEX;
	log_debug("session=%llu from %s: KEX", (unsigned long long)id, peer);
	session_arm_timer(s);
	session_run(s);
	return s;
}
