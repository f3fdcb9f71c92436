/* The passes of reusable builders, as the dispatcher (controller_reconcile.c)
 * calls them: a request with an identity, a NixBuilder, the warm pool. Each
 * takes a started op and finishes it, now or when the API answers. */
#ifndef NRBC_CONTROLLER_BUILDER_PASS_H
#define NRBC_CONTROLLER_BUILDER_PASS_H

struct reconcile_op;

/* Request keys are "ns/name"; builder keys carry this prefix, which no
 * namespace name can start with. */
#define BUILDER_KEY_PREFIX "nbd:"
/* The queue key of a builder's pass (builder_key: "ns/name"). Heap string. */
char *reconcile_builder_queue_key(const char *builder_key);

/* The pass of a request with an identity: bind it to a builder (reusing,
 * claiming or creating one) and mirror that builder's pod in its status. */
void reconcile_identity_request(struct reconcile_op *op);
/* A NixBuilder's pass (op->key: BUILDER_KEY_PREFIX "ns/name"): its pod, its
 * status, its deletion when idle or failed. */
void reconcile_builder(struct reconcile_op *op);
/* The pool pass (CONTROLLER_POOL_KEY): one create or delete towards
 * --warm-pool-size unclaimed builders. */
void reconcile_pool(struct reconcile_op *op);

#endif
