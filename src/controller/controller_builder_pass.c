/* The passes of reusable builders: binding a request with an identity to a
 * NixBuilder (reuse one with a free slot, claim one from the warm pool, or
 * make one), a NixBuilder's own pass (its pod, its status, its idle
 * deletion) and the pool pass (keeps --warm-pool-size unclaimed builders).
 *
 * Who owns what: a NixBuilder controls its pod (ownerReference), so the
 * pod lives as long as the builder, not as long as one request. Requests
 * name their builder in status.builder; the builder table (in memory,
 * rebuilt from the caches after a restart) says which requests each
 * builder serves. Deleting the CRDs (uninstall) deletes every NixBuilder,
 * and the garbage collector then deletes their pods. */
#include "controller_builder_pass.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "controller_builder.h"
#include "controller_builders.h"
#include "controller_class.h"
#include "controller_hostkey_write.h"
#include "controller_pod.h"
#include "controller_reconcile_internal.h"
#include "controller_reconcile_op.h"
#include "controller_reconcile_state.h"
#include "controller_reconcile_write.h"
#include "controller_slim.h"
#include "controller_usage.h"
#include "controller_usage_ledger.h"
#include "json_field.h"
#include "log.h"

/* A claim in flight for the same identity: look again this soon. */
#define CLAIM_WAIT_MS 5
/* Waiting for a slot of a full builder: look again this often. */
#define SLOT_WAIT_STEP_MS 20
/* How long past the scale-out wait a request waits for a slot or for the
 * builder started for it to be Ready, before it binds to that builder. */
#define SPARE_PATIENCE_MS 3000
/* How often a request of an identity at its builder bound looks for a slot. */
#define BOUND_WAIT_STEP_MS 100

char *reconcile_builder_queue_key(const char *builder_key)
{
	return str_printf("%s%s", BUILDER_KEY_PREFIX, builder_key);
}

static void enqueue_builder(struct reconcile_op *op, const struct controller_builder *b)
{
	char *qkey = reconcile_builder_queue_key(controller_builder_key(b));

	if (qkey)
		kube_queue_add(op->q, qkey);
	free(qkey);
}

/* Queues the passes of every request builder b serves. */
static void enqueue_served(struct kube_queue *q, const struct controller_builder *b)
{
	for (size_t i = 0; i < controller_builder_sessions(b); i++)
		kube_queue_add(q, controller_builder_request(b, i));
}

static void update_gauges(struct controller_reconciler *r)
{
	metric_set(r->m.builders, (double)controller_builders_count(r->builders));
	metric_set(r->m.sessions, (double)controller_builders_sessions_total(r->builders));
	if (r->opts.pool_namespace)
		metric_set(r->m.pool_idle, (double)controller_builders_pool_size(r->builders,
		    r->opts.pool_namespace, r->default_class));
}

/* "ns/name" of the builder a builder pass is about. */
static const char *builder_key_of(const struct reconcile_op *op)
{
	return op->key + strlen(BUILDER_KEY_PREFIX);
}

/* The builder's pod: from the cache when it is the builder's, else the one
 * we created and the cache has not shown yet. */
static const json_t *builder_pod(struct controller_reconciler *r, struct controller_builder *b,
    const char *pod_name, bool *foreign)
{
	json_t *pod = kube_informer_get(r->pods, controller_builder_namespace(b), pod_name);

	*foreign = false;
	if (pod && !controller_pod_owned_by_builder(pod, controller_builder_uid(b))) {
		*foreign = *controller_builder_uid(b) != '\0';
		pod = NULL;
	}
	if (!pod)
		pod = controller_builder_expected_pod(b, uv_now(r->loop), EXPECTATION_TTL_MS);
	return pod;
}

static bool pod_ended(const json_t *pod)
{
	const char *phase = json_field_str(json_object_get(pod, "status"), "phase");

	return strcmp(phase, "Failed") == 0 || strcmp(phase, "Succeeded") == 0;
}

/* ---------- a request with an identity ---------- */

/* The request's deadline (spec.timeoutSeconds from its start): 0 when it
 * has none, else ms left (negative: passed). */
static int64_t request_deadline_left(const json_t *nbr, int64_t now_ms, bool *has)
{
	json_int_t timeout = json_integer_value(json_object_get(json_object_get(nbr, "spec"),
	    "timeoutSeconds"));
	int64_t start = controller_status_parse_time(json_field_str(json_object_get(nbr,
	    "status"), "startTime"));

	*has = timeout > 0 && start > 0;
	return *has ? start + (int64_t)timeout * 1000 - now_ms : 0;
}

/* The request's status follows its builder's pod, like a request with a
 * pod of its own, plus status.builder. */
