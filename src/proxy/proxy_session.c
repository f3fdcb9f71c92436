#include "proxy_session.h"

#include <fcntl.h>
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
#include "proxy_linger.h"
#include "proxy_session_internal.h"
#include "proxy_spares.h"
#include "proxy_upstream.h"
#include "sockopt.h"

/* libssh reads 4 KiB per poll; this many polls per wakeup before the
 * channels are pumped, so reading the client never outruns the bridge. */
#define SESSION_POLLS_PER_RUN 32
#define SESSION_MAX_ROUNDS 32
/* Most sessions get a reused or pooled builder within milliseconds; telling
 * the user each step of that would print lines on every derivation of a
 * build. A wait's status is shown once it has lasted this long (or at once
 * if the wait fails), and every change after that as it comes. */
#define SESSION_STATUS_QUIET_MS 1000
/* Builders asked for again after one took no connection. */
#define SESSION_MAX_REACQUIRES 2
/* A session refused by a limit hears why when it runs its command, which a
 * Nix client does within milliseconds of logging in. One that runs none is
 * not kept for the idle timeout: refused sessions are not counted against
 * --max-sessions, so a key over its limit could otherwise pile them up. */
#define SESSION_LIMITED_GRACE_MS 5000
/* Once told, the client gets this long to leave by itself: closing at once
 * would make OpenSSH's own close fail ("Broken pipe", exit 255) and hide
 * the refusal's exit status 1. A Nix client leaves within milliseconds. */
#define SESSION_LIMITED_LINGER_MS 1000
/* While the shared buffer budget is full, how often a channel whose client
 * data waits in libssh looks again (nothing else would wake it). */
#define SESSION_BUDGET_RETRY_MS 20

static const char *const session_state_names[] = {
	[SESSION_KEX] = "KEX",
	[SESSION_AUTH] = "AUTH",
	[SESSION_READY] = "READY",
	[SESSION_WAIT_BUILDER] = "WAIT_BUILDER",
	[SESSION_CONNECTING] = "CONNECTING",
	[SESSION_BRIDGING] = "BRIDGING",
	[SESSION_BUILDER_LOST] = "BUILDER_LOST",
	[SESSION_FAILED] = "FAILED",
	[SESSION_CLOSING] = "CLOSING",
};

static const char *const session_hold_names[] = {
	[SESSION_HOLD_NONE] = "none",
	[SESSION_HOLD_ASKED] = "asked",
	[SESSION_HOLD_RELEASED] = "released",
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
	if (state == SESSION_WAIT_BUILDER)
		s->status_withheld = false;
	if (state != SESSION_CLOSING)
		session_arm_timer(s);
}

static void session_set_hold(struct proxy_session *s, enum session_hold hold)
{
	log_debug("session=%llu builder hold %s => %s", (unsigned long long)s->id,
	    session_hold_names[s->hold], session_hold_names[hold]);
	s->hold = hold;
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
	/* Sends SSH_MSG_DISCONNECT if it can, and closes libssh's descriptor.
	 * Not after channels were told why they end: a client that reads the
	 * disconnect with their close exits 255 on it, not with the exit status
	 * it was sent; the end of the stream tells it as much. */
	if (!s->channels_told)
		ssh_disconnect(s->ssh);
	ssh_free(s->ssh);
	/* The poll handle is closed: the socket goes now, without a reset that
	 * would cost the client the last bytes sent to it. */
	proxy_lingers_close(s->env->lingers, s->poll_fd);
	/* A session whose create failed was never handed out. */
	if (s->created)
		s->env->on_closed(s->env->data, s->id, &stats);
	free(s->user);
	free(s->builder_class);
	proxy_sibling_finish(&s->sibling);
	free(s->key_comment);
	free(s->limit_refusal);
	free(s->builder_status);
	free(s->builder_name);
	free(s->builder_host);
	free(s->builder_host_key);
	free(s->upstream_failure);
	free(s->lost_reason);
	free(s->failure);
	free(s);
}

static void session_release_builder(struct proxy_session *s, bool ok, const char *message)
{
	if (s->hold != SESSION_HOLD_ASKED)
		return;
	session_set_hold(s, SESSION_HOLD_RELEASED);
	proxy_builder_release(s->env->builder, s->id, ok, message, s->bytes_up, s->bytes_down);
}

