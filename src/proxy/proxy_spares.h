/* Builder connections made ahead. Nix's build hook opens its sessions one
 * at a time, each waiting for the last to be set up, so the proxy's own
 * connect (TCP, SSH handshake, authentication: about a sixth of a
 * session's setup) holds up every derivation behind it. When sessions reach
 * one builder in a burst (a second within the spare lifetime of the
 * first), one authenticated connection to it is kept ready for the next;
 * a session that finds one takes it and a new one is made behind it.
 *
 * A spare is one builder's: it is found only by the same address, port,
 * user and pinned host key the session was given for its builder, and a
 * builder's host key is its own. Unused, it is closed after the spare
 * lifetime, well within the builders' sshd ClientAliveInterval, so it
 * never needs keepalives of its own. */
#ifndef NRBC_PROXY_SPARES_H
#define NRBC_PROXY_SPARES_H

#include <stdint.h>

#include <uv.h>

#include "proxy_upstream.h"

struct proxy_spares;

struct metric;

/* lifetime_ms: how long an unused spare is kept, and how close two
 * connects to a builder must be for it to get one. max: spares at most
 * (0: none are made). made, taken: counters (may be NULL). NULL on failure. */
struct proxy_spares *proxy_spares_create(uv_loop_t *loop, uint64_t lifetime_ms, size_t max,
    struct metric *made, struct metric *taken);
/* Closes every spare; memory goes after the uv close callbacks. Accepts NULL. */
void proxy_spares_destroy(struct proxy_spares *sp);

/* A READY connection to the builder of opts, now the caller's (with
 * events, data and opts' keepalives), or NULL when there is none. Accepts
 * NULL. */
struct proxy_upstream *proxy_spares_take(struct proxy_spares *sp, uint64_t session_id,
    const struct proxy_upstream_options *opts, const struct proxy_upstream_events *events,
    void *data);
/* A session is connected to the builder of opts (with a spare or its own
 * connection): the second within the lifetime makes a spare for the next.
 * Only connections that worked count, so a builder that takes none is never
 * connected to more than the sessions do. Accepts NULL. */
void proxy_spares_connected(struct proxy_spares *sp, const struct proxy_upstream_options *opts);

#endif
