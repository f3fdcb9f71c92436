#include "proxy_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libssh/server.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "proxy_keys.h"
#include "proxy_linger.h"
#include "proxy_pipebuf.h"
#include "proxy_session.h"
#include "proxy_spares.h"

#define SERVER_ACCEPTS_PER_WAKEUP 64
#define SERVER_BACKLOG 511
/* After EMFILE/ENFILE the listener rests instead of spinning. */
#define SERVER_ACCEPT_PAUSE_MS 500
/* Builder connections made ahead live this long unused (below the
 * builders' sshd ClientAliveInterval of 15 s: they need no keepalives). */
#define SERVER_SPARE_LIFETIME_MS 5000
/* A closed session's socket waits this long for its client to close too
 * (a client answers in milliseconds), and at most this many wait at once. */
#define SERVER_LINGER_MS 2000
#define SERVER_LINGERS_MAX 256
/* --max-startups and --max-startups-per-source defaults. A real client
 * authenticates in tens of milliseconds, so even a burst of CI jobs holds
 * few unauthenticated connections at once. */
#define SERVER_STARTUPS_BEGIN 64
#define SERVER_STARTUPS_RATE 30
#define SERVER_STARTUPS_FULL 256
#define SERVER_STARTUPS_PER_SOURCE 32

struct server_entry {
	uint64_t id;
	struct proxy_session *session;
	struct server_entry *next;
	char addr[INET6_ADDRSTRLEN]; /* source address, no port */
	uint64_t accepted_at;        /* loop time */
	enum {
		ENTRY_UNAUTH,        /* counts toward the startups budgets */
		ENTRY_AUTH,          /* counts toward --max-sessions and its key's */
		/* Authenticated, refused by a limit: it has earned nothing, so it
		 * stays in the startups budgets (and may be dropped for a newcomer)
		 * until it has been told why and closed. */
		ENTRY_LIMITED,
		ENTRY_DROPPED,       /* unauthenticated, closed to make room */
	} kind;
	int key_index;
};

struct proxy_server {
	uv_loop_t *loop;
	struct proxy_server_options opts;
	char *listen_address;
	char *remote_user;
	char *client_user;
	int lfd;
	int port;
	uv_poll_t listener;
	uv_timer_t pause;
	bool listener_open;
	int pending_closes;
	ssh_bind bind;
	struct proxy_session_env env;
	struct server_entry *sessions;
	size_t n_sessions;   /* every entry, closing ones included */
	size_t n_unauth, n_auth; /* n_unauth includes the limited ones */
	size_t n_limited;
	struct proxy_pipebuf_budget budget;
	uint64_t rng;
	uint64_t next_id;
	bool draining, destroying;
	bool drop_logged;
	void (*drained_cb)(void *data);
	void *drained_data;
	struct metric *m_active, *m_accepted, *m_refused_full, *m_ok, *m_failed, *m_unauth;
	struct metric *m_dropped_source, *m_dropped_startups, *m_unauth_now, *m_auth_now;
	struct metric *m_limited_key, *m_limited_total, *m_limited_now;
};

static struct server_entry *server_find(struct proxy_server *srv, uint64_t id)
{
	for (struct server_entry *e = srv->sessions; e; e = e->next) {
		if (e->id == id)
			return e;
	}
	return NULL;
}

/* What a server owns besides its handles: the last step of a failed create
 * and of a destroy once the handles have closed. */
static void server_free(struct proxy_server *srv)
{
	proxy_spares_destroy(srv->env.spares);
	proxy_lingers_destroy(srv->env.lingers);
	if (srv->lfd >= 0)
		close(srv->lfd);
	if (srv->bind)
		ssh_bind_free(srv->bind);
	free(srv->listen_address);
	free(srv->remote_user);
	free(srv->client_user);
	free(srv);
}

static void server_maybe_free(struct proxy_server *srv)
{
	if (!srv->destroying || srv->pending_closes || srv->n_sessions)
		return;
	server_free(srv);
}

