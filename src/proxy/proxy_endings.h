/* The ends of NixBuildRequests: a finished session's outcome recorded in
 * the request's status (for `kubectl get nbr`, and for the controller,
 * which frees the builder slot on it), then the request deleted. Both are
 * API writes that can fail (an API outage, a refusal while RBAC is being
 * changed); each is tried again, 0.5 s doubling to 30 s, until it lands.
 * Only destroying the queue (the proxy's stop, at its shutdown deadline)
 * gives up on what is left, with one log line per request. */
#ifndef NRBC_PROXY_ENDINGS_H
#define NRBC_PROXY_ENDINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct kube_client;
struct metrics;
struct proxy_endings;

/* client must outlive the queue. NULL when out of memory. */
struct proxy_endings *proxy_endings_create(uv_loop_t *loop, struct kube_client *client,
    const char *namespace);
/* Records Completed (ok) or Failed with message on name's status, then
 * deletes name. 0, or -1 when out of memory (nothing queued). A name
 * already queued keeps its first end. */
int proxy_endings_finish(struct proxy_endings *e, const char *name, bool ok,
    const char *message);
/* The same, with the payload bytes the session moved each way (status
 * bytesUp, bytesDown). */
int proxy_endings_finish_bytes(struct proxy_endings *e, const char *name, bool ok,
    const char *message, uint64_t bytes_up, uint64_t bytes_down);
/* Deletes name, with no outcome to record (nothing ran there, or nobody
 * holds it). 0 or -1 as above. */
int proxy_endings_delete(struct proxy_endings *e, const char *name);
/* Whether name's end is queued (not yet landed). */
bool proxy_endings_holds(const struct proxy_endings *e, const char *name);
/* Ends queued, in flight or waiting to be tried again. */
size_t proxy_endings_count(const struct proxy_endings *e);
/* Registers nrbc_proxy_request_ends_pending (gauge) and
 * nrbc_proxy_request_end_failures_total (counter) in m. */
void proxy_endings_set_metrics(struct proxy_endings *e, struct metrics *m);
/* cb(data) each time the count drops to 0. It may run inside a reply of
 * the Kubernetes client: it must not destroy the queue there. */
void proxy_endings_on_empty(struct proxy_endings *e, void (*cb)(void *data), void *data);
/* Cancels the writes in flight and logs each end given up. Accepts NULL. */
void proxy_endings_destroy(struct proxy_endings *e);

#endif
