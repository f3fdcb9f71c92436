/* One client connection: libssh server session on an accepted socket, its
 * channels (proxy_bridge), its builder (asked of proxy_builder by session
 * id) and its builder connection (proxy_upstream).
 *
 * KEX -> AUTH -> READY -> WAIT_BUILDER -> CONNECTING -> BRIDGING, with
 * BUILDER_LOST (the builder connection broke under running commands: their
 * exit is unknown, so for a bounded time the session waits to hear from the
 * builder backend what happened to the builder), FAILED (the builder could
 * not be had, or was lost: its pod deleted or failed, its connection broken;
 * channels get the reason on stderr and exit 1, the client decides when to
 * leave) and CLOSING (torn down, memory freed after the uv close callbacks).
 * Every way out goes through proxy_session_close() with a cause and a reason.
 * Timeouts: login grace until authenticated, the builder timeout while
 * waiting for and connecting to the builder, the lost-builder wait, the idle
 * timeout otherwise; keepalives find a client that vanished. */
#ifndef NRBC_PROXY_SESSION_H
#define NRBC_PROXY_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include <libssh/libssh.h>
#include <libssh/server.h>
#include <uv.h>

struct metric;
struct metrics;

struct proxy_builder;
struct proxy_command_policy;
struct proxy_keys;
struct proxy_session;

struct proxy_session_stats {
	bool authenticated;
	bool bridged;       /* a command ran on a builder */
	bool failed;        /* the proxy could not serve it */
};

struct proxy_spares;
struct proxy_session_env {
	uv_loop_t *loop;
	ssh_bind bind;
	const struct proxy_keys *keys;
	const struct proxy_command_policy *policy;
	struct proxy_builder *builder;
	const char *remote_user;
	uint64_t login_grace_ms;
	uint64_t builder_timeout_ms;
	uint64_t idle_timeout_ms;    /* 0: none */
	/* How long a session whose builder connection broke waits to be told
	 * the builder's fate before it says what it knows. */
	uint64_t builder_lost_wait_ms;
	/* A keepalive request after this much silence from the client (0:
	 * none); the client is gone after keepalive_count of them unanswered. */
	uint64_t keepalive_interval_ms;
	int keepalive_count;
	int max_auth_tries;
	/* Where a session's client socket goes to close (NULL: at once). */
	struct proxy_lingers *lingers;
	/* Builder connections made ahead (NULL: none). */
	struct proxy_spares *spares;
	/* The user name of the default builder class. Another user name that
	 * is a DNS label names a builder class (ssh-ng://big@proxy); any other
	 * is refused. Empty: any user name, always the default class. */
	const char *client_user;
	/* Metrics (each may be NULL). */
	struct metrics *metrics;      /* for labelled counters made on use */
	struct metric *auth_failures;
	struct metric *builder_wait;  /* histogram, seconds */
	struct metric *bytes_up;
	struct metric *bytes_down;
	struct metric *early_data;    /* channels closed for data before exec */
	/* What every bridged channel's buffers hold together (may be NULL). */
	struct proxy_pipebuf_budget *budget;
	/* A client key passed authentication (key_index: its index in the
	 * proxy's keys). 0: admitted; -1: refused by a session limit, with
	 * *refusal (heap) the line the client is shown. */
	int (*on_authenticated)(void *data, uint64_t id, int key_index, char **refusal);
	/* The session is gone (memory freed); called once, from a uv close
	 * callback. */
	void (*on_closed)(void *data, uint64_t id, const struct proxy_session_stats *stats);
	void *data;
};

/* Descriptors one session holds: the client socket and the poll's duplicate
 * of it (proxy_session_internal.h says why), and once bridged the builder
 * connection's socket. The open-files limit is sized from these. */
#define PROXY_SESSION_FDS_CLIENT 2
#define PROXY_SESSION_FDS_BRIDGED 3

/* Why a session ends (the reason text says more). */
enum proxy_session_end {
	PROXY_SESSION_END_CLIENT,    /* the client left, or its connection broke */
	PROXY_SESSION_END_LOGIN,     /* key exchange or authentication did not complete */
	PROXY_SESSION_END_DROPPED,   /* shed for a newer unauthenticated connection */
	PROXY_SESSION_END_IDLE,      /* --idle-timeout */
	PROXY_SESSION_END_SHUTDOWN,  /* the proxy drains or stops */
	PROXY_SESSION_END_LIMITED,   /* refused by a session limit, and told so */
};

/* Takes ownership of fd (closed on failure too). NULL on failure. */
struct proxy_session *proxy_session_create(const struct proxy_session_env *env, uint64_t id,
    int fd, const char *peer);
/* The one teardown: logs reason once, tells channels still in use why
 * (shutdown, idle), releases the builder, frees later. */
void proxy_session_close(struct proxy_session *s, enum proxy_session_end cause,
    const char *reason);

uint64_t proxy_session_id(const struct proxy_session *s);
bool proxy_session_is_closing(const struct proxy_session *s);
/* No channel is running a command (drain can close it without harm). */
bool proxy_session_is_idle(const struct proxy_session *s);

/* Builder events, routed here by session id. */
void proxy_session_builder_progress(struct proxy_session *s, const char *message);
/* name: the builder pod (or address) the user is told about; host_key: the
 * host key it must present, NULL for the shared builder host key. */
void proxy_session_builder_ready(struct proxy_session *s, const char *host, int port,
    const char *name, const char *host_key);
void proxy_session_builder_failed(struct proxy_session *s, const char *message);

#endif
