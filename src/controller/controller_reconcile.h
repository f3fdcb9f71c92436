/* Level-based reconciliation of one NixBuildRequest from the informer
 * caches: make its builder pod when it has none, bring its status up to
 * date, delete its pod once it is Completed or Failed (or gone). Running it
 * again on the same caches changes nothing. */
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
	/* Idle, Ready pods kept in pool_namespace for requests to claim;
	 * 0 (or no namespace) turns the pool off. */
	long warm_pool_size;
	const char *pool_namespace;
};

/* The queue key of the pool pass (not a valid "ns/name"). */
#define CONTROLLER_POOL_KEY "@pool"

struct controller_reconciler;

/* requests and pods are the informers whose caches are read; events may be
 * NULL; metrics may be NULL. All must outlive the reconciler. */
struct controller_reconciler *controller_reconciler_create(struct kube_client *c,
    struct kube_informer *requests, struct kube_informer *pods,
    struct kube_event_recorder *events, const struct controller_reconcile_options *o,
    struct metrics *metrics);
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

/* "ns/name" of the NixBuildRequest that controls pod, or NULL. Heap. */
char *controller_reconciler_pod_key(const json_t *pod);

#endif