/* The builder connection goes: every channel lets go of its channel on it
 * first (a running command is held until it is told why). */
static void session_drop_upstream(struct proxy_session *s, const char *why)
{
	for (int i = 0; i < s->n_bridges; i++)
		proxy_bridge_builder_lost(s->bridges[i], why);
	proxy_upstream_destroy(s->upstream);
	s->upstream = NULL;
}

/* What the request's status says when the session ends without a builder
 * failure: words for the user, not libssh's. Heap string or NULL. */
static char *session_outcome(const struct proxy_session *s, enum proxy_session_end cause,
    const char *reason)
{
	const char *why = strstr(reason, "Socket error: ");

	if (s->failure)
		return strdup(s->failure);
	if (cause == PROXY_SESSION_END_CLIENT) {
		if (why && !strstr(why, "disconnected"))
			return str_printf("%s; the connection to the Nix client was lost: %s",
			    s->bridged ? "session ended" : "the Nix client left before its builder "
			    "was ready", why + strlen("Socket error: "));
		if (strstr(reason, "keepalive"))
			return str_printf("%s: %s", s->bridged ? "session ended" : "the Nix client left "
			    "before its builder was ready", reason);
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
	s->channels_told = told;
}

void proxy_session_close(struct proxy_session *s, enum proxy_session_end cause,
    const char *reason)
{
	uint64_t secs;
	char *outcome;

	if (s->state == SESSION_CLOSING)
		return;
	secs = (uv_now(s->env->loop) - s->created_at) / 1000;
	log_info("session=%llu closed after %llus (%s): %s", (unsigned long long)s->id,
	    (unsigned long long)secs, session_state_names[s->state], reason);
	if (cause == PROXY_SESSION_END_SHUTDOWN) {
		char *why = str_printf("the nrbc proxy is shutting down (%s): retry the build",
		    reason);
		session_tell_channels(s, why ? why : reason);
		free(why);
	} else if (cause == PROXY_SESSION_END_IDLE) {
		session_tell_channels(s, reason);
	}
	outcome = session_outcome(s, cause, reason);
	session_release_builder(s, !s->failure && s->bridged, outcome ? outcome : reason);
	free(outcome);
	session_set_state(s, SESSION_CLOSING);
	session_drop_upstream(s, reason);
	for (int i = 0; i < s->n_bridges; i++)
		proxy_bridge_destroy(s->bridges[i]);
	s->n_bridges = 0;
	uv_poll_stop(&s->poll);
	uv_timer_stop(&s->timer);
	uv_idle_stop(&s->kick);
	s->pending_closes = 3;
	uv_close((uv_handle_t *)&s->poll, session_on_handle_closed);
	uv_close((uv_handle_t *)&s->timer, session_on_handle_closed);
	uv_close((uv_handle_t *)&s->kick, session_on_handle_closed);
}

static void session_closef(struct proxy_session *s, enum proxy_session_end cause,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void session_closef(struct proxy_session *s, enum proxy_session_end cause,
    const char *fmt, ...)
{
	struct buf b;
	va_list ap;

	buf_init(&b, 2048);
	va_start(ap, fmt);
	if (buf_vprintf(&b, fmt, ap) < 0)
		buf_append_str(&b, "closed");
	va_end(ap);
	proxy_session_close(s, cause, b.data ? b.data : "closed");
	buf_finish(&b);
}

/* ---- failure of the builder: every waiting or running channel is told ---- */

static void session_fail(struct proxy_session *s, const char *message)
{
	if (s->state == SESSION_CLOSING || s->state == SESSION_FAILED)
		return;
	free(s->failure);
	s->failure = strdup(message);
	log_info("session=%llu builder failed: %s", (unsigned long long)s->id, message);
	for (int i = 0; i < s->n_bridges; i++) {
		if (proxy_bridge_wants_builder(s->bridges[i]) || proxy_bridge_ran(s->bridges[i]))
			proxy_bridge_fail(s->bridges[i], message, 1);
	}
	session_drop_upstream(s, message);
	session_release_builder(s, false, message);
	session_set_state(s, SESSION_FAILED);
	s->again = true;
}

/* The builder connection broke under running commands (or one of them saw
 * its channel end without an exit). Their exit is unknown: say nothing yet,
 * and give the builder backend a bounded time to tell what happened to the
 * builder (its pod deleted, evicted, out of memory, ...). */
static void session_lose_builder(struct proxy_session *s, const char *why)
{
	log_info("session=%llu lost the connection to builder %s: %s; waiting up to %llu ms to "
	    "learn why", (unsigned long long)s->id, s->builder_name ? s->builder_name : "?", why,
	    (unsigned long long)s->env->builder_lost_wait_ms);
	free(s->lost_reason);
	s->lost_reason = strdup(why);
	session_drop_upstream(s, why);
	session_set_state(s, SESSION_BUILDER_LOST);
	s->again = true;
}

/* The lost-builder wait is over with no word on the builder. */
static void session_lost_unexplained(struct proxy_session *s)
{
	char *msg = str_printf("lost the connection to builder %s while the command ran (%s); "
	    "nothing was heard of the builder within %llus", s->builder_name ? s->builder_name :
	    "(unknown)", s->lost_reason ? s->lost_reason : "connection lost",
	    (unsigned long long)(s->env->builder_lost_wait_ms + 999) / 1000);

	session_fail(s, msg ? msg : "lost the connection to the builder");
	free(msg);
}

/* ---- timers ---- */

static uint64_t session_earlier(uint64_t a, uint64_t b)
{
	return !a ? b : !b ? a : a < b ? a : b;
}

/* When the current state's time is up; 0: never. */
static uint64_t session_state_deadline(const struct proxy_session *s)
{
	const struct proxy_session_env *e = s->env;

	switch (s->state) {
	case SESSION_KEX:
	case SESSION_AUTH:
		return s->created_at + e->login_grace_ms;
	case SESSION_WAIT_BUILDER:
	case SESSION_CONNECTING:
		return e->builder_timeout_ms ? s->state_since + e->builder_timeout_ms : 0;
	case SESSION_BUILDER_LOST:
		return s->state_since + e->builder_lost_wait_ms;
	case SESSION_READY:
	case SESSION_FAILED:
		if (s->limit_refusal)
			return s->state_since + (s->limit_told ? SESSION_LIMITED_LINGER_MS :
			    SESSION_LIMITED_GRACE_MS);
		/* fall through */
	case SESSION_BRIDGING:
		return e->idle_timeout_ms ? s->last_activity + e->idle_timeout_ms : 0;
	case SESSION_CLOSING:
		break;
	}
	return 0;
}

static bool session_keepalive_on(const struct proxy_session *s)
{
	return s->env->keepalive_interval_ms && s->authenticated && s->state != SESSION_CLOSING;
}

/* The next keepalive probe: an interval after the client's last sign of
 * life or our last probe, whichever is later. */
static uint64_t session_keepalive_deadline(const struct proxy_session *s)
{
	uint64_t since = s->keepalive_sent > s->client_heard ? s->keepalive_sent : s->client_heard;

	return session_keepalive_on(s) ? since + s->env->keepalive_interval_ms : 0;
}

static bool session_waits_for_budget(const struct proxy_session *s)
{
	for (int i = 0; i < s->n_bridges; i++) {
		if (proxy_bridge_waits_for_budget(s->bridges[i]))
			return true;
	}
	return false;
}

static uint64_t session_deadline(const struct proxy_session *s)
{
	uint64_t d = session_earlier(session_state_deadline(s), session_keepalive_deadline(s));

	if (s->state == SESSION_WAIT_BUILDER && s->status_withheld)
		d = session_earlier(d, s->state_since + SESSION_STATUS_QUIET_MS);
	if (session_waits_for_budget(s))
		d = session_earlier(d, uv_now(s->env->loop) + SESSION_BUDGET_RETRY_MS);
	return d;
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

static void session_show_status(struct proxy_session *s)
{
	s->status_withheld = false;
	if (!s->builder_status)
		return;
	for (int i = 0; i < s->n_bridges; i++)
		proxy_bridge_notify(s->bridges[i], s->builder_status);
}

/* A keepalive request to the client, which answers it (OpenSSH with a
 * refusal: any packet will do). libssh keeps one global request
 * outstanding: the first call collects the answer to the last probe if it
 * came, the second sends the next one; an unanswered probe sends nothing.
 * Returns false when the client has been silent too long (session closed). */
static bool session_keepalive(struct proxy_session *s, uint64_t now)
{
	uint64_t limit = s->env->keepalive_interval_ms * (uint64_t)s->env->keepalive_count;
	uint64_t silent;
	uint32_t since;

	/* libssh reads a quick answer inside ssh_send_keepalive, where no poll
	 * event sees it: ask the kernel when data last came. */
	if (sockopt_since_data_received(s->poll_fd, &since) == 0 && since < now &&
	    now - since > s->client_heard)
		s->client_heard = now - since;
	silent = now - s->client_heard;

	if (silent >= limit) {
		session_closef(s, PROXY_SESSION_END_CLIENT, "the Nix client answered no keepalive "
		    "for %llus (--keepalive-interval x --keepalive-count)",
		    (unsigned long long)silent / 1000);
		return false;
	}
	ssh_send_keepalive(s->ssh);
	ssh_send_keepalive(s->ssh);
	s->keepalive_sent = now;
	return true;
}

/* The current state's deadline passed. */
static void session_expire(struct proxy_session *s)
{
	char *msg;

	switch (s->state) {
	case SESSION_KEX:
	case SESSION_AUTH:
		session_closef(s, PROXY_SESSION_END_LOGIN, "not authenticated within %llus",
		    (unsigned long long)s->env->login_grace_ms / 1000);
		return;
	case SESSION_WAIT_BUILDER:
	case SESSION_CONNECTING:
		if (s->status_withheld)
			session_show_status(s);
		msg = str_printf("gave up waiting for a builder after %llus%s%s%s",
		    (unsigned long long)s->env->builder_timeout_ms / 1000,
		    s->builder_status ? " (last status: " : "",
		    s->builder_status ? s->builder_status : "", s->builder_status ? ")" : "");
		session_fail(s, msg ? msg : "gave up waiting for a builder");
		free(msg);
		session_run(s);
		return;
	case SESSION_BUILDER_LOST:
		session_lost_unexplained(s);
		session_run(s);
		return;
	case SESSION_READY:
	case SESSION_BRIDGING:
	case SESSION_FAILED:
		if (s->limit_told) {
			session_closef(s, PROXY_SESSION_END_LIMITED, "refused by a session limit, "
			    "told so: %s", s->limit_refusal);
			return;
		}
		if (s->limit_refusal) {
			session_closef(s, PROXY_SESSION_END_LIMITED, "refused by a session limit, "
			    "and ran no command within %ds: %s", SESSION_LIMITED_GRACE_MS / 1000,
			    s->limit_refusal);
			return;
		}
		session_closef(s, PROXY_SESSION_END_IDLE, "idle for %llus: closed (--idle-timeout)",
		    (unsigned long long)s->env->idle_timeout_ms / 1000);
		return;
	case SESSION_CLOSING:
		return;
	}
}

static void session_on_timer(uv_timer_t *t)
{
	struct proxy_session *s = t->data;
	uint64_t now = uv_now(s->env->loop), deadline;

	if (session_keepalive_on(s) && now >= session_keepalive_deadline(s) &&
	    !session_keepalive(s, now))
		return;
	if (s->state == SESSION_WAIT_BUILDER && s->status_withheld &&
	    now >= s->state_since + SESSION_STATUS_QUIET_MS)
		session_show_status(s);
	deadline = session_state_deadline(s);
	if (deadline && now >= deadline) {
		session_expire(s);
		return;
	}
	session_arm_timer(s);
	session_run(s);
}

/* ---- channels ---- */

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
	env.session_bytes_up = &s->bytes_up;
	env.session_bytes_down = &s->bytes_down;
	env.budget = s->env->budget;
	env.early_data = s->env->early_data;
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

/* Connected: counted towards the builder's burst of sessions (proxy_spares). */
static void session_note_connected(struct proxy_session *s)
{
	if (!s->builder_host)
		return;
	proxy_spares_connected(s->env->spares, &(struct proxy_upstream_options){
	    .host = s->builder_host, .port = s->builder_port, .user = s->env->remote_user,
	    .keys = s->env->keys, .host_key = s->builder_host_key });
}

static void session_upstream_ready(void *data)
{
	struct proxy_session *s = data;

	if (s->state == SESSION_CONNECTING) {
		log_info("session=%llu connected to the builder", (unsigned long long)s->id);
		session_set_state(s, SESSION_BRIDGING);
		session_note_connected(s);
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
	if (uv_now(s->env->loop) < s->state_since + SESSION_STATUS_QUIET_MS) {
		if (!s->status_withheld) {
			s->status_withheld = true;
			session_arm_timer(s);
		}
		return;
	}
	session_show_status(s);
	session_run(s);
}

void proxy_session_builder_ready(struct proxy_session *s, const char *host, int port,
    const char *name, const char *host_key)
{
	struct proxy_upstream_options opts;

	if (s->state != SESSION_WAIT_BUILDER) {
		log_debug("session=%llu builder ready in state %s: ignored",
		    (unsigned long long)s->id, session_state_names[s->state]);
		return;
	}
	metric_observe(s->env->builder_wait,
	    (double)(uv_now(s->env->loop) - s->wait_started) / 1000.0);
	log_info("session=%llu builder %s ready at %s:%d", (unsigned long long)s->id, name, host,
	    port);
	free(s->builder_name);
	s->builder_name = strdup(name);
	free(s->builder_host);
	free(s->builder_host_key);
	s->builder_host = strdup(host);
	s->builder_host_key = host_key ? strdup(host_key) : NULL;
	s->builder_port = port;
	opts = (struct proxy_upstream_options){ .host = host, .port = port,
	    .user = s->env->remote_user, .keys = s->env->keys, .host_key = host_key,
	    .keepalive_interval_ms = s->env->keepalive_interval_ms,
	    .keepalive_count = s->env->keepalive_count };
	s->upstream = proxy_spares_take(s->env->spares, s->id, &opts, &session_upstream_events, s);
	if (s->upstream) {
		log_info("session=%llu connected to the builder (a connection made ahead)",
		    (unsigned long long)s->id);
		session_set_state(s, SESSION_CONNECTING);
		session_set_state(s, SESSION_BRIDGING);
		session_note_connected(s);
		session_run(s);
		return;
	}
	s->upstream = proxy_upstream_create(s->env->loop, s->id, &opts, &session_upstream_events,
	    s);
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
	    s->state != SESSION_BRIDGING && s->state != SESSION_BUILDER_LOST)
		return;
	/* What led to the failure (an Unschedulable pod, say) explains it. */
	if (s->state == SESSION_WAIT_BUILDER && s->status_withheld)
		session_show_status(s);
	session_fail(s, message);
	session_run(s);
}

/* ---- the run loop ---- */

/* The builder took no connection (a builder that began to drain just as the
 * session was bound to it, say): nothing ran there, so the session gives its
 * request back and asks for another builder. */
static void session_ask_again(struct proxy_session *s, const char *why)
{
	char *outcome = str_printf("builder %s took no connection (%s): asking for another",
	    s->builder_name ? s->builder_name : "?", why);

	log_info("session=%llu %s", (unsigned long long)s->id, outcome ? outcome : why);
	s->reacquires++;
	session_release_builder(s, false, outcome ? outcome : why);
	free(outcome);
	session_drop_upstream(s, why);
	free(s->builder_name);
	s->builder_name = NULL;
	session_set_state(s, SESSION_READY);
	s->again = true;
}

/* What the upstream reported (it may have come from inside a bridge's
 * call): before anything ran the session fails; under running commands
 * the builder is lost and its fate is waited for. */
static void session_take_upstream_failure(struct proxy_session *s)
{
	char *msg = s->upstream_failure;

	s->upstream_failure = NULL;
	if (s->state == SESSION_CONNECTING && proxy_upstream_unreachable(s->upstream) &&
	    s->reacquires < SESSION_MAX_REACQUIRES)
		session_ask_again(s, msg);
	else if (s->state == SESSION_BRIDGING)
		session_lose_builder(s, msg);
	else if (s->state == SESSION_BUILDER_LOST || s->state == SESSION_FAILED)
		session_drop_upstream(s, msg);
	else
		session_fail(s, msg);
	free(msg);
}

static void session_ask_builder(struct proxy_session *s)
{
	struct proxy_builder_want want;

	if (s->limit_refusal) {
		s->limit_told = true; /* before the state change arms the timer */
		session_fail(s, s->limit_refusal);
		return;
	}
	s->wait_started = uv_now(s->env->loop);
	if (s->is_sibling) {
		/* Its target was chosen at login; nothing to ask or release. */
		session_set_state(s, SESSION_WAIT_BUILDER);
		proxy_session_builder_ready(s, s->sibling.host, s->sibling.port, s->sibling.name,
		    s->sibling.host_key);
		s->again = true;
		return;
	}
	session_set_hold(s, SESSION_HOLD_ASKED);
	session_set_state(s, SESSION_WAIT_BUILDER);
	want.identity = s->identity;
	want.builder_class = s->builder_class ? s->builder_class : "";
	want.max_builders = s->max_builders;
	if (proxy_builder_acquire(s->env->builder, s->id, &want) < 0) {
		session_set_hold(s, SESSION_HOLD_RELEASED); /* no event will follow */
		session_fail(s, "cannot request a builder (see the proxy's log)");
	}
}

static void session_step_channels(struct proxy_session *s)
{
	struct proxy_upstream *u;
	const char *held = NULL;
	bool wants_builder = false;
	size_t moved = 0;
	int kept = 0;

	if (s->upstream_failure)
		session_take_upstream_failure(s);
	u = proxy_upstream_is_ready(s->upstream) ? s->upstream : NULL;
	for (int i = 0; i < s->n_bridges; i++) {
		struct proxy_bridge *b = s->bridges[i];

		if (s->state == SESSION_FAILED && proxy_bridge_wants_builder(b))
			proxy_bridge_fail(b, s->failure, 1);
		moved += proxy_bridge_run(b, u);
		if (proxy_bridge_wants_builder(b))
			wants_builder = true;
		if (proxy_bridge_ran(b))
			s->bridged = true;
		if (proxy_bridge_is_held(b) && !held)
			held = proxy_bridge_lost_reason(b) ? proxy_bridge_lost_reason(b) :
			    "the builder's channel ended without an exit status";
	}
	if (held && s->state == SESSION_BRIDGING)
		session_lose_builder(s, held);
	/* Done channels go; none was freed while the loop above ran. */
	for (int i = 0; i < s->n_bridges; i++) {
		if (proxy_bridge_is_done(s->bridges[i]))
			proxy_bridge_destroy(s->bridges[i]);
		else
			s->bridges[kept++] = s->bridges[i];
	}
	s->n_bridges = kept;
	if (moved)
		s->last_activity = uv_now(s->env->loop);
	if (s->state == SESSION_READY && wants_builder)
		session_ask_builder(s);
}

static void session_step(struct proxy_session *s)
{
	int rc;

	if (s->auth_failures >= s->env->max_auth_tries) {
		session_closef(s, PROXY_SESSION_END_LOGIN, "too many authentication failures (%d)",
		    s->auth_failures);
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
			session_closef(s, PROXY_SESSION_END_LOGIN, "key exchange failed: %s",
			    ssh_get_error(s->ssh));
			return;
		}
		session_set_state(s, SESSION_AUTH);
		/* fall through */
	case SESSION_AUTH:
		if (!s->authenticated)
			return;
		s->client_heard = uv_now(s->env->loop);
		session_set_state(s, SESSION_READY);
		/* fall through */
	case SESSION_READY:
	case SESSION_WAIT_BUILDER:
	case SESSION_CONNECTING:
	case SESSION_BRIDGING:
	case SESSION_BUILDER_LOST:
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
	session_closef(s, PROXY_SESSION_END_CLIENT, "client connection lost%s%s",
	    why && *why ? ": " : "", why ? why : "");
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
		int rc = uv_poll_start(&s->poll, events, session_on_client_poll);

		if (rc < 0) {
			session_closef(s, PROXY_SESSION_END_CLIENT, "cannot watch the client socket: %s",
			    uv_strerror(rc));
			return;
		}
		s->poll_events = events;
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
	if (s->state != SESSION_CLOSING && session_waits_for_budget(s))
		session_arm_timer(s);
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
		session_closef(s, PROXY_SESSION_END_LOGIN, "too many authentication failures (%d)",
		    s->auth_failures);
		return;
	}
	if (rc == SSH_ERROR || (ssh_get_status(s->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR))) {
		const char *why = ssh_get_error(s->ssh);
		session_closef(s, PROXY_SESSION_END_CLIENT, "client disconnected%s%s",
		    why && *why ? ": " : "", why ? why : "");
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
	s->client_heard = uv_now(s->env->loop);
	session_client_io(s);
	if (s->state == SESSION_CLOSING)
		return;
	session_run(s);
}

static void session_install_callbacks(struct proxy_session *s)
{
	s->server_cb.userdata = s;
	s->server_cb.auth_pubkey_function = proxy_session_auth_pubkey;
	s->server_cb.auth_password_function = proxy_session_auth_password;
	s->server_cb.auth_none_function = proxy_session_auth_none;
	s->server_cb.service_request_function = proxy_session_auth_service_request;
	s->server_cb.channel_open_request_session_function = session_on_channel_open;
	ssh_callbacks_init(&s->server_cb);
	ssh_set_server_callbacks(s->ssh, &s->server_cb);
	ssh_set_message_callback(s->ssh, proxy_session_auth_message, s);
	s->guard_cb.userdata = s;
	s->guard_cb.channel_env_request_function = proxy_session_auth_env;
	s->guard_cb.channel_subsystem_request_function = session_on_subsystem;
	s->guard_cb.channel_auth_agent_req_function = proxy_session_auth_agent_req;
	ssh_callbacks_init(&s->guard_cb);
	ssh_set_auth_methods(s->ssh, SSH_AUTH_METHOD_PUBLICKEY);
	ssh_set_blocking(s->ssh, 0);
}

struct proxy_session *proxy_session_create(const struct proxy_session_env *env, uint64_t id,
    int fd, const char *peer)
{
	struct proxy_session *s = calloc(1, sizeof(*s));
	int handles = 0;

	if (!s)
		goto bad_fd;
	s->env = env;
	s->id = id;
	s->poll_fd = -1;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	s->created_at = s->state_since = s->last_activity = uv_now(env->loop);
	/* A client whose host vanished is found by the kernel as well. */
	if (sockopt_keepalive(fd, env->keepalive_interval_ms, env->keepalive_count) < 0)
		log_warn("session=%llu cannot set TCP keepalive", (unsigned long long)id);
	s->ssh = ssh_new();
	if (!s->ssh)
		goto bad_fd;
	if (ssh_bind_accept_fd(env->bind, s->ssh, fd) != SSH_OK) {
		log_error("session=%llu cannot set up the SSH session: %s", (unsigned long long)id,
		    ssh_get_error(env->bind));
		goto bad_fd;
	}
	/* From here libssh owns fd. */
	fd = -1;
	session_install_callbacks(s);
	/* The first call sends our banner and sets up libssh's poll handle;
	 * the session then moves into its own event. */
	if (ssh_handle_key_exchange(s->ssh) == SSH_ERROR || !(s->event = ssh_event_new()) ||
	    ssh_event_add_session(s->event, s->ssh) != SSH_OK) {
		log_info("session=%llu from %s: cannot start: %s", (unsigned long long)id, peer,
		    ssh_get_error(s->ssh));
		goto bad;
	}
	s->poll_fd = fcntl(ssh_get_fd(s->ssh), F_DUPFD_CLOEXEC, 3);
	if (s->poll_fd < 0 || uv_poll_init_socket(env->loop, &s->poll, s->poll_fd) < 0)
		goto bad_handles;
	handles++;
	if (uv_timer_init(env->loop, &s->timer) < 0)
		goto bad_handles;
	handles++;
	if (uv_idle_init(env->loop, &s->kick) < 0)
		goto bad_handles;
	s->poll.data = s->timer.data = s->kick.data = s;
	s->state = SESSION_KEX;
	log_debug("session=%llu from %s: KEX", (unsigned long long)id, peer);
	s->created = true;
	session_arm_timer(s);
	session_run(s);
	return s;
bad_handles:
	log_warn("session=%llu from %s: cannot watch the socket", (unsigned long long)id, peer);
	if (handles) {
		/* Handles the loop knows: the session goes after their close
		 * callbacks, which free everything else too. */
		s->pending_closes = handles;
		s->state = SESSION_CLOSING;
		uv_close((uv_handle_t *)&s->poll, session_on_handle_closed);
		if (handles > 1)
			uv_close((uv_handle_t *)&s->timer, session_on_handle_closed);
		return NULL;
	}
	if (s->poll_fd >= 0)
		close(s->poll_fd);
bad:
	if (s->event) {
		ssh_event_remove_session(s->event, s->ssh);
		ssh_event_free(s->event);
	}
	ssh_disconnect(s->ssh);
bad_fd:
	if (fd >= 0)
		close(fd);
	if (s && s->ssh)
		ssh_free(s->ssh);
	free(s);
	return NULL;
}
