/* The writes every pass ends with: a status (written only when it changed,
 * with optimistic concurrency: a 409 retries the pass), a pod deleted by
 * uid, and an Event. Each write but the Event finishes the pass when its
 * answer comes. A status write that lands is logged, counted and recorded
 * as an Event when it changed the phase or reason. Below the passes: it
 * calls none of them. */
#ifndef NRBC_CONTROLLER_RECONCILE_WRITE_H
#define NRBC_CONTROLLER_RECONCILE_WRITE_H

#include <jansson.h>
#include <stdbool.h>

#include "controller_status.h"
#include "kube/kube_client.h"
#include "kube/kube_queue.h"

struct controller_reconciler;
struct reconcile_op;

/* An Event about obj (of resource), when the reconciler has a recorder. */
void reconcile_record_event(struct controller_reconciler *r, const json_t *obj,
    const struct kube_resource *resource, bool warning, const char *reason,
    const char *message);
/* Writes res->status to op->nbr's status subresource (op->resource) when it
 * changed, then finishes the pass. Takes res. */
void reconcile_apply_status(struct reconcile_op *op, struct controller_status_result *res);
/* Moves op->nbr to phase with reason and message (a decision made without
 * a pod); on_same finishes the pass when nothing changes. */
void reconcile_set_status(struct reconcile_op *op, enum controller_phase phase,
    const char *reason, const char *message, enum kube_queue_result on_same);
/* Deletes pod (uid precondition) and finishes the pass. */
void reconcile_delete_pod(struct reconcile_op *op, const json_t *pod, const char *why);

#endif
