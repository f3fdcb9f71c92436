#include "controller_reconcile_write.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "controller_reconcile_internal.h"
#include "controller_reconcile_op.h"
#include "controller_reconcile_state.h"
#include "json_field.h"
#include "log.h"

/* ---------- events ---------- */

void reconcile_record_event(struct controller_reconciler *r, const json_t *obj,
    const struct kube_resource *resource, bool warning, const char *reason,
    const char *message)
{
	if (r->events)
		kube_event_record(r->events, obj, resource,
		    warning ? KUBE_EVENT_WARNING : KUBE_EVENT_NORMAL, reason, message);
}

/* ---------- status ---------- */

static void on_status_written(const struct kube_response *resp, void *data);

static void write_status(struct reconcile_op *op, struct controller_status_result *res)
{
	struct controller_reconciler *r = op->r;
	json_t *body = json_deep_copy(op->nbr);

	if (!body || json_object_set(body, "status", res->status) < 0) {
		json_decref(body);
		controller_status_result_finish(res);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->request = kube_update_status(r->client, op->resource,
	    kube_object_namespace(op->nbr), kube_object_name(op->nbr), body, on_status_written, op);
	json_decref(body);
	controller_status_result_finish(res);
	if (!op->request)
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

void reconcile_apply_status(struct reconcile_op *op, struct controller_status_result *res)
{
	if (!res->changed) {
		uint64_t recheck = res->recheck_ms;

		controller_status_result_finish(res);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, recheck);
		return;
	}
	write_status(op, res);
}

/* What a status write that went through means for a request: its own
 * write is stale in the cache until the watch brings it, and a new phase is
 * a transition to count, log and record. */
static void request_status_written(struct reconcile_op *op, const json_t *written)
{
	struct controller_reconciler *r = op->r;
	const json_t *old = json_object_get(op->nbr, "status");
	const json_t *st = json_object_get(written, "status");
	const char *new_phase = json_field_str(st, "phase");
	const char *new_reason = json_field_str(st, "reason");
	struct reconcile_state *s = reconcile_state_get(r->states, op->key,
	    kube_object_uid(op->nbr), uv_now(r->loop));
	enum controller_phase phase = controller_phase_of(written);

	if (s) {
		/* Until the informer catches up, the cache holds the version
		 * this write replaced: passes on it would only conflict. */
		free(s->stale_rv);
		s->stale_rv = strdup(kube_object_resource_version(op->nbr));
	}
	if (strcmp(json_field_str(old, "phase"), new_phase) == 0 &&
	    strcmp(json_field_str(old, "reason"), new_reason) == 0)
		return;
	log_info("nbr=%s: %s => %s (%s): %s", op->key,
	    *json_field_str(old, "phase") ? json_field_str(old, "phase") : "Pending", new_phase,
	    new_reason, json_field_str(st, "message"));
	if (strcmp(json_field_str(old, "phase"), new_phase) != 0)
		metric_add(r->m.phase[phase], 1);
	reconcile_record_event(r, written, &kube_resource_nixbuildrequests,
	    phase == CONTROLLER_PHASE_FAILED ||
	    strcmp(new_reason, CONTROLLER_REASON_UNSCHEDULABLE) == 0, new_reason,
	    json_field_str(st, "message"));
	if (phase == CONTROLLER_PHASE_RUNNING && s && !s->running_timed) {
		s->running_timed = true;
		metric_observe(r->m.running_seconds,
		    (double)(uv_now(r->loop) - s->first_seen) / 1000.0);
	}
}

static void builder_status_written(struct reconcile_op *op, const json_t *written)
{
	const json_t *old = json_object_get(op->nbr, "status");
	const json_t *st = json_object_get(written, "status");

	if (strcmp(json_field_str(old, "phase"), json_field_str(st, "phase")) == 0 &&
	    strcmp(json_field_str(old, "reason"), json_field_str(st, "reason")) == 0)
		return;
	log_info("builder=%s/%s: %s => %s (%s): %s", kube_object_namespace(written),
	    kube_object_name(written), *json_field_str(old, "phase") ?
	    json_field_str(old, "phase") : "Pending", json_field_str(st, "phase"),
	    json_field_str(st, "reason"), json_field_str(st, "message"));
	reconcile_record_event(op->r, written, &kube_resource_nixbuilders,
	    strcmp(json_field_str(st, "phase"), "Failed") == 0, json_field_str(st, "reason"),
	    json_field_str(st, "message"));
}

static void on_status_written(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;

	op->request = 0;
	if (resp->status == 404) {
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (resp->status == 409) {
		metric_add(r->m.conflicts, 1);
		log_debug("%s: status conflict, retrying", op->key);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (resp->status != 200 || !json_is_object(resp->body)) {
		log_error("%s: status update failed: HTTP %ld %s %s", op->key, resp->status,
		    resp->reason, resp->message);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	metric_add(r->m.status_writes, 1);
	if (op->resource == &kube_resource_nixbuildrequests)
		request_status_written(op, resp->body);
	else
		builder_status_written(op, resp->body);
	/* A terminal phase we just wrote: the next pass (on the watch event)
	 * deletes the pod. A pending recheck (unschedulable) comes from the
	 * status we computed, which the next pass recomputes anyway. */
	reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
}

void reconcile_set_status(struct reconcile_op *op, enum controller_phase phase,
    const char *reason, const char *message, enum kube_queue_result on_same)
{
	struct controller_status_result res;

	if (controller_status_set(op->nbr, phase, reason, message, reconcile_wall_ms(), &res) < 0) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (!res.changed) {
		controller_status_result_finish(&res);
		reconcile_op_finish(op, on_same, 0);
		return;
	}
	write_status(op, &res);
}

/* ---------- pod delete ---------- */

static void on_pod_deleted(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;

	op->request = 0;
	/* 404: gone already; 409: the uid precondition failed, so the pod
	 * with that name is a newer one, not ours to delete. */
	if (kube_delete_done(resp, true)) {
		if (resp->status < 300)
			metric_add(op->r->m.pods_deleted, 1);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	log_error("nbr=%s: deleting its pod failed: HTTP %ld %s", op->key, resp->status,
	    resp->message);
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

void reconcile_delete_pod(struct reconcile_op *op, const json_t *pod, const char *why)
{
	struct controller_reconciler *r = op->r;

	log_info("nbr=%s: deleting pod %s: %s", op->key, kube_object_name(pod), why);
	if (op->nbr)
		reconcile_record_event(r, op->nbr, op->resource, false, "BuilderDeleted", why);
	op->request = kube_delete(r->client, &kube_resource_pods, kube_object_namespace(pod),
	    kube_object_name(pod), kube_object_uid(pod), "Background", on_pod_deleted, op);
	if (!op->request)
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}
