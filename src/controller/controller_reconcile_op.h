/* The op: one reconcile pass carried across its API calls. A pass begins
 * with reconcile_op_create and ends with reconcile_op_finish, the one place
 * its key goes back to the queue; the reconciler keeps its ops in a list so
 * that its destroy can cancel their requests. This is the lowest layer of
 * the passes: it calls none of them. */
#ifndef NRBC_CONTROLLER_RECONCILE_OP_H
#define NRBC_CONTROLLER_RECONCILE_OP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "controller_hostkey.h"
#include "kube/kube_client.h"
#include "kube/kube_queue.h"

/* A pod with our name that belongs to an older owner of the same name (a
 * request or builder deleted and made again): the garbage collector removes
 * it; both passes look again after this. */
#define FOREIGN_POD_RECHECK_MS 1000

struct controller_reconciler;

/* One pass waiting for the API. It owns its request until the callback;
 * destroy cancels that request, so the callback never sees a freed op.
 * Defined here rather than opaque: the passes keep their own step's data
 * in it (builder_key, host_key) and read the rest. */
struct reconcile_op {
	struct controller_reconciler *r;
	struct kube_queue *q;
	char *key;
	uint64_t request;
	/* The object as cached when the pass began: a NixBuildRequest, or a
	 * NixBuilder in a builder pass (resource says which). */
	json_t *nbr;
	const struct kube_resource *resource;
	char *builder_key;      /* a builder create or claim: which one */
	size_t usage_live;      /* a usage pass: the identity's live builders */
	/* A builder pod's host key: the key pair the Secret and then the pod get. */
	struct controller_hostkey host_key;
	struct reconcile_host_key_write {    /* controller_hostkey_write's step */
		char *ns, *secret;
		const char *owner_kind;
		void (*then)(struct reconcile_op *op, const char *secret);
	} host_key_write;
	struct reconcile_op *prev, *next;
};

/* A pass of key over nbr (a reference is taken; NULL when the cache has
 * no object), counted in r's ops in flight. NULL when out of memory: the
 * caller hands the key back itself. */
struct reconcile_op *reconcile_op_create(struct controller_reconciler *r, struct kube_queue *q,
    const char *key, json_t *nbr, const struct kube_resource *resource);
/* Ends a pass: the one place a key is handed back to the queue. Frees op;
 * recheck_ms (with KUBE_QUEUE_FORGET) queues the key again that much later. */
void reconcile_op_finish(struct reconcile_op *op, enum kube_queue_result result,
    uint64_t recheck_ms);
/* Cancels the request of every op in flight and frees the ops, without
 * handing their keys back (for the reconciler's destroy). */
void reconcile_ops_cancel(struct controller_reconciler *r);

/* Wall-clock ms (status times are wall-clock; the loop's clock is not). */
int64_t reconcile_wall_ms(void);
/* obj has a deletionTimestamp. */
bool reconcile_being_deleted(const json_t *obj);

#endif
