/* One client connection: libssh server session on an accepted socket, its
 * channels (proxy_bridge), its builder (asked of proxy_builder by session
 * id) and its builder connection (proxy_upstream).
 *
 * KEX -> AUTH -> READY -> WAIT_BUILDER -> CONNECTING -> BRIDGING, with
 * FAILED (the builder could not be had, or was lost while bridging: its pod
 * deleted or failed, its connection broken; channels get the reason on
 * stderr and exit 1, the client decides when to leave) and CLOSING (torn
 * down, memory freed after the uv close callbacks). Every way out goes through
 * proxy_session_close() with a reason. Timeouts: login grace until
 * authenticated, the builder timeout while waiting for and connecting to the
 * builder, the idle timeout otherwise. */
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
	int max_auth_tries;
	/* The user name clients must log in as (any other is refused). */
	const char *client_user;
	/* Metrics (each may be NULL). */
	struct metrics *metrics;      /* for labelled counters made on use */
	struct metric *auth_failures;
	struct metric *builder_wait;  /* histogram, seconds */
	struct metric *bytes_up;
	struct metric *bytes_down;
	/* A client key passed authentication (key_index: its index in the
	 * proxy's keys). 0: admitted; -1: refused by a session limit, with
	 * *refusal (heap) the line the client is shown. */
	int (*on_authenticated)(void *data, uint64_t id, int key_index, char **refusal);
	/* The session is gone (memory freed); called once, from a uv close
	 * callback. */
	void (*on_closed)(void *data, uint64_t id, const struct proxy_session_stats *stats);
	void *data;
};

/* Takes ownership of fd (closed on failure too). NULL on failure. */
struct proxy_session *proxy_session_create(const struct proxy_session_env *env, uint64_t id,
    int fd, const char *peer);
/* The one teardown: logs reason once, releases the builder, frees later. */
void proxy_session_close(struct proxy_session *s, const char *reason);

uint64_t proxy_session_id(const struct proxy_session *s);
bool proxy_session_is_closing(const struct proxy_session *s);
/* No channel is running a command (drain can close it without harm). */
bool proxy_session_is_idle(const struct proxy_session *s);

/* Builder events, routed here by session id. */
void proxy_session_builder_progress(struct proxy_session *s, const char *message);
void proxy_session_builder_ready(struct proxy_session *s, const char *host, int port);
void proxy_session_builder_failed(struct proxy_session *s, const char *message);

#endif
