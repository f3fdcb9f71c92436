/* The listening side of the proxy: accepts TCP connections, hands each to a
 * proxy_session, keeps the budgets (unauthenticated connections overall and
 * per source address, authenticated sessions overall and per client key),
 * routes builder events to sessions by id, and drains on shutdown (stop
 * accepting, let sessions finish). */
#ifndef NRBC_PROXY_SERVER_H
#define NRBC_PROXY_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proxy_builder.h"

struct proxy_keys;
struct proxy_command_policy;
struct proxy_server;
struct metrics;

struct proxy_server_options {
	const char *listen_address; /* numeric IPv4 or IPv6 */
	int port;                   /* 0: ephemeral (see proxy_server_port) */
	long max_sessions;           /* authenticated sessions */
	/* Unauthenticated connections, as OpenSSH's MaxStartups start:rate:full:
	 * from startups_begin on, each new connection makes a random early drop
	 * of the oldest unauthenticated one with probability startups_rate%,
	 * rising linearly to 100% at startups_full (the newcomer is kept: an idle
	 * holder is the likelier attacker, a real client authenticates in
	 * milliseconds). 0s: defaults. */
	long startups_begin, startups_rate, startups_full;
	long startups_per_source;    /* unauthenticated connections per address */
	long max_sessions_per_key;   /* default for keys without nrbc-max-sessions */
	/* Bytes all bridged channels may buffer together before they stop
	 * reading (0: no limit). */
	size_t buffer_budget;
	const char *client_user;     /* the user name clients log in as */
	uint64_t login_grace_ms;
	uint64_t builder_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t builder_lost_wait_ms;
	uint64_t keepalive_interval_ms; /* both legs; 0: none */
	int keepalive_count;
	int max_auth_tries;
	const char *remote_user;
	size_t builder_spares;       /* connections made ahead (proxy_spares.h); 0: none */
};

/* Parses "start:rate:full" (or "full") into opts; -1 when malformed. */
int proxy_server_parse_startups(const char *text, struct proxy_server_options *opts);

/* keys and policy must outlive the server. NULL with *err (heap). */
struct proxy_server *proxy_server_create(uv_loop_t *loop, const struct proxy_server_options *opts,
    const struct proxy_keys *keys, const struct proxy_command_policy *policy,
    struct metrics *metrics, char **err);
/* The events a builder backend must be created with (data: the server). */
const struct proxy_builder_events *proxy_server_builder_events(void);
/* Must be set before the loop runs; the server does not own it. */
void proxy_server_set_builder(struct proxy_server *srv, struct proxy_builder *builder);

int proxy_server_port(const struct proxy_server *srv);
size_t proxy_server_session_count(const struct proxy_server *srv);
/* Stops accepting (the listener closes); live sessions go on. idle_now
 * also closes sessions that are not running a command. */
void proxy_server_drain(struct proxy_server *srv, bool idle_now);
bool proxy_server_is_draining(const struct proxy_server *srv);
/* Closes every session with reason. */
void proxy_server_close_all(struct proxy_server *srv, const char *reason);
/* Called when the last session is gone while draining. */
void proxy_server_on_drained(struct proxy_server *srv, void (*cb)(void *data), void *data);
/* Closes the listener and all sessions; memory goes after the loop runs.
 * Accepts NULL. */
void proxy_server_destroy(struct proxy_server *srv);

#endif
