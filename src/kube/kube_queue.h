/* A work queue keyed by string ("namespace/name"): adding a key that is
 * already queued is a no-op; a key is never processed twice at once; a key
 * added while it is being processed is processed again afterwards; failures
 * retry with per-key exponential backoff. */
#ifndef NRBC_KUBE_QUEUE_H
#define NRBC_KUBE_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct kube_queue;

/* process is called from the loop (never inside kube_queue_add) for one
 * key at a time per key; it must later call kube_queue_done (possibly from
 * an async callback). key stays valid until then. */
typedef void (*kube_queue_process_cb)(struct kube_queue *q, const char *key, void *data);

/* max_in_flight bounds how many keys are processed at once. Backoff starts
 * at base_ms and doubles per failure up to max_ms. */
struct kube_queue *kube_queue_create(uv_loop_t *loop, size_t max_in_flight, uint64_t base_ms,
    uint64_t max_ms, kube_queue_process_cb process, void *data);
/* Closes timers; memory goes in close callbacks. Accepts NULL. */
void kube_queue_destroy(struct kube_queue *q);

void kube_queue_add(struct kube_queue *q, const char *key);
void kube_queue_add_after(struct kube_queue *q, const char *key, uint64_t delay_ms);

enum kube_queue_result {
	KUBE_QUEUE_FORGET,  /* success: reset the key's backoff */
	KUBE_QUEUE_RETRY,   /* failure: requeue after the key's next backoff */
};
void kube_queue_done(struct kube_queue *q, const char *key, enum kube_queue_result result);

/* Stops handing out keys (for shutdown); queued keys stay. */
void kube_queue_pause(struct kube_queue *q);
size_t kube_queue_depth(const struct kube_queue *q);
size_t kube_queue_in_flight(const struct kube_queue *q);

#endif