static void mirror_builder(struct reconcile_op *op, struct controller_builder *b)
{
	struct controller_reconciler *r = op->r;
	char *pod_name = controller_pod_name(controller_builder_name(b));
	bool foreign, has_deadline;
	const json_t *pod = pod_name ? builder_pod(r, b, pod_name, &foreign) : NULL;
	int64_t now = reconcile_wall_ms();
	int64_t left = request_deadline_left(op->nbr, now, &has_deadline);
	struct controller_status_input in = {
		.request = op->nbr,
		.pod = pod,
		.pod_name = pod_name,
		.builder = controller_builder_name(b),
		.host_key_field = "builderHostKey",
		.now_ms = now,
		.unschedulable_timeout_ms = r->opts.unschedulable_timeout_ms,
	};
	struct controller_status_result res;

	if (!pod_name) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (has_deadline && left <= 0) {
		char *msg = str_printf("the request ran longer than its timeoutSeconds (%lld s)",
		    (long long)json_integer_value(json_object_get(json_object_get(op->nbr, "spec"),
		    "timeoutSeconds")));

		free(pod_name);
		reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_DEADLINE,
		    msg ? msg : "the request ran longer than its timeoutSeconds", KUBE_QUEUE_FORGET);
		free(msg);
		return;
	}
	if (!pod && controller_builder_state(b) == BUILDER_FAILED) {
		const char *drained = controller_builder_drain_reason(b);
		char *msg;

		/* The pod object is gone: say what was known of it. */
		if (drained)
			msg = str_printf("builder pod %s was %s and went before the session ended",
			    pod_name, drained);
		else if (controller_phase_of(op->nbr) == CONTROLLER_PHASE_RUNNING)
			msg = str_printf("builder pod %s was deleted", pod_name);
		else
			msg = str_printf("builder %s failed before its pod ran",
			    controller_builder_name(b));

		free(pod_name);
		reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_POD_DELETED,
		    msg ? msg : "builder failed", KUBE_QUEUE_FORGET);
		free(msg);
		return;
	}
	if (controller_status_compute(&in, &res) < 0) {
		free(pod_name);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	free(pod_name);
	if (has_deadline && (!res.recheck_ms || (uint64_t)left < res.recheck_ms))
		res.recheck_ms = (uint64_t)left;
	reconcile_apply_status(op, &res);
}

static void bind_request(struct reconcile_op *op, struct controller_builder *b, struct metric *m)
{
	struct controller_reconciler *r = op->r;

	if (controller_builders_bind(r->builders, b, op->key, uv_now(r->loop)) < 0) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	metric_add(m, 1);
	log_info("nbr=%s: bound to builder %s (%zu/%ld sessions)", op->key,
	    controller_builder_key(b), controller_builder_sessions(b),
	    controller_builder_slots_of(b));
	/* Its session count changed. */
	enqueue_builder(op, b);
	mirror_builder(op, b);
}

static void on_builder_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	struct controller_builder *b = controller_builders_get(r->builders, op->builder_key);

	op->request = 0;
	if (!b || controller_builders_serving(r->builders, op->key) != b) {
		/* Unbound meanwhile (the request went): its pass says what next. */
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (resp->status == 201 && json_is_object(resp->body)) {
		metric_add(r->m.builders_created, 1);
		log_info("nbr=%s: created builder %s", op->key, op->builder_key);
		controller_builders_seen(r->builders, resp->body, uv_now(r->loop));
		bind_request(op, b, r->m.binds_new);
		return;
	}
	/* 409: a builder of that name exists that the cache does not show yet
	 * (or of another identity whose hash starts alike): drop our entry and
	 * let the next pass, with the cache's, decide. */
	controller_builders_unbind(r->builders, op->key, uv_now(r->loop));
	if (controller_builder_state(b) == BUILDER_CREATING)
		controller_builders_remove(r->builders, op->builder_key);
	if (resp->status == 409) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	{
		char *msg = str_printf("cannot create builder %s: HTTP %ld %s", op->builder_key,
		    resp->status, resp->message);

		log_error("nbr=%s: %s", op->key, msg ? msg : resp->message);
		reconcile_set_status(op, resp->status == 400 || resp->status == 422 ?
		    CONTROLLER_PHASE_FAILED : CONTROLLER_PHASE_PENDING,
		    resp->status == 400 || resp->status == 422 ? CONTROLLER_REASON_INVALID :
		    CONTROLLER_REASON_CREATE_FAILED, msg ? msg : resp->message,
		    KUBE_QUEUE_RETRY);
		free(msg);
	}
}

/* The next builder of identity and class: its object (*obj, the caller's)
 * and its entry in the table, CREATING. NULL (and *obj NULL) when out of
 * memory. */
static struct controller_builder *new_builder(struct reconcile_op *op, const char *identity,
    const char *class, json_t **obj)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	long slots = controller_class_slots(op->nbr, r->opts.builder_slots);
	char *name = controller_builders_next_name(r->builders, ns, identity, class);
	struct controller_builder *b;

	*obj = name ? controller_builder_build(ns, name, identity, class, slots, op->nbr) : NULL;
	b = *obj ? controller_builders_add(r->builders, ns, name, identity, class, slots,
	    uv_now(r->loop)) : NULL;
	free(name);
	if (!b) {
		json_decref(*obj);
		*obj = NULL;
	}
	return b;
}

static void create_builder(struct reconcile_op *op, const char *identity, const char *class)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	json_t *obj;
	struct controller_builder *b = new_builder(op, identity, class, &obj);

	/* Bound at once: a pass for the next request of this identity sees the
	 * slot taken and the builder on its way. */
	if (!b || controller_builders_bind(r->builders, b, op->key, uv_now(r->loop)) < 0 ||
	    !(op->builder_key = strdup(controller_builder_key(b)))) {
		if (b && controller_builder_state(b) == BUILDER_CREATING) {
			controller_builders_unbind(r->builders, op->key, uv_now(r->loop));
			controller_builders_remove(r->builders, controller_builder_key(b));
		}
		json_decref(obj);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->request = kube_create(r->client, &kube_resource_nixbuilders, ns, obj,
	    on_builder_created, op);
	json_decref(obj);
	if (!op->request) {
		controller_builders_unbind(r->builders, op->key, uv_now(r->loop));
		controller_builders_remove(r->builders, op->builder_key);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
	}
}

