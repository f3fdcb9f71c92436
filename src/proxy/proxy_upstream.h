/* The proxy's SSH connection to one builder: libssh2, non-blocking, on a
 * socket watched by a uv_poll. CONNECTING -> HANDSHAKE -> AUTH -> READY, with
 * the builder's host key checked between handshake and auth. A builder that
 * ends the connection before its SSH banner (sshd shedding load past
 * MaxStartups) is tried again on a new connection, three attempts in all
 * (HANDSHAKE -> RETRY_WAIT -> CONNECTING); nothing has run on it by then.
 *
 * Channels on the connection belong to proxy_bridge; this module arbitrates
 * the one rule libssh2's non-blocking mode imposes on several channels: once
 * a call returns EAGAIN with a packet half-sent, that same call must be
 * repeated before anything else may send on the session. Callers name each
 * of their operations by an address (op) and ask proxy_upstream_may_call()
 * first, then report the result with proxy_upstream_after().
 *
 * Once READY, a builder that stops answering (its node gone, its processes
 * frozen) is found by keepalive requests after each interval of silence:
 * silent for interval x count while the bridge reads, the connection fails.
 * TCP keepalive and TCP_USER_TIMEOUT find a peer whose kernel is gone. */
#ifndef NRBC_PROXY_UPSTREAM_H
#define NRBC_PROXY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <libssh2.h>
#include <uv.h>

struct proxy_keys;
struct proxy_upstream;

struct proxy_upstream_events {
	/* Authenticated; channels may be opened. */
	void (*ready)(void *data);
	/* The connection failed or was lost; message for the Nix user. Nothing
	 * follows; destroy the upstream. */
	void (*failed)(void *data, const char *message);
	/* The socket has an event while READY: run the channels. */
	void (*io)(void *data);
};

struct proxy_upstream_options {
	const char *host;              /* numeric IP address */
	int port;
	const char *user;
	const struct proxy_keys *keys; /* must outlive the upstream */
	/* The one host key this builder may present ("type base64"), from
	 * what the controller recorded when it made the builder's key; NULL
	 * or "": the shared builder host key of keys. Copied. */
	const char *host_key;
	uint64_t keepalive_interval_ms; /* 0: no keepalives */
	int keepalive_count;
};

struct proxy_upstream *proxy_upstream_create(uv_loop_t *loop, uint64_t session_id,
    const struct proxy_upstream_options *opts, const struct proxy_upstream_events *events,
    void *data);
/* Best-effort disconnect; memory goes after the uv close callback. Accepts NULL. */
void proxy_upstream_destroy(struct proxy_upstream *u);

/* Hands a connection made for nobody in particular (proxy_spares) to its
 * owner: events and data are the owner's from now on, the log names
 * session_id, and keepalives start as the owner's options say. */
void proxy_upstream_adopt(struct proxy_upstream *u, uint64_t session_id,
    const struct proxy_upstream_events *events, void *data, uint64_t keepalive_interval_ms,
    int keepalive_count);

bool proxy_upstream_is_ready(const struct proxy_upstream *u);
/* READY and its TCP connection still established as far as this kernel
 * knows (no FIN or RST from the builder): for a connection nobody has
 * read for a while. */
bool proxy_upstream_is_open(const struct proxy_upstream *u);
LIBSSH2_SESSION *proxy_upstream_session(const struct proxy_upstream *u);

/* May op call libssh2 now? False while another op has a half-sent packet. */
bool proxy_upstream_may_call(const struct proxy_upstream *u, const void *op);
/* Report what op's libssh2 call returned; returns rc. */
int proxy_upstream_after(struct proxy_upstream *u, const void *op, int rc);
/* Channel opens share one state in libssh2: one opener at a time. */
bool proxy_upstream_claim_open(struct proxy_upstream *u, const void *owner);
void proxy_upstream_release_open(struct proxy_upstream *u, const void *owner);

/* Re-arms the poll: readable when want_read (someone will consume what
 * arrives), writable when a half-sent packet waits. */
void proxy_upstream_update_poll(struct proxy_upstream *u, bool want_read);

/* The connection failed before the builder took it (refused, reset, dropped
 * before its banner): nothing ran there, another builder may be asked. */
bool proxy_upstream_unreachable(const struct proxy_upstream *u);

/* libssh2's last error text for messages. */
const char *proxy_upstream_error(const struct proxy_upstream *u);

#endif
