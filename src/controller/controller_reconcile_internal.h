/* The reconciler's own data, which its parts share: the dispatcher and
 * lifecycle (controller_reconcile.c), the op runtime
 * (controller_reconcile_op.c), the writes (controller_reconcile_write.c)
 * and the builder passes (controller_builder_pass.c). Definitions only, no
 * functions: each part's functions are in its own header, so this header
 * adds no calls between the files that include it. Everyone else sees
 * controller_reconcile.h. */
#ifndef NRBC_CONTROLLER_RECONCILE_INTERNAL_H
#define NRBC_CONTROLLER_RECONCILE_INTERNAL_H

#include "controller_reconcile.h"
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
	struct metric *usage_writes;
	struct metric *usage_sessions_unseen;
};

struct controller_builders;
struct usage_ledger;
struct reconcile_op;
struct reconcile_state_table;

struct controller_reconciler {
	struct kube_client *client;
	uv_loop_t *loop;
	struct kube_informer *requests;
	struct kube_informer *pods;
	struct kube_informer *builder_cache;
	struct kube_informer *classes;
	struct kube_informer *usages;   /* NixUsages; NULL: no usage written */
	struct usage_ledger *ledger;
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

#endif