static void server_on_session_closed(void *data, uint64_t id,
    const struct proxy_session_stats *stats)
{
	struct proxy_server *srv = data;

	for (struct server_entry **pp = &srv->sessions; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct server_entry *e = *pp;
			*pp = e->next;
			if (e->kind == ENTRY_UNAUTH || e->kind == ENTRY_LIMITED)
				srv->n_unauth--;
			if (e->kind == ENTRY_LIMITED)
				srv->n_limited--;
			else if (e->kind == ENTRY_AUTH)
				srv->n_auth--;
			free(e);
			srv->n_sessions--;
			break;
		}
	}
	metric_set(srv->m_active, (double)srv->n_sessions);
	metric_set(srv->m_unauth_now, (double)srv->n_unauth);
	metric_set(srv->m_auth_now, (double)srv->n_auth);
	metric_set(srv->m_limited_now, (double)srv->n_limited);
	if (!stats->authenticated)
		metric_add(srv->m_unauth, 1);
	else if (stats->failed)
		metric_add(srv->m_failed, 1);
	else
		metric_add(srv->m_ok, 1);
	if (srv->destroying) {
		server_maybe_free(srv);
		return;
	}
	/* Last: the callback may destroy the server. */
	if (srv->draining && srv->n_sessions == 0 && srv->drained_cb)
		srv->drained_cb(srv->drained_data);
}

/* ---- builder events, by session id ---- */

static void server_builder_progress(uint64_t id, const char *message, void *data)
{
	struct server_entry *e = server_find(data, id);

	if (e)
		proxy_session_builder_progress(e->session, message);
}

static void server_builder_ready(uint64_t id, const char *host, int port, const char *name,
    const char *host_key, void *data)
{
	struct server_entry *e = server_find(data, id);

	if (e)
		proxy_session_builder_ready(e->session, host, port, name, host_key);
}

static void server_builder_failed(uint64_t id, const char *message, void *data)
{
	struct server_entry *e = server_find(data, id);

	if (e)
		proxy_session_builder_failed(e->session, message);
}

static const struct proxy_builder_events server_builder_events = {
	.progress = server_builder_progress,
	.ready = server_builder_ready,
	.failed = server_builder_failed,
};

const struct proxy_builder_events *proxy_server_builder_events(void)
{
	return &server_builder_events;
}

void proxy_server_set_builder(struct proxy_server *srv, struct proxy_builder *builder)
{
	srv->env.builder = builder;
}

/* ---- accepting ---- */

static void server_refuse(struct proxy_server *srv, int fd, const char *peer, const char *msg,
    struct metric *m, const char *why)
{
	ssize_t n;

	/* Lines before the SSH banner are allowed (RFC 4253 4.2); OpenSSH
	 * shows nothing of it but the connection closing, the log and the
	 * metric say why. */
	n = write(fd, msg, strlen(msg));
	(void)n;
	close(fd);
	metric_add(m, 1);
	log_warnx("refused a connection from %s: %s", peer, why);
}

/* ---- authentication: budgets by kind, per key ---- */

static int server_key_limit(const struct proxy_server *srv, int key_index)
{
	long n = proxy_keys_client_max_sessions(srv->env.keys, key_index);

	return (int)(n > 0 ? n : srv->opts.max_sessions_per_key);
}

static int server_on_authenticated(void *data, uint64_t id, int key_index, char **refusal)
{
	struct proxy_server *srv = data;
	struct server_entry *e = server_find(srv, id);
	int limit = server_key_limit(srv, key_index), same = 0;

	*refusal = NULL;
	if (!e || e->kind != ENTRY_UNAUTH)
		return 0;
	for (struct server_entry *o = srv->sessions; o; o = o->next) {
		if (o->kind == ENTRY_AUTH && o->key_index == key_index)
			same++;
	}
	if ((long)srv->n_auth >= srv->opts.max_sessions) {
		e->kind = ENTRY_LIMITED;
		metric_add(srv->m_limited_total, 1);
		*refusal = str_printf("the proxy is at its session limit (%zu sessions, "
		    "--max-sessions %ld); try again later", srv->n_auth, srv->opts.max_sessions);
	} else if (limit > 0 && same >= limit) {
		e->kind = ENTRY_LIMITED;
		metric_add(srv->m_limited_key, 1);
		*refusal = str_printf("this key already has %d session(s) open, its limit "
		    "(--max-sessions-per-key or nrbc-max-sessions=); try again when one ends",
		    same);
	} else {
		e->kind = ENTRY_AUTH;
		e->key_index = key_index;
		srv->n_unauth--;
		srv->n_auth++;
	}
	if (e->kind == ENTRY_LIMITED)
		srv->n_limited++;
	metric_set(srv->m_unauth_now, (double)srv->n_unauth);
	metric_set(srv->m_auth_now, (double)srv->n_auth);
	metric_set(srv->m_limited_now, (double)srv->n_limited);
	return e->kind == ENTRY_AUTH ? 0 : -1;
}

