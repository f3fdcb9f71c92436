/* Level-based reconciliation from the informer caches. A NixBuildRequest
 * with an identity is bound to a NixBuilder of that identity (reused,
 * claimed from the warm pool, or made) and mirrors its pod; one without
 * gets a pod of its own, deleted once it is Completed or Failed (or gone).
 * A NixBuilder gets its pod, a status with its session count, and is
 * deleted after the idle timeout. Running a pass again on the same caches
 * changes nothing. */
#ifndef NRBC_CONTROLLER_RECONCILE_H
#define NRBC_CONTROLLER_RECONCILE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "controller_pod.h"
#include "kube/kube_client.h"
#include "kube/kube_event.h"
#include "kube/kube_informer.h"
#include "kube/kube_queue.h"
#include "metrics.h"

struct controller_reconcile_options {
	struct controller_pod_options pod;
	uint64_t unschedulable_timeout_ms;
	/* Unclaimed builders kept in pool_namespace for new identities to
	 * claim; 0 (or no namespace) turns the pool off. */
	long warm_pool_size;
	const char *pool_namespace;
	/* Sessions one NixBuilder serves at once. */
	long builder_slots;
	/* Builders of one class one identity may hold at once; 0: no bound. */
	long max_builders_per_identity;
	/* An identity's builder with no session is deleted after this. */
	uint64_t builder_idle_timeout_ms;
	/* A request whose identity's builders are all full waits this long
	 * for a slot before another builder is started. */
	uint64_t builder_scale_out_wait_ms;
	/* While an identity has builders, its NixUsage is brought up to date
	 * at least this often (their time runs). */
	uint64_t usage_interval_ms;
	/* Builders of all classes one identity may hold at once (0: no
	 * quota); a NixUsage's spec.maxBuilders overrides. A session that
	 * would need one more is refused (QuotaExceeded). */
	long quota_max_builders;
};

/* The queue key of the pool pass (not a valid "ns/name"). */
#define CONTROLLER_POOL_KEY "@pool"

struct controller_reconciler;

/* The informers whose caches the reconciler reads. */
struct controller_reconcile_caches {
	struct kube_informer *requests;
	struct kube_informer *pods;
	struct kube_informer *builders;
	struct kube_informer *classes; /* NixBuilderClasses; NULL: every class is unknown */
	struct kube_informer *usages;  /* NixUsages; NULL: usage is counted, never written */
};

/* events may be NULL; metrics may be NULL. The informers, events and
 * metrics must outlive the reconciler. */
struct controller_reconciler *controller_reconciler_create(struct kube_client *c,
    const struct controller_reconcile_caches *caches, struct kube_event_recorder *events,
    const struct controller_reconcile_options *o, struct metrics *metrics);
/* Cancels reconciles in flight (their keys are never marked done). */
void controller_reconciler_destroy(struct controller_reconciler *r);

/* The kube_queue process callback (data: the reconciler). */
void controller_reconcile(struct kube_queue *q, const char *key, void *data);
size_t controller_reconciler_in_flight(const struct controller_reconciler *r);

/* Informer bookkeeping, called from the event handlers. */
void controller_reconciler_request_seen(struct controller_reconciler *r, const json_t *obj);
void controller_reconciler_request_gone(struct controller_reconciler *r, const json_t *obj);
/* A pod event: settles the expectation a create left behind. */
void controller_reconciler_pod_seen(struct controller_reconciler *r, const json_t *pod,
    bool deleted);
/* A NixBuilder event: keeps the builder table in step with the cache. */
void controller_reconciler_builder_seen(struct controller_reconciler *r, const json_t *obj,
    bool deleted);

/* The queue keys a pod event concerns: its request's, or its builder's
 * pass and those of the requests the builder serves. */
void controller_reconciler_keys_for_pod(struct controller_reconciler *r, const json_t *pod,
    void (*add)(const char *key, void *data), void *data);
/* The same for a builder given as "ns/name". */
void controller_reconciler_keys_for_builder_key(struct controller_reconciler *r,
    const char *builder_key, void (*add)(const char *key, void *data), void *data);

/* Usage (controller_usage_pass.h). Call only while reconciling (the
 * leader): a request's update or delete; a session that ends (a move into
 * Completed or Failed, or a deletion before either was seen) is counted
 * for its identity and builder, and add gets the usage key to queue. */
void controller_reconciler_request_ended(struct controller_reconciler *r, const json_t *old_obj,
    const json_t *obj, bool deleted, void (*add)(const char *key, void *data), void *data);
/* The usage keys of every cached NixUsage and of every identity with
 * something unwritten. reseed (leadership won): the builders' totals are
 * read again from the cache, where another leader may have written. */
void controller_reconciler_usage_keys(struct controller_reconciler *r, bool reseed,
    void (*add)(const char *key, void *data), void *data);

/* "ns/name" of the NixBuildRequest that controls pod, or NULL. Heap. */
char *controller_reconciler_pod_key(const json_t *pod);

#endif