static void on_builder_claimed(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	struct controller_builder *b = controller_builders_get(r->builders, op->builder_key);
	bool ok = resp->status == 200 && json_is_object(resp->body);

	op->request = 0;
	if (b)
		controller_builder_claim_done(b, ok, uv_now(r->loop));
	if (!ok) {
		if (resp->status == 409)
			metric_add(r->m.conflicts, 1);
		else if (resp->status != 404)
			log_error("nbr=%s: claiming pool builder %s failed: HTTP %ld %s", op->key,
			    op->builder_key, resp->status, resp->message);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	metric_add(r->m.pool_claims, 1);
	b = controller_builders_seen(r->builders, resp->body, uv_now(r->loop));
	/* A replacement for the builder just taken. */
	kube_queue_add(op->q, CONTROLLER_POOL_KEY);
	if (!b) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	log_info("nbr=%s: claimed pool builder %s", op->key, op->builder_key);
	bind_request(op, b, r->m.binds_reused);
}

/* Claims an unclaimed pool builder for identity; false when there is none
 * to claim (the caller makes a builder instead). */
static bool try_claim(struct reconcile_op *op, const char *identity, const char *class)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	struct controller_builder *b;
	const json_t *obj;
	json_t *patch;

	/* The pool's builders, of every class, are in the pool's namespace. */
	if (!r->opts.pool_namespace || strcmp(ns, r->opts.pool_namespace) != 0)
		return false;
	b = controller_builders_pick_pool(r->builders, ns, class);
	obj = b ? kube_informer_get(r->builder_cache, ns, controller_builder_name(b)) : NULL;
	patch = obj ? controller_builder_claim_patch(obj, identity) : NULL;
	if (!patch)
		return false;
	op->builder_key = strdup(controller_builder_key(b));
	if (!op->builder_key) {
		json_decref(patch);
		return false;
	}
	controller_builder_claim_start(b, identity);
	op->request = kube_patch_merge(r->client, &kube_resource_nixbuilders, ns,
	    controller_builder_name(b), patch, false, on_builder_claimed, op);
	json_decref(patch);
	if (!op->request) {
		controller_builder_claim_done(b, false, uv_now(r->loop));
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
	}
	return true;
}

/* status.builder names a builder of another identity or class (written by
 * hand, by a controller with another table, or the builder changed since):
 * the session would reach another client's builder. The status is anyone's
 * with write access to it, so it is never trusted for that: the request
 * fails, loudly, and the proxy tells its client. */
static void refuse_foreign_builder(struct reconcile_op *op, struct controller_builder *b,
    const char *identity, const char *class)
{
	char *msg = str_printf("status.builder names builder %s, which is not of this request's "
	    "identity and class (builder identity \"%.16s\", request identity \"%.16s\", "
	    "class %s): not bound", controller_builder_key(b), controller_builder_identity_of(b),
	    identity, class);

	log_error("nbr=%s: %s", op->key, msg ? msg : "status.builder names a foreign builder");
	reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_INVALID,
	    msg ? msg : "status.builder names a builder of another identity: not bound",
	    KUBE_QUEUE_FORGET);
	free(msg);
}

/* The identity holds as many builders of the class as it may: the request
 * waits for a slot on one of them (Nix's maxJobs, from client-config, keeps
 * this rare). True when the pass is over. */
static bool at_builder_bound(struct reconcile_op *op, const char *identity, const char *class)
{
	struct controller_reconciler *r = op->r;
	long max = controller_class_max_builders(op->nbr, r->opts.max_builders_per_identity);
	size_t have = controller_builders_usable(r->builders, kube_object_namespace(op->nbr),
	    identity, class);

	if (max <= 0 || have < (size_t)max)
		return false;
	log_debug("nbr=%s: identity holds %zu builders of its class (at most %ld): waiting for "
	    "a slot", op->key, have, max);
	reconcile_op_finish(op, KUBE_QUEUE_FORGET, BOUND_WAIT_STEP_MS);
	return true;
}

static void count_holding(struct controller_builder *b, void *data)
{
	enum builder_state s = controller_builder_state(b);

	if (s != BUILDER_DELETING && s != BUILDER_FAILED)
		(*(size_t *)data)++;
}

/* The identity's builder quota (all classes) is reached and the request
 * would need one more: it is refused with the one line the proxy relays.
 * True when the pass is over. */
static bool at_builder_quota(struct reconcile_op *op, const char *identity)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr), *source;
	const json_t *usage = r->usages ? kube_informer_get(r->usages, ns, identity) : NULL;
	long max = controller_usage_max_builders(usage, op->nbr, r->opts.quota_max_builders,
	    &source);
	size_t have = 0;
	char *msg;

	if (max <= 0)
		return false;
	controller_builders_foreach_of(r->builders, ns, identity, count_holding, &have);
	if (have < (size_t)max)
		return false;
	msg = controller_usage_quota_message(max, have, source);
	log_info("nbr=%s: %s", op->key, msg ? msg : "builder quota reached");
	reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_QUOTA,
	    msg ? msg : "quota: builders at once reached", KUBE_QUEUE_FORGET);
	free(msg);
	return true;
}