/* An unauthenticated connection goes to make room for a newcomer. The first
 * drop is logged at info, the others at debug (a flood would fill the log;
 * the metric counts them all); the session's own close line follows. */
static void server_drop(struct proxy_server *srv, struct server_entry *e, struct metric *m,
    const char *budget)
{
	char reason[96];

	if (e->kind == ENTRY_LIMITED)
		srv->n_limited--;
	e->kind = ENTRY_DROPPED;
	srv->n_unauth--;
	metric_add(m, 1);
	metric_set(srv->m_unauth_now, (double)srv->n_unauth);
	snprintf(reason, sizeof(reason), "dropped for a newer connection (%s)", budget);
	if (log_enabled(LOG_LEVEL_DEBUG) || !srv->drop_logged) {
		srv->drop_logged = true;
		log_info("session=%llu from %s %s; %zu unauthenticated connections left (further "
		    "drops are counted in nrbc_proxy_preauth_dropped_total, logged at debug)",
		    (unsigned long long)e->id, e->addr, reason, srv->n_unauth);
	}
	proxy_session_close(e->session, PROXY_SESSION_END_DROPPED, reason);
}

static uint64_t server_random(struct proxy_server *srv)
{
	/* xorshift64*: early drop needs no more than this. */
	srv->rng ^= srv->rng >> 12;
	srv->rng ^= srv->rng << 25;
	srv->rng ^= srv->rng >> 27;
	return srv->rng * 2685821657736338717ULL;
}

/* MaxStartups-like early drop: between begin and full the oldest
 * unauthenticated connection goes with a probability rising from rate% to
 * 100%, at full it always goes. Makes room for the newcomer. */
static void server_maybe_drop_oldest(struct proxy_server *srv)
{
	const struct proxy_server_options *o = &srv->opts;
	struct server_entry *oldest = NULL;
	uint64_t pct;

	if ((long)srv->n_unauth < o->startups_begin)
		return;
	if ((long)srv->n_unauth >= o->startups_full || o->startups_full <= o->startups_begin)
		pct = 100;
	else
		pct = (uint64_t)(o->startups_rate + (100 - o->startups_rate) *
		    ((long)srv->n_unauth - o->startups_begin) / (o->startups_full - o->startups_begin));
	if (server_random(srv) % 100 >= pct)
		return;
	for (struct server_entry *e = srv->sessions; e; e = e->next) {
		if ((e->kind == ENTRY_UNAUTH || e->kind == ENTRY_LIMITED) &&
		    (!oldest || e->accepted_at <= oldest->accepted_at))
			oldest = e;
	}
	if (oldest)
		server_drop(srv, oldest, srv->m_dropped_startups, "--max-startups");
}

static void server_on_listener(uv_poll_t *h, int status, int events);

static void server_on_pause_end(uv_timer_t *t)
{
	struct proxy_server *srv = t->data;
	int rc;

	if (!srv->listener_open || srv->draining)
		return;
	rc = uv_poll_start(&srv->listener, UV_READABLE, server_on_listener);
	if (rc < 0) {
		log_error("cannot watch the listening socket: %s; trying again in %dms",
		    uv_strerror(rc), SERVER_ACCEPT_PAUSE_MS);
		uv_timer_start(&srv->pause, server_on_pause_end, SERVER_ACCEPT_PAUSE_MS, 0);
	}
}

