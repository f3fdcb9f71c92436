/* What the reconciler's passes share: the reconciler itself, the op that
 * carries one pass across its API calls, and the steps every pass ends
 * with. Only controller_reconcile*.c and controller_builder_pass.c include
 * this; everyone else sees controller_reconcile.h. */
#ifndef NRBC_CONTROLLER_RECONCILE_INTERNAL_H
#define NRBC_CONTROLLER_RECONCILE_INTERNAL_H

#include "controller_builders.h"
#include "controller_reconcile.h"
#include "controller_hostkey.h"
#include "controller_status.h"

/* A pod or builder we created counts as existing until its informer shows
 * it (or its deletion), however late. Kubernetes' controllers give up on
 * such expectations after 5 minutes; so do we. */
#define EXPECTATION_TTL_MS (5 * 60 * 1000)

struct controller_metrics {
	struct metric *reconciles;
	struct metric *errors;
	struct metric *pods_created;
	struct metric *pods_deleted;
	struct metric *status_writes;
	struct metric *conflicts;
	struct metric *phase[CONTROLLER_PHASE_COUNT];
	struct metric *pod_created_seconds;
	struct metric *running_seconds;
	struct metric *pool_idle;
	struct metric *pool_claims;
	struct metric *builders_created;
	struct metric *builders_deleted;
	struct metric *binds_reused;
	struct metric *binds_new;
	struct metric *builders;
	struct metric *sessions;
};

struct reconcile_state_table;
struct reconcile_op;

struct controller_reconciler {
	struct kube_client *client;
	uv_loop_t *loop;
	struct kube_informer *requests;
	struct kube_informer *pods;
	struct kube_informer *builder_cache;
	struct kube_event_recorder *events;
	struct controller_reconcile_options opts;
	struct controller_metrics m;
	struct reconcile_state_table *states;
	struct reconcile_op *ops;
	size_t in_flight;
	struct controller_builders *builders;
	size_t pool_creating;   /* pool builder creates in flight */
	char default_class[16];
};

/* Builder passes (controller_builder_pass.c). */
void reconcile_builder(struct reconcile_op *op);
void reconcile_pool(struct reconcile_op *op);
/* The pass of a request with an identity: bind it to a builder (reusing,
 * claiming or creating one) and mirror that builder's pod in its status. */
void reconcile_identity_request(struct reconcile_op *op);
/* Request keys are "ns/name"; builder keys carry this prefix, which no
 * namespace name can start with. */
#define BUILDER_KEY_PREFIX "nbd:"
/* The queue key of a builder's pass. Heap string. */
char *reconcile_builder_queue_key(const char *builder_key);
/* Queues the passes of every request builder b serves. */
void reconcile_enqueue_served(struct controller_reconciler *r, struct kube_queue *q,
    const struct controller_builder *b);

#endif
