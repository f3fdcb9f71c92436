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
#include "proxy_session.h"

#define SERVER_ACCEPTS_PER_WAKEUP 64
#define SERVER_BACKLOG 511
/* After EMFILE/ENFILE the listener rests instead of spinning. */
#define SERVER_ACCEPT_PAUSE_MS 500

struct server_entry {
	uint64_t id;
	struct proxy_session *session;
	struct server_entry *next;
};

struct proxy_server {
	uv_loop_t *loop;
	struct proxy_server_options opts;
	char *listen_address;
	char *remote_user;
	int lfd;
	int port;
	uv_poll_t listener;
	uv_timer_t pause;
	bool listener_open;
	int pending_closes;
	ssh_bind bind;
	struct proxy_session_env env;
	struct server_entry *sessions;
	size_t n_sessions;
	uint64_t next_id;
	bool draining, destroying;
	void (*drained_cb)(void *data);
	void *drained_data;
	struct metric *m_active, *m_accepted, *m_refused_full, *m_ok, *m_failed, *m_unauth;
};

static struct server_entry *server_find(struct proxy_server *srv, uint64_t id)
{
	for (struct server_entry *e = srv->sessions; e; e = e->next) {
		if (e->id == id)
			return e;
	}
	return NULL;
}

static void server_maybe_free(struct proxy_server *srv)
{
	if (!srv->destroying || srv->pending_closes || srv->n_sessions)
		return;
	if (srv->bind)
		ssh_bind_free(srv->bind);
	free(srv->listen_address);
	free(srv->remote_user);
	free(srv);
}

static void server_on_session_closed(void *data, uint64_t id,
    const struct proxy_session_stats *stats)
{
	struct proxy_server *srv = data;

	for (struct server_entry **pp = &srv->sessions; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct server_entry *e = *pp;
			*pp = e->next;
			free(e);
			srv->n_sessions--;
			break;
		}
	}
	metric_set(srv->m_active, (double)srv->n_sessions);
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

static void server_builder_ready(uint64_t id, const char *host, int port, void *data)
{
	struct server_entry *e = server_find(data, id);

	if (e)
		proxy_session_builder_ready(e->session, host, port);
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

static void server_refuse(struct proxy_server *srv, int fd, const char *peer)
{
	static const char msg[] = "nrbc: the proxy is at its session limit; try again later\r\n";
	ssize_t n;

	/* Lines before the SSH banner are allowed; OpenSSH shows nothing of it
	 * but the connection closing, the log and the metric say why. */
	n = write(fd, msg, sizeof(msg) - 1);
	(void)n;
	close(fd);
	metric_add(srv->m_refused_full, 1);
	log_warnx("refused a connection from %s: %zu sessions (--max-sessions %ld)", peer,
	    srv->n_sessions, srv->opts.max_sessions);
}

static void server_on_listener(uv_poll_t *h, int status, int events);

static void server_on_pause_end(uv_timer_t *t)
{
	struct proxy_server *srv = t->data;

	if (srv->listener_open && !srv->draining)
		uv_poll_start(&srv->listener, UV_READABLE, server_on_listener);
}

static void server_accept_one(struct proxy_server *srv, int fd, const struct sockaddr *sa)
{
	char peer[64] = "?";
	struct proxy_session *s;
	struct server_entry *e;
	int one = 1;
	uint64_t id;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		char a[INET_ADDRSTRLEN];
		if (inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a)))
			snprintf(peer, sizeof(peer), "%s:%d", a, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		char a[INET6_ADDRSTRLEN];
		if (inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a)))
			snprintf(peer, sizeof(peer), "[%s]:%d", a, ntohs(in6->sin6_port));
	}
	if (srv->draining) {
		close(fd);
		return;
	}
	if ((long)srv->n_sessions >= srv->opts.max_sessions) {
		server_refuse(srv, fd, peer);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	e = calloc(1, sizeof(*e));
	if (!e) {
		close(fd);
		return;
	}
	id = ++srv->next_id;
	s = proxy_session_create(&srv->env, id, fd, peer);
	if (!s) {
		free(e);
		return;
	}
	e->id = id;
	e->session = s;
	e->next = srv->sessions;
	srv->sessions = e;
	srv->n_sessions++;
	metric_add(srv->m_accepted, 1);
	metric_set(srv->m_active, (double)srv->n_sessions);
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

	*err = NULL;
	if (!srv) {
		*err = str_printf("out of memory");
		return NULL;
	}
	srv->loop = loop;
	srv->opts = *opts;
	srv->lfd = -1;
	srv->listen_address = strdup(opts->listen_address);
	srv->remote_user = strdup(opts->remote_user);
	if (!srv->listen_address || !srv->remote_user) {
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
	srv->env.max_auth_tries = opts->max_auth_tries > 0 ? opts->max_auth_tries : 6;
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
	}
	uv_poll_init_socket(loop, &srv->listener, srv->lfd);
	uv_timer_init(loop, &srv->pause);
	srv->listener.data = srv->pause.data = srv;
	srv->listener_open = true;
	uv_poll_start(&srv->listener, UV_READABLE, server_on_listener);
	log_info("listening on %s port %d (host key %s, %zu client key(s))", srv->listen_address,
	    srv->port, proxy_keys_host_fingerprint(keys), proxy_keys_client_count(keys));
	return srv;
bad:
	if (srv->lfd >= 0)
		close(srv->lfd);
	if (srv->bind)
		ssh_bind_free(srv->bind);
	free(srv->listen_address);
	free(srv->remote_user);
	free(srv);
	return NULL;
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
				proxy_session_close(e->session, "proxy shutting down");
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
		proxy_session_close(e->session, reason);
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
	server_close_listener(srv);
	proxy_server_close_all(srv, "proxy stopped");
	server_maybe_free(srv);
}