static void server_accept_one(struct proxy_server *srv, int fd, const struct sockaddr *sa)
{
	char peer[64] = "?", addr[INET6_ADDRSTRLEN] = "?";
	struct proxy_session *s;
	long same_source = 0;
	struct server_entry *e;
	int one = 1;
	uint64_t id;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		if (inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr)))
			snprintf(peer, sizeof(peer), "%s:%d", addr, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr)))
			snprintf(peer, sizeof(peer), "[%s]:%d", addr, ntohs(in6->sin6_port));
	}
	if (srv->draining) {
		close(fd);
		return;
	}
	if ((long)srv->n_auth >= srv->opts.max_sessions) {
		char why[96];
		snprintf(why, sizeof(why), "%zu sessions (--max-sessions %ld)", srv->n_auth,
		    srv->opts.max_sessions);
		server_refuse(srv, fd, peer, "nrbc: the proxy is at its session limit; try again "
		    "later\r\n", srv->m_refused_full, why);
		return;
	}
	/* Per address: the oldest unauthenticated connection from there makes
	 * room, so a flood from one address only ever hurts that address, and a
	 * real client behind it still gets its turn. */
	{
		struct server_entry *oldest = NULL;

		for (struct server_entry *o = srv->sessions; o; o = o->next) {
			if ((o->kind != ENTRY_UNAUTH && o->kind != ENTRY_LIMITED) ||
			    strcmp(o->addr, addr) != 0)
				continue;
			same_source++;
			if (!oldest || o->accepted_at <= oldest->accepted_at)
				oldest = o;
		}
		if (oldest && same_source >= srv->opts.startups_per_source)
			server_drop(srv, oldest, srv->m_dropped_source, "--max-startups-per-source");
	}
	server_maybe_drop_oldest(srv);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	e = calloc(1, sizeof(*e));
	if (!e) {
		close(fd);
		return;
	}
	id = ++srv->next_id;
	/* Listed before the session exists: its callbacks may look for it. */
	e->id = id;
	e->kind = ENTRY_UNAUTH;
	e->key_index = -1;
	e->accepted_at = uv_now(srv->loop);
	snprintf(e->addr, sizeof(e->addr), "%s", addr);
	e->next = srv->sessions;
	srv->sessions = e;
	srv->n_sessions++;
	srv->n_unauth++;
	s = proxy_session_create(&srv->env, id, fd, peer);
	if (!s) {
		srv->sessions = e->next;
		srv->n_sessions--;
		if (e->kind == ENTRY_UNAUTH)
			srv->n_unauth--;
		free(e);
		return;
	}
	e->session = s;
	metric_add(srv->m_accepted, 1);
	metric_set(srv->m_active, (double)srv->n_sessions);
	metric_set(srv->m_unauth_now, (double)srv->n_unauth);
	log_debug("session=%llu accepted from %s (%zu active)", (unsigned long long)id, peer,
	    srv->n_sessions);
}

static void server_on_listener(uv_poll_t *h, int status, int events)
{
	struct proxy_server *srv = h->data;

	for (int i = 0; i < SERVER_ACCEPTS_PER_WAKEUP && srv->listener_open; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(srv->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				log_warn("accept: pausing for %dms", SERVER_ACCEPT_PAUSE_MS);
				uv_poll_stop(&srv->listener);
				uv_timer_start(&srv->pause, server_on_pause_end, SERVER_ACCEPT_PAUSE_MS, 0);
			}
			return;
		}
		server_accept_one(srv, fd, (struct sockaddr *)&ss);
	}
}

