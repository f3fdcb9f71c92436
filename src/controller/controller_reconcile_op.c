#include "controller_reconcile_op.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controller_reconcile_internal.h"

int64_t reconcile_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool reconcile_being_deleted(const json_t *obj)
{
	return json_object_get(json_object_get(obj, "metadata"), "deletionTimestamp") != NULL;
}

struct reconcile_op *reconcile_op_create(struct controller_reconciler *r, struct kube_queue *q,
    const char *key, json_t *nbr, const struct kube_resource *resource)
{
	struct reconcile_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->key = strdup(key);
	if (!op->key) {
		free(op);
		return NULL;
	}
	op->r = r;
	op->q = q;
	op->nbr = json_incref(nbr);
	op->resource = resource;
	op->next = r->ops;
	if (r->ops)
		r->ops->prev = op;
	r->ops = op;
	r->in_flight++;
	return op;
}

static void op_free(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;

	if (op->prev)
		op->prev->next = op->next;
	else
		r->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	r->in_flight--;
	json_decref(op->nbr);
	controller_hostkey_finish(&op->host_key);
	free(op->host_key_write.ns);
	free(op->host_key_write.secret);
	free(op->builder_key);
	free(op->key);
	free(op);
}

void reconcile_op_finish(struct reconcile_op *op, enum kube_queue_result result,
    uint64_t recheck_ms)
{
	struct kube_queue *q = op->q;
	struct controller_reconciler *r = op->r;
	char *key = op->key;

	op->key = NULL;
	if (result == KUBE_QUEUE_RETRY)
		metric_add(r->m.errors, 1);
	op_free(op);
	kube_queue_done(q, key, result);
	if (recheck_ms && result == KUBE_QUEUE_FORGET)
		kube_queue_add_after(q, key, recheck_ms);
	free(key);
}

void reconcile_ops_cancel(struct controller_reconciler *r)
{
	while (r->ops) {
		struct reconcile_op *op = r->ops;

		if (op->request)
			kube_client_cancel(r->client, op->request);
		op_free(op);
	}
}