static void on_spare_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;

	op->request = 0;
	if (resp->status == 201 && json_is_object(resp->body)) {
		metric_add(r->m.builders_created, 1);
		log_info("nbr=%s: started builder %s for its key's next sessions", op->key,
		    op->builder_key);
		controller_builders_seen(r->builders, resp->body, uv_now(r->loop));
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, SLOT_WAIT_STEP_MS);
		return;
	}
	{
		struct controller_builder *b = controller_builders_get(r->builders, op->builder_key);

		if (b && controller_builder_state(b) == BUILDER_CREATING)
			controller_builders_remove(r->builders, op->builder_key);
	}
	if (resp->status != 409)
		log_error("nbr=%s: cannot create builder %s: HTTP %ld %s", op->key,
		    op->builder_key, resp->status, resp->message);
	/* The next pass binds the request to a new builder of its own, which
	 * says what is wrong in the request's status. */
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* A builder for identity that no request holds yet: the request waiting
 * for a slot takes it once its pod is Ready, unless a slot on a busy
 * builder frees first (then the next request of the identity takes it, or
 * it goes after its idle timeout). */
static void create_spare(struct reconcile_op *op, const char *identity, const char *class)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	json_t *obj;
	struct controller_builder *b = new_builder(op, identity, class, &obj);

	if (!b || !(op->builder_key = strdup(controller_builder_key(b)))) {
		if (b)
			controller_builders_remove(r->builders, controller_builder_key(b));
		json_decref(obj);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->request = kube_create(r->client, &kube_resource_nixbuilders, ns, obj,
	    on_spare_created, op);
	json_decref(obj);
	if (!op->request) {
		controller_builders_remove(r->builders, op->builder_key);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
	}
}

/* A request not bound yet: the first place that can serve it. A Ready
 * builder of its identity with a free slot first. When every builder is
 * full, Nix has usually just ended a session whose end is a few ms from
 * reaching us, so the request waits --builder-scale-out-wait for a slot;
 * then it scales out (a warm pool builder, else a new one) but takes
 * whichever comes first, a freed slot or the new builder Ready: Nix opens
 * its sessions one at a time, so every ms a session waits, the whole build
 * waits. */
static void next_builder(struct reconcile_op *op, const char *identity, const char *class)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	size_t usable = controller_builders_usable(r->builders, ns, identity, class);
	size_t ready = controller_builders_ready(r->builders, ns, identity, class);
	uint64_t age = reconcile_state_age_ms(r->states, op->key, uv_now(r->loop));
	uint64_t wait = r->opts.builder_scale_out_wait_ms;
	struct controller_builder *b = controller_builders_pick_ready(r->builders, ns, identity,
	    class);

	if (b) {
		bind_request(op, b, controller_builder_bound_once(b) ? r->m.binds_reused :
		    r->m.binds_new);
		return;
	}
	/* One on its way with a free slot: nothing Ready could free a slot
	 * sooner, or it has been waited for long enough (its pod may never
	 * start: bound, the request says why). */
	b = controller_builders_pick(r->builders, ns, identity, class);
	if (b && (!ready || age >= wait + SPARE_PATIENCE_MS)) {
		bind_request(op, b, controller_builder_bound_once(b) ? r->m.binds_reused :
		    r->m.binds_new);
		return;
	}
	if (controller_builders_claim_pending(r->builders, ns, identity, class)) {
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, CLAIM_WAIT_MS);
		return;
	}
	if (b || (usable > 0 && age < wait)) {
		uint64_t left = age < wait ? wait - age : SLOT_WAIT_STEP_MS;

		reconcile_op_finish(op, KUBE_QUEUE_FORGET,
		    left < SLOT_WAIT_STEP_MS ? left : SLOT_WAIT_STEP_MS);
		return;
	}
	if (at_builder_bound(op, identity, class) || at_builder_quota(op, identity))
		return;
	if (try_claim(op, identity, class))
		return;
	if (ready)
		create_spare(op, identity, class);
	else
		create_builder(op, identity, class);
}

void reconcile_identity_request(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	const char *identity = controller_builder_identity(op->nbr);
	const char *status_builder = json_field_str(json_object_get(op->nbr, "status"),
	    "builder");
	struct controller_builder *b;
	char class[CONTROLLER_CLASS_LEN + 1];

	if (controller_phase_terminal(controller_phase_of(op->nbr))) {
		b = controller_builders_unbind(r->builders, op->key, uv_now(r->loop));
		if (b)
			enqueue_builder(op, b);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (!controller_builder_identity_valid(identity)) {
		reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_INVALID,
		    "spec.identity must be 1 to 63 lower-case hex digits", KUBE_QUEUE_FORGET);
		return;
	}
	if (controller_builder_class(op->nbr, class) < 0) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	b = controller_builders_serving(r->builders, op->key);
	if (!b && *status_builder) {
		/* Bound before a restart: the table is rebuilt from the caches. */
		char *key = str_printf("%s/%s", ns, status_builder);

		b = key ? controller_builders_get(r->builders, key) : NULL;
		free(key);
		if (!b) {
			char *msg = str_printf("builder %s was deleted", status_builder);

			reconcile_set_status(op, CONTROLLER_PHASE_FAILED,
			    CONTROLLER_REASON_POD_DELETED, msg ? msg : "builder was deleted",
			    KUBE_QUEUE_FORGET);
			free(msg);
			return;
		}
		if (!controller_builder_serves(b, ns, identity, class)) {
			refuse_foreign_builder(op, b, identity, class);
			return;
		}
		if (controller_builders_bind(r->builders, b, op->key, uv_now(r->loop)) < 0) {
			reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
			return;
		}
		enqueue_builder(op, b);
	}
	if (b) {
		mirror_builder(op, b);
		return;
	}
	next_builder(op, identity, class);
}