static int server_listen(struct proxy_server *srv, char **err)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1;

	memset(&ss, 0, sizeof(ss));
	if (uv_ip4_addr(srv->listen_address, srv->opts.port, (struct sockaddr_in *)&ss) == 0) {
		len = sizeof(struct sockaddr_in);
	} else if (uv_ip6_addr(srv->listen_address, srv->opts.port,
	    (struct sockaddr_in6 *)&ss) == 0) {
		len = sizeof(struct sockaddr_in6);
	} else {
		*err = str_printf("listen address \"%s\" is not a numeric IP address",
		    srv->listen_address);
		return -1;
	}
	srv->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->lfd < 0) {
		*err = str_printf("socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(srv->lfd, (struct sockaddr *)&ss, len) < 0 ||
	    listen(srv->lfd, SERVER_BACKLOG) < 0) {
		*err = str_printf("cannot listen on %s port %d: %s", srv->listen_address,
		    srv->opts.port, strerror(errno));
		return -1;
	}
	len = sizeof(ss);
	if (getsockname(srv->lfd, (struct sockaddr *)&ss, &len) == 0)
		srv->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port :
		    ((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

static int server_setup_bind(struct proxy_server *srv, const struct proxy_keys *keys, char **err)
{
	ssh_key key = ssh_key_dup(proxy_keys_host_key(keys));
	bool no = false;
	int verbosity = SSH_LOG_NOLOG;

	srv->bind = ssh_bind_new();
	if (!srv->bind || !key) {
		ssh_key_free(key);
		*err = str_printf("cannot create the SSH server");
		return -1;
	}
	/* No system libssh configuration: what the proxy does is in its flags. */
	ssh_bind_options_set(srv->bind, SSH_BIND_OPTIONS_PROCESS_CONFIG, &no);
	ssh_bind_options_set(srv->bind, SSH_BIND_OPTIONS_LOG_VERBOSITY, &verbosity);
	/* "SSH-2.0-nrbc": no library name or version for scanners. */
	ssh_bind_options_set(srv->bind, SSH_BIND_OPTIONS_BANNER, "nrbc");
	if (ssh_bind_options_set(srv->bind, SSH_BIND_OPTIONS_IMPORT_KEY, key) != SSH_OK) {
		*err = str_printf("host key rejected by libssh: %s", ssh_get_error(srv->bind));
		ssh_key_free(key);
		return -1;
	}
	return 0;
}

/* Seconds: a warm builder answers in milliseconds, a cold pod in seconds,
 * an unschedulable one in minutes. */
static const double server_wait_buckets[] = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60,
    120, 300 };

struct proxy_server *proxy_server_create(uv_loop_t *loop, const struct proxy_server_options *opts,
    const struct proxy_keys *keys, const struct proxy_command_policy *policy,
    struct metrics *metrics, char **err)
{
	struct proxy_server *srv = calloc(1, sizeof(*srv));
	int rc;

	*err = NULL;
	if (!srv) {
		*err = str_printf("out of memory");
		return NULL;
	}
	srv->loop = loop;
	srv->opts = *opts;
	if (srv->opts.startups_full <= 0) {
		srv->opts.startups_begin = SERVER_STARTUPS_BEGIN;
		srv->opts.startups_rate = SERVER_STARTUPS_RATE;
		srv->opts.startups_full = SERVER_STARTUPS_FULL;
	}
	if (srv->opts.startups_per_source <= 0)
		srv->opts.startups_per_source = SERVER_STARTUPS_PER_SOURCE;
	srv->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
	srv->lfd = -1;
	srv->listen_address = strdup(opts->listen_address);
	srv->remote_user = strdup(opts->remote_user);
	srv->client_user = strdup(opts->client_user ? opts->client_user : "");
	if (!srv->listen_address || !srv->remote_user || !srv->client_user) {
		*err = str_printf("out of memory");
		goto bad;
	}
	if (server_setup_bind(srv, keys, err) < 0 || server_listen(srv, err) < 0)
		goto bad;
	srv->env.loop = loop;
	srv->env.bind = srv->bind;
	srv->env.keys = keys;
	srv->env.policy = policy;
	srv->env.remote_user = srv->remote_user;
	srv->env.login_grace_ms = opts->login_grace_ms;
	srv->env.builder_timeout_ms = opts->builder_timeout_ms;
	srv->env.idle_timeout_ms = opts->idle_timeout_ms;
	srv->env.builder_lost_wait_ms = opts->builder_lost_wait_ms;
	srv->env.keepalive_interval_ms = opts->keepalive_interval_ms;
	srv->env.keepalive_count = opts->keepalive_count;
	srv->env.max_auth_tries = opts->max_auth_tries > 0 ? opts->max_auth_tries : 6;
	srv->env.client_user = srv->client_user;
	srv->env.lingers = proxy_lingers_create(loop, SERVER_LINGERS_MAX, SERVER_LINGER_MS);
	if (!srv->env.lingers) {
		*err = str_printf("out of memory");
		goto bad;
	}
	if (opts->builder_spares) {
		struct metric *made = metrics ? metrics_counter(metrics,
		    "nrbc_proxy_builder_spares_total", "Builder connections made ahead for a "
		    "session to come, and taken by one, by outcome.", "outcome=\"made\"") : NULL;
		struct metric *taken = metrics ? metrics_counter(metrics,
		    "nrbc_proxy_builder_spares_total", "Builder connections made ahead for a "
		    "session to come, and taken by one, by outcome.", "outcome=\"taken\"") : NULL;

		srv->env.spares = proxy_spares_create(loop, SERVER_SPARE_LIFETIME_MS,
		    opts->builder_spares, made, taken);
		if (!srv->env.spares) {
			*err = str_printf("out of memory");
			goto bad;
		}
	}
	srv->env.metrics = metrics;
	srv->env.on_authenticated = server_on_authenticated;
	srv->env.on_closed = server_on_session_closed;
	srv->env.data = srv;
	if (metrics) {
		srv->m_active = metrics_gauge(metrics, "nrbc_proxy_sessions",
		    "Client SSH connections open now.", NULL);
		srv->m_accepted = metrics_counter(metrics, "nrbc_proxy_connections_accepted_total",
		    "Client connections accepted.", NULL);
		srv->m_refused_full = metrics_counter(metrics,
		    "nrbc_proxy_connections_refused_total",
		    "Client connections refused at --max-sessions.", NULL);
		srv->m_dropped_source = metrics_counter(metrics,
		    "nrbc_proxy_preauth_dropped_total",
		    "Unauthenticated connections dropped for newer ones, by budget.",
		    "reason=\"per_source\"");
		srv->m_dropped_startups = metrics_counter(metrics,
		    "nrbc_proxy_preauth_dropped_total",
		    "Unauthenticated connections dropped for newer ones, by budget.",
		    "reason=\"max_startups\"");
		srv->m_unauth_now = metrics_gauge(metrics, "nrbc_proxy_unauthenticated_connections",
		    "Client connections not authenticated yet.", NULL);
		srv->m_auth_now = metrics_gauge(metrics, "nrbc_proxy_authenticated_sessions",
		    "Authenticated client sessions open now (--max-sessions).", NULL);
		srv->m_limited_key = metrics_counter(metrics, "nrbc_proxy_sessions_limited_total",
		    "Authenticated sessions refused a builder by a limit, by limit.",
		    "limit=\"per_key\"");
		srv->m_limited_total = metrics_counter(metrics, "nrbc_proxy_sessions_limited_total",
		    "Authenticated sessions refused a builder by a limit, by limit.",
		    "limit=\"max_sessions\"");
		srv->m_ok = metrics_counter(metrics, "nrbc_proxy_sessions_total",
		    "Client sessions ended, by outcome.", "outcome=\"ok\"");
		srv->m_failed = metrics_counter(metrics, "nrbc_proxy_sessions_total",
		    "Client sessions ended, by outcome.", "outcome=\"failed\"");
		srv->m_unauth = metrics_counter(metrics, "nrbc_proxy_sessions_total",
		    "Client sessions ended, by outcome.", "outcome=\"unauthenticated\"");
		srv->env.auth_failures = metrics_counter(metrics,
		    "nrbc_proxy_auth_failures_total", "Client keys refused.", NULL);
		srv->env.builder_wait = metrics_histogram(metrics,
		    "nrbc_proxy_builder_wait_seconds",
		    "Time from a session asking for a builder to the builder being ready.", NULL,
		    server_wait_buckets, sizeof(server_wait_buckets) / sizeof(server_wait_buckets[0]));
		srv->env.bytes_up = metrics_counter(metrics, "nrbc_proxy_bytes_total",
		    "Payload bytes bridged, by direction.", "direction=\"up\"");
		srv->env.bytes_down = metrics_counter(metrics, "nrbc_proxy_bytes_total",
		    "Payload bytes bridged, by direction.", "direction=\"down\"");
		srv->env.early_data = metrics_counter(metrics, "nrbc_proxy_early_data_total",
		    "Channels closed for sending data before any command.", NULL);
		srv->m_limited_now = metrics_gauge(metrics, "nrbc_proxy_limited_sessions",
		    "Sessions refused by a limit, still open until they are told why.", NULL);
		srv->budget.held_gauge = metrics_gauge(metrics, "nrbc_proxy_buffered_bytes",
		    "Bytes buffered by all bridged channels together (see --buffer-budget).", NULL);
	}
	srv->budget.limit = srv->opts.buffer_budget;
	srv->env.budget = &srv->budget;
	rc = uv_poll_init_socket(loop, &srv->listener, srv->lfd);
	if (rc < 0) {
		*err = str_printf("cannot watch the listening socket: %s", uv_strerror(rc));
		goto bad;
	}
	uv_timer_init(loop, &srv->pause);
	srv->listener.data = srv->pause.data = srv;
	srv->listener_open = true;
	rc = uv_poll_start(&srv->listener, UV_READABLE, server_on_listener);
	if (rc < 0) {
		*err = str_printf("cannot watch the listening socket: %s", uv_strerror(rc));
		/* The handles are live now: they close on the loop, then it goes. */
		proxy_server_destroy(srv);
		return NULL;
	}
	log_info("listening on %s port %d (host key %s, %zu client key(s))", srv->listen_address,
	    srv->port, proxy_keys_host_fingerprint(keys), proxy_keys_client_count(keys));
	return srv;
bad:
	server_free(srv);
	return NULL;
}

int proxy_server_parse_startups(const char *text, struct proxy_server_options *opts)
{
	long v[3];
	int n = 0;
	const char *p = text;
	char *end;

	while (n < 3) {
		errno = 0;
		v[n] = strtol(p, &end, 10);
		if (end == p || errno || v[n] < 0)
			return -1;
		n++;
		if (*end == '\0')
			break;
		if (*end != ':')
			return -1;
		p = end + 1;
	}
	if (*end != '\0' || n == 2)
		return -1;
	if (n == 1) {
		v[2] = v[0];
		v[1] = 100;
	}
	if (v[2] < 1 || v[1] > 100 || v[0] > v[2])
		return -1;
	opts->startups_begin = v[0];
	opts->startups_rate = v[1];
	opts->startups_full = v[2];
	return 0;
}

int proxy_server_port(const struct proxy_server *srv)
{
	return srv->port;
}

size_t proxy_server_session_count(const struct proxy_server *srv)
{
	return srv->n_sessions;
}

static void server_on_listener_closed(uv_handle_t *h)
{
	struct proxy_server *srv = h->data;

	if (--srv->pending_closes == 0) {
		close(srv->lfd);
		srv->lfd = -1;
		server_maybe_free(srv);
	}
}

static void server_close_listener(struct proxy_server *srv)
{
	if (!srv->listener_open)
		return;
	srv->listener_open = false;
	uv_poll_stop(&srv->listener);
	uv_timer_stop(&srv->pause);
	srv->pending_closes = 2;
	uv_close((uv_handle_t *)&srv->listener, server_on_listener_closed);
	uv_close((uv_handle_t *)&srv->pause, server_on_listener_closed);
}

void proxy_server_drain(struct proxy_server *srv, bool idle_now)
{
	if (!srv->draining)
		log_info("draining: no new connections; %zu session(s) open", srv->n_sessions);
	srv->draining = true;
	server_close_listener(srv);
	if (idle_now) {
		for (struct server_entry *e = srv->sessions; e; e = e->next) {
			if (proxy_session_is_idle(e->session))
				proxy_session_close(e->session, PROXY_SESSION_END_SHUTDOWN,
				    "proxy shutting down");
		}
	}
	if (srv->n_sessions == 0 && srv->drained_cb)
		srv->drained_cb(srv->drained_data);
}

bool proxy_server_is_draining(const struct proxy_server *srv)
{
	return srv->draining;
}

void proxy_server_close_all(struct proxy_server *srv, const char *reason)
{
	/* Sessions leave the list only in their close callbacks, later. */
	for (struct server_entry *e = srv->sessions; e; e = e->next)
		proxy_session_close(e->session, PROXY_SESSION_END_SHUTDOWN, reason);
}

void proxy_server_on_drained(struct proxy_server *srv, void (*cb)(void *data), void *data)
{
	srv->drained_cb = cb;
	srv->drained_data = data;
}

void proxy_server_destroy(struct proxy_server *srv)
{
	if (!srv)
		return;
	srv->drained_cb = NULL;
	srv->destroying = true;
	proxy_spares_destroy(srv->env.spares);
	srv->env.spares = NULL;
	server_close_listener(srv);
	proxy_server_close_all(srv, "proxy stopped");
	server_maybe_free(srv);
}