/* ---------- a builder ---------- */

static void on_builder_deleted(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;

	op->request = 0;
	if (kube_delete_done(resp, true)) {
		if (resp->status < 300)
			metric_add(op->r->m.builders_deleted, 1);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	log_error("%s: deleting the builder failed: HTTP %ld %s", op->key, resp->status,
	    resp->message);
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

static void on_builder_pod_deleted(const struct kube_response *resp, void *data)
{
	(void)data;
	if (!kube_delete_done(resp, true))
		log_warnx("deleting the pod of a deleted builder failed: HTTP %ld %s; the "
		    "garbage collector will", resp->status, resp->message);
}

/* The garbage collector deletes a builder's pod once the builder is gone, but
 * in its own time (it lags whenever the CRD was re-created, for one);
 * deleting it at once frees the node now. Only the pod the cache shows as
 * this builder's, and only that uid. */
static void delete_builder_pod(struct controller_reconciler *r, struct controller_builder *b)
{
	const char *ns = controller_builder_namespace(b);
	char *name = controller_pod_name(controller_builder_name(b));
	json_t *pod = name ? kube_informer_get(r->pods, ns, name) : NULL;

	if (pod && *controller_builder_uid(b) &&
	    controller_pod_owned_by_builder(pod, controller_builder_uid(b)) &&
	    !reconcile_being_deleted(pod))
		kube_delete(r->client, &kube_resource_pods, ns, name, kube_object_uid(pod),
		    "Background", on_builder_pod_deleted, NULL);
	free(name);
}

static void on_builder_pod_annotated(const struct kube_response *resp, void *data)
{
	(void)data;
	if (resp->status >= 300 && resp->status != 404)
		log_warnx("marking a builder pod safe (or not) to evict failed: HTTP %ld %s; the "
		    "next pass tries again", resp->status, resp->message);
}

/* Busy builders tell the cluster autoscaler not to evict them, idle ones
 * that it may: one merge patch when the cached pod says otherwise. (An
 * eviction that comes anyway drains the builder: see entrypoint.sh.) */
static void mark_safe_to_evict(struct controller_reconciler *r, struct controller_builder *b,
    const json_t *pod)
{
	const char *want = controller_builder_sessions(b) ? "false" : "true";
	json_t *patch;

	if (!pod || pod_ended(pod) || reconcile_being_deleted(pod) ||
	    strcmp(controller_pod_safe_to_evict(pod), want) == 0)
		return;
	patch = json_pack("{s:{s:{s:s}}}", "metadata", "annotations",
	    CONTROLLER_POD_SAFE_TO_EVICT_ANNOTATION, want);
	if (patch)
		kube_patch_merge(r->client, &kube_resource_pods, controller_builder_namespace(b),
		    kube_object_name(pod), patch, false, on_builder_pod_annotated, NULL);
	json_decref(patch);
}

static void delete_builder(struct reconcile_op *op, struct controller_builder *b,
    const char *why)
{
	struct controller_reconciler *r = op->r;

	log_info("builder=%s: deleting: %s", controller_builder_key(b), why);
	delete_builder_pod(r, b);
	controller_builder_deleting(b);
	if (op->nbr)
		reconcile_record_event(r, op->nbr, &kube_resource_nixbuilders, false,
		    "BuilderDeleted", why);
	op->request = kube_delete(r->client, &kube_resource_nixbuilders,
	    controller_builder_namespace(b), controller_builder_name(b),
	    *controller_builder_uid(b) ? controller_builder_uid(b) : NULL, "Background",
	    on_builder_deleted, op);
	if (!op->request)
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* status.sessions and status.idleSince beside what the pod says. */
static int add_builder_fields(json_t *status, const struct controller_builder *b,
    uint64_t loop_now, int64_t wall_now)
{
	uint64_t idle = controller_builder_idle_since(b);

	if (json_object_set_new(status, "sessions",
	    json_integer((json_int_t)controller_builder_sessions(b))) < 0)
		return -1;
	if (!idle || !*controller_builder_identity_of(b)) {
		json_object_del(status, "idleSince");
		return 0;
	}
	if (!*json_field_str(status, "idleSince")) {
		char ts[32];

		controller_status_format_time(wall_now - (int64_t)(loop_now - idle), ts);
		return json_object_set_new(status, "idleSince", json_string(ts));
	}
	return 0;
}

/* status.usage: what the builder served (the ledger's totals, which start
 * from what its cached status says). An identity's builders only. */
static int add_usage_fields(struct controller_reconciler *r, json_t *status,
    const struct controller_builder *b, const json_t *old)
{
	struct usage_counts seen, totals;
	char *err = NULL;

	if (!*controller_builder_identity_of(b)) {
		json_object_del(status, "usage");
		return 0;
	}
	if (controller_usage_counts_parse(json_object_get(old, "usage"), &seen, &err) < 0) {
		log_error("builder=%s: status.usage: %s; counted from 0", controller_builder_key(b),
		    err ? err : "malformed");
		free(err);
		memset(&seen, 0, sizeof(seen));
	}
	if (usage_ledger_builder_counts(r->ledger, controller_builder_key(b), &seen, &totals) < 0)
		return -1;
	return json_object_set_new(status, "usage", controller_usage_counts_json(&totals));
}

static void builder_status(struct reconcile_op *op, struct controller_builder *b,
    const json_t *pod, const char *pod_name)
{
	struct controller_reconciler *r = op->r;
	const json_t *old = json_object_get(op->nbr, "status");
	struct controller_status_input in = {
		.request = op->nbr,
		.pod = pod,
		.pod_name = pod_name,
		.host_key_field = "hostKey",
		.now_ms = reconcile_wall_ms(),
		.unschedulable_timeout_ms = r->opts.unschedulable_timeout_ms,
	};
	struct controller_status_result res;
	uint64_t idle = controller_builder_idle_since(b);
	uint64_t now = uv_now(r->loop);

	if (controller_status_compute(&in, &res) < 0 ||
	    add_builder_fields(res.status, b, now, in.now_ms) < 0 ||
	    add_usage_fields(r, res.status, b, old) < 0) {
		controller_status_result_finish(&res);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	res.changed = !json_is_object(old) || !json_equal((json_t *)old, res.status);
	if (controller_builder_state(b) == BUILDER_IDLE && idle) {
		uint64_t timeout = controller_class_idle_timeout_ms(op->nbr,
		    r->opts.builder_idle_timeout_ms);
		uint64_t left = now - idle >= timeout ? 0 : timeout - (now - idle);

		if (left == 0) {
			controller_status_result_finish(&res);
			delete_builder(op, b, "idle for its idle timeout");
			return;
		}
		if (!res.recheck_ms || left < res.recheck_ms)
			res.recheck_ms = left;
	}
	reconcile_apply_status(op, &res);
}

static void on_builder_pod_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	struct controller_builder *b = controller_builders_get(r->builders, builder_key_of(op));

	op->request = 0;
	if (resp->status == 201 && json_is_object(resp->body)) {
		metric_add(r->m.pods_created, 1);
		log_debug("%s: created pod %s", op->key, kube_object_name(resp->body));
		if (!b) {
			reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
			return;
		}
		if (!kube_informer_get(r->pods, kube_object_namespace(resp->body),
		    kube_object_name(resp->body)))
			controller_builder_expect_pod(b, controller_slim_pod(resp->body),
			    uv_now(r->loop));
		builder_status(op, b, resp->body, kube_object_name(resp->body));
		return;
	}
	if (resp->status == 409) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	log_error("%s: cannot create its pod: HTTP %ld %s", op->key, resp->status,
	    resp->message);
	if ((resp->status == 400 || resp->status == 422) && b) {
		char *msg = str_printf("builder pod is invalid: %s", resp->message);

		controller_builder_observe_pod(b, false, true, uv_now(r->loop));
		enqueue_served(op->q, b);
		reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_INVALID,
		    msg ? msg : resp->message, KUBE_QUEUE_FORGET);
		free(msg);
		return;
	}
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* The pod goes out after its host key Secret exists (a pod whose Secret
 * is missing would wait in ContainerCreating), with the public half in its
 * annotation. */
static void create_builder_pod(struct reconcile_op *op, struct controller_builder *b,
    const char *host_key_secret)
{
	struct controller_reconciler *r = op->r;
	char *err = NULL;
	json_t *pod = controller_pod_build_for_builder(op->nbr, &r->opts.pod, host_key_secret,
	    op->host_key.public_line, &err);

	/* Every builder, a pool one too: which key's builders it may fetch
	 * from is the proxy's judgement when it logs in, not the pod's. */
	if (pod && (controller_pod_set_safe_to_evict(pod, controller_builder_sessions(b) == 0) < 0 ||
	    (r->opts.pod.sibling_proxy && *r->opts.pod.sibling_proxy &&
	     controller_pod_add_siblings(pod, r->opts.pod.sibling_proxy,
	        r->opts.pod.proxy_host_key_config_map) < 0))) {
		json_decref(pod);
		pod = NULL;
	}
	if (!pod) {
		log_error("%s: %s", op->key, err ? err : "cannot build its pod");
		free(err);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->request = kube_create(r->client, &kube_resource_pods, controller_builder_namespace(b),
	    pod, on_builder_pod_created, op);
	json_decref(pod);
	if (!op->request)
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

static void on_builder_host_key(struct reconcile_op *op, const char *secret)
{
	struct controller_builder *b = controller_builders_get(op->r->builders,
	    builder_key_of(op));

	if (!b) {
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	create_builder_pod(op, b, secret);
}

/* A host key of the builder's own, so what its tenant (root there) can
 * read is worth nothing elsewhere. */
static void create_host_key(struct reconcile_op *op, struct controller_builder *b)
{
	char *pod_name = controller_pod_name(kube_object_name(op->nbr));

	if (!pod_name) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	reconcile_create_host_key(op, controller_builder_namespace(b), pod_name, "NixBuilder",
	    on_builder_host_key);
	free(pod_name);
}

void reconcile_builder(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	const char *key = builder_key_of(op);
	struct controller_builder *b = controller_builders_get(r->builders, key);
	const char *status_pod = json_field_str(json_object_get(op->nbr, "status"), "podName");
	char *pod_name;
	const json_t *pod;
	bool foreign;

	update_gauges(r);
	if (!op->nbr) {
		/* Made by us and not in the cache yet (the create's reply may
		 * come before the watch event): the event brings us back. Only a
		 * deletion the informer saw, or an expectation that never came
		 * true, ends the entry. */
		if (b && controller_builder_state(b) != BUILDER_DELETING &&
		    uv_now(r->loop) - controller_builder_added_at(b) < EXPECTATION_TTL_MS) {
			reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
			return;
		}
		if (b) {
			/* Its requests learn in their passes that it is gone. */
			enqueue_served(op->q, b);
			controller_builders_remove(r->builders, key);
		}
		kube_queue_add(op->q, CONTROLLER_POOL_KEY);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	b = controller_builders_seen(r->builders, op->nbr, uv_now(r->loop));
	if (!b) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (reconcile_being_deleted(op->nbr)) {
		enqueue_served(op->q, b);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (controller_builder_state(b) == BUILDER_DELETING) {
		/* Our delete failed (or its effect is not cached yet): send it
		 * again; a 404 is fine. */
		delete_builder(op, b, "deleting again");
		return;
	}
	pod_name = controller_pod_name(kube_object_name(op->nbr));
	if (!pod_name) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	pod = builder_pod(r, b, pod_name, &foreign);
	if (foreign) {
		log_info("%s: pod %s belongs to another owner; waiting for it to go", op->key,
		    pod_name);
		free(pod_name);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, FOREIGN_POD_RECHECK_MS);
		return;
	}
	if (!pod && !*status_pod && controller_phase_of(op->nbr) != CONTROLLER_PHASE_FAILED) {
		free(pod_name);
		create_host_key(op, b);
		return;
	}
	if (pod && !pod_ended(pod) &&
	    json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp")) {
		char *why = controller_pod_stop_reason(pod);

		controller_builder_observe_drain(b, why);
		free(why);
	}
	controller_builder_observe_pod(b, pod && controller_pod_ready(pod),
	    !pod || pod_ended(pod) || controller_phase_of(op->nbr) == CONTROLLER_PHASE_FAILED,
	    uv_now(r->loop));
	if (controller_builder_state(b) == BUILDER_FAILED) {
		enqueue_served(op->q, b);
		if (controller_builder_sessions(b) == 0 &&
		    controller_phase_of(op->nbr) == CONTROLLER_PHASE_FAILED) {
			free(pod_name);
			delete_builder(op, b, "its pod ended");
			return;
		}
	}
	mark_safe_to_evict(r, b, pod);
	builder_status(op, b, pod, pod_name);
	free(pod_name);
}

/* ---------- the pool ---------- */

static void on_pool_builder_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;

	op->request = 0;
	r->pool_creating--;
	if (resp->status == 201 && json_is_object(resp->body)) {
		metric_add(r->m.builders_created, 1);
		controller_builders_seen(r->builders, resp->body, uv_now(r->loop));
		log_info("pool: created builder %s", kube_object_name(resp->body));
		update_gauges(r);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 1);
		return;
	}
	log_error("pool: cannot create a pool builder: HTTP %ld %s", resp->status, resp->message);
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* One class's part of the warm pool: the default class's size is
 * --warm-pool-size, a NixBuilderClass's its spec.warmPoolSize. Builders
 * are told apart by class hash (controller_builder_class): a class whose
 * spec changed is a new hash, and its old unclaimed builders are strays. */
struct pool_target {
	char class[CONTROLLER_CLASS_LEN + 1];
	json_t *shape;   /* a request of the class as it shapes it; NULL: default */
	size_t want;
};

struct pool_targets {
	struct pool_target *items;
	size_t n, cap;
	bool failed;
};

static void pool_targets_finish(struct pool_targets *ts)
{
	for (size_t i = 0; i < ts->n; i++)
		json_decref(ts->items[i].shape);
	free(ts->items);
}

static struct pool_target *pool_targets_add(struct pool_targets *ts)
{
	if (ts->n == ts->cap) {
		size_t cap = ts->cap ? ts->cap * 2 : 8;
		struct pool_target *items = realloc(ts->items, cap * sizeof(*items));

		if (!items) {
			ts->failed = true;
			return NULL;
		}
		ts->items = items;
		ts->cap = cap;
	}
	memset(&ts->items[ts->n], 0, sizeof(ts->items[0]));
	return &ts->items[ts->n++];
}

struct pool_classes {
	struct controller_reconciler *r;
	struct pool_targets *ts;
};

static void pool_add_class(json_t *cls, void *data)
{
	struct pool_classes *pc = data;
	const char *name = kube_object_name(cls);
	struct pool_target *t;
	json_t *req;

	if (pc->ts->failed || strcmp(kube_object_namespace(cls), pc->r->opts.pool_namespace) != 0 ||
	    !controller_class_name_valid(name))
		return;
	t = pool_targets_add(pc->ts);
	if (!t)
		return;
	t->want = (size_t)controller_class_warm_pool_size(cls);
	req = json_pack("{s:{s:s}}", "spec", "builderClass", name);
	t->shape = req ? controller_class_apply(req, cls) : NULL;
	json_decref(req);
	if (!t->shape || controller_builder_class(t->shape, t->class) < 0)
		pc->ts->failed = true;
}

static bool pool_has_class(const struct pool_targets *ts, const char *class)
{
	for (size_t i = 0; i < ts->n; i++) {
		if (strcmp(ts->items[i].class, class) == 0)
			return true;
	}
	return false;
}

struct pool_scan {
	struct controller_reconciler *r;
	const char *class;                 /* NULL: a class no target has */
	const struct pool_targets *ts;
	json_t *surplus; /* a reference: foreach lends each object for one call */
};

static void scan_surplus(json_t *obj, void *data)
{
	struct pool_scan *ps = data;
	struct controller_reconciler *r = ps->r;
	char *key = kube_object_key(obj);
	struct controller_builder *b = key ? controller_builders_get(r->builders, key) : NULL;
	const char *class;

	free(key);
	/* Never one a request is claiming: the claim would land on a builder
	 * on its way out. */
	if (!b || *controller_builder_identity_of(b) || controller_builder_claiming(b) ||
	    strcmp(controller_builder_namespace(b), r->opts.pool_namespace) != 0 ||
	    controller_builder_state(b) == BUILDER_DELETING ||
	    controller_builder_state(b) == BUILDER_FAILED)
		return;
	class = controller_builder_class_of(b);
	if (ps->class ? strcmp(class, ps->class) != 0 : pool_has_class(ps->ts, class))
		return;
	/* Not-ready ones first: they have cost least so far. */
	if (!ps->surplus || controller_builder_state(b) != BUILDER_READY) {
		json_decref(ps->surplus);
		ps->surplus = json_incref(obj);
	}
}

/* Deletes one unclaimed builder of class (NULL: of no target's class);
 * false when there is none. */
static bool pool_delete_one(struct reconcile_op *op, const struct pool_targets *ts,
    const char *class, const char *why)
{
	struct controller_reconciler *r = op->r;
	struct pool_scan ps = { .r = r, .class = class, .ts = ts };
	struct controller_builder *b;
	char *key;

	kube_informer_foreach(r->builder_cache, scan_surplus, &ps);
	key = ps.surplus ? kube_object_key(ps.surplus) : NULL;
	b = key ? controller_builders_get(r->builders, key) : NULL;
	free(key);
	if (!b) {
		json_decref(ps.surplus);
		return false;
	}
	json_decref(op->nbr);
	op->nbr = ps.surplus;
	delete_builder(op, b, why);
	return true;
}

/* One API call towards target, or false when it has what it wants. */
static bool pool_step(struct reconcile_op *op, const struct pool_targets *ts,
    const struct pool_target *t)
{
	struct controller_reconciler *r = op->r;
	const char *ns = r->opts.pool_namespace;
	size_t have = controller_builders_pool_size(r->builders, ns, t->class);
	json_t *obj;

	if (have > t->want)
		return pool_delete_one(op, ts, t->class, t->shape ? "more unclaimed pool builders "
		    "than its class's warmPoolSize" : "more unclaimed pool builders than "
		    "--warm-pool-size");
	if (have + r->pool_creating >= t->want)
		return false;
	obj = controller_builder_build(ns, NULL, "", t->class,
	    controller_class_slots(t->shape, r->opts.builder_slots), t->shape);
	if (!obj) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return true;
	}
	op->request = kube_create(r->client, &kube_resource_nixbuilders, ns, obj,
	    on_pool_builder_created, op);
	json_decref(obj);
	if (!op->request) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return true;
	}
	r->pool_creating++;
	return true;
}

/* Keeps each class's unclaimed builders at its size: makes one when short,
 * removes one beyond the size (also when the size was lowered, or set to
 * 0), then removes those of a class that is gone or changed (no idle
 * timeout ends an unclaimed builder); one API call per pass, the next pass
 * comes at once or with the event. */
void reconcile_pool(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	struct pool_targets ts = { 0 };
	struct pool_classes pc = { .r = r, .ts = &ts };
	struct pool_target *def;
	bool sent = false;

	update_gauges(r);
	if (!r->opts.pool_namespace) {
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	def = pool_targets_add(&ts);
	if (def) {
		memcpy(def->class, r->default_class, sizeof(def->class));
		def->want = r->opts.warm_pool_size > 0 ? (size_t)r->opts.warm_pool_size : 0;
	}
	if (r->classes)
		kube_informer_foreach(r->classes, pool_add_class, &pc);
	if (ts.failed) {
		pool_targets_finish(&ts);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	for (size_t i = 0; i < ts.n && !sent; i++)
		sent = pool_step(op, &ts, &ts.items[i]);
	if (!sent)
		sent = pool_delete_one(op, &ts, NULL, "unclaimed, and its builder class is gone or "
		    "changed");
	pool_targets_finish(&ts);
	if (!sent)
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
}
