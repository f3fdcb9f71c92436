/* The reconciler's top. The work queue's process callback sends each key to
 * its pass: a request with an identity, a builder or the pool to
 * controller_builder_pass.c; a request with a pod of its own to its pass
 * here. Also the informers' bookkeeping and the reconciler's lifecycle.
 * Everything it calls is below it: the builder passes, the writes
 * (controller_reconcile_write.c), the op runtime (controller_reconcile_op.c)
 * and the per-request table (controller_reconcile_state.c); none of them
 * calls back up here. */
#include "controller_reconcile.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "controller_builder.h"
#include "controller_builder_pass.h"
#include "controller_builders.h"
#include "controller_class.h"
#include "controller_hostkey_write.h"
#include "controller_reconcile_internal.h"
#include "controller_reconcile_op.h"
#include "controller_reconcile_state.h"
#include "controller_reconcile_write.h"
#include "controller_slim.h"
#include "controller_status.h"
#include "controller_usage.h"
#include "controller_usage_ledger.h"
#include "controller_usage_pass.h"
#include "log.h"
#include "json_field.h"

/* ---------- informer bookkeeping ---------- */

void controller_reconciler_request_seen(struct controller_reconciler *r, const json_t *obj)
{
	char *key = kube_object_key(obj);

	if (key)
		reconcile_state_get(r->states, key, kube_object_uid(obj), uv_now(r->loop));
	free(key);
}

void controller_reconciler_request_gone(struct controller_reconciler *r, const json_t *obj)
{
	char *key = kube_object_key(obj);

	if (key)
		reconcile_state_remove(r->states, key);
	free(key);
}

char *controller_reconciler_pod_key(const json_t *pod)
{
	const char *owner = controller_pod_owner_name(pod);

	if (!owner)
		return NULL;
	return str_printf("%s/%s", kube_object_namespace(pod), owner);
}

void controller_reconciler_pod_seen(struct controller_reconciler *r, const json_t *pod,
    bool deleted)
{
	char *key = controller_reconciler_pod_key(pod);
	struct reconcile_state *s = key ? reconcile_state_find(r->states, key) : NULL;
	const char *builder = controller_pod_builder_name(pod);

	/* Added, updated or deleted: either way the cache now speaks for it. */
	(void)deleted;
	if (s && s->expected_pod &&
	    strcmp(kube_object_uid(s->expected_pod), kube_object_uid(pod)) == 0)
		reconcile_state_clear_expected(s);
	free(key);
	if (builder) {
		char *bkey = str_printf("%s/%s", kube_object_namespace(pod), builder);
		struct controller_builder *b = bkey ? controller_builders_get(r->builders, bkey) : NULL;

		if (b && controller_pod_owned_by_builder(pod, controller_builder_uid(b)))
			controller_builder_expect_pod(b, NULL, 0);
		free(bkey);
	}
}

void controller_reconciler_keys_for_builder_key(struct controller_reconciler *r,
    const char *builder_key, void (*add)(const char *key, void *data), void *data)
{
	struct controller_builder *b = controller_builders_get(r->builders, builder_key);
	char *qkey = reconcile_builder_queue_key(builder_key);

	if (qkey)
		add(qkey, data);
	free(qkey);
	/* Made, claimed or gone: its identity's builder time changes. */
	if (b && *controller_builder_identity_of(b)) {
		qkey = reconcile_usage_queue_key(controller_builder_namespace(b),
		    controller_builder_identity_of(b));
		if (qkey)
			add(qkey, data);
		free(qkey);
	}
	for (size_t i = 0; b && i < controller_builder_sessions(b); i++)
		add(controller_builder_request(b, i), data);
}

void controller_reconciler_keys_for_pod(struct controller_reconciler *r, const json_t *pod,
    void (*add)(const char *key, void *data), void *data)
{
	const char *builder = controller_pod_builder_name(pod);
	char *key;

	if (!builder) {
		key = controller_reconciler_pod_key(pod);
		if (key)
			add(key, data);
		free(key);
		return;
	}
	key = str_printf("%s/%s", kube_object_namespace(pod), builder);
	if (key)
		controller_reconciler_keys_for_builder_key(r, key, add, data);
	free(key);
}

void controller_reconciler_builder_seen(struct controller_reconciler *r, const json_t *obj,
    bool deleted)
{
	char *key = kube_object_key(obj);
	struct controller_builder *b = key ? controller_builders_get(r->builders, key) : NULL;

	if (!deleted)
		controller_builders_seen(r->builders, obj, uv_now(r->loop));
	else if (b)
		controller_builder_deleting(b);
	if (deleted && key) {
		const char *identity = controller_builder_identity(obj);

		/* Its time ends now (the usage pass retires it). */
		if (*identity && usage_ledger_builder_ended(r->ledger, kube_object_namespace(obj),
		    identity, kube_object_name(obj), kube_object_uid(obj), reconcile_wall_ms()) < 0)
			log_warnx("builder=%s: out of memory noting its end; its last sighting counts",
			    key);
		usage_ledger_builder_forget(r->ledger, key);
	}
	free(key);
}

/* ---------- usage ---------- */

static void add_usage_key(struct controller_reconciler *r, const char *ns, const char *identity,
    void (*add)(const char *key, void *data), void *data)
{
	char *qkey = reconcile_usage_queue_key(ns, identity);

	if (qkey)
		add(qkey, data);
	free(qkey);
}

void controller_reconciler_request_ended(struct controller_reconciler *r, const json_t *old_obj,
    const json_t *obj, bool deleted, void (*add)(const char *key, void *data), void *data)
{
	const char *identity = controller_builder_identity(obj);
	enum controller_phase was = old_obj ? controller_phase_of(old_obj) : CONTROLLER_PHASE_PENDING;
	enum controller_phase now = controller_phase_of(obj);
	const char *ns = kube_object_namespace(obj);
	struct controller_builder *b;
	struct usage_counts c, seen;
	const json_t *bobj = NULL;
	char *key, *err = NULL;

	if (!controller_builder_identity_valid(identity))
		return;
	/* Counted once: at the move into a final phase; a deletion only when
	 * no final phase was seen (the watch missed it). */
	if (deleted ? controller_phase_terminal(now) :
	    controller_phase_terminal(was) || !controller_phase_terminal(now))
		return;
	if (deleted)
		metric_add(r->m.usage_sessions_unseen, 1);
	controller_usage_of_request(obj, !deleted && now == CONTROLLER_PHASE_COMPLETED, &c);
	key = kube_object_key(obj);
	b = key ? controller_builders_serving(r->builders, key) : NULL;
	free(key);
	if (b)
		bobj = kube_informer_get(r->builder_cache, controller_builder_namespace(b),
		    controller_builder_name(b));
	if (controller_usage_counts_parse(json_object_get(json_object_get(bobj, "status"),
	    "usage"), &seen, &err) < 0) {
		log_error("builder=%s: status.usage: %s; counted from 0", controller_builder_key(b),
		    err ? err : "malformed");
		free(err);
		memset(&seen, 0, sizeof(seen));
	}
	if (usage_ledger_session_ended(r->ledger, ns, identity, b ? controller_builder_key(b) :
	    NULL, &seen, &c) < 0) {
		log_error("nbr=%s/%s: out of memory counting its usage", ns, kube_object_name(obj));
		return;
	}
	add_usage_key(r, ns, identity, add, data);
}

struct usage_keys {
	struct controller_reconciler *r;
	void (*add)(const char *key, void *data);
	void *data;
};

static void add_cached_usage(json_t *obj, void *data)
{
	struct usage_keys *k = data;
	const char *identity = json_string_value(json_object_get(json_object_get(obj, "spec"),
	    "identity"));

	if (identity && controller_builder_identity_valid(identity))
		add_usage_key(k->r, kube_object_namespace(obj), identity, k->add, k->data);
}

static void add_pending_usage(const char *ns, const char *identity, void *data)
{
	struct usage_keys *k = data;

	add_usage_key(k->r, ns, identity, k->add, k->data);
}

void controller_reconciler_usage_keys(struct controller_reconciler *r, bool reseed,
    void (*add)(const char *key, void *data), void *data)
{
	struct usage_keys k = { r, add, data };

	if (reseed)
		usage_ledger_reseed_builders(r->ledger);
	if (r->usages)
		kube_informer_foreach(r->usages, add_cached_usage, &k);
	usage_ledger_foreach_pending(r->ledger, add_pending_usage, &k);
}

/* ---------- metrics ---------- */

static void metrics_init(struct controller_metrics *m, struct metrics *reg)
{
	static const double latency_bounds[] = { 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
		0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
	size_t nb = sizeof(latency_bounds) / sizeof(latency_bounds[0]);

	memset(m, 0, sizeof(*m));
	if (!reg)
		return;
	m->reconciles = metrics_counter(reg, "nrbc_controller_reconciles_total",
	    "Reconcile passes run.", NULL);
	m->errors = metrics_counter(reg, "nrbc_controller_reconcile_errors_total",
	    "Reconcile passes that failed and were retried.", NULL);
	m->pods_created = metrics_counter(reg, "nrbc_controller_pods_created_total",
	    "Builder pods created.", NULL);
	m->pods_deleted = metrics_counter(reg, "nrbc_controller_pods_deleted_total",
	    "Builder pods deleted.", NULL);
	m->status_writes = metrics_counter(reg, "nrbc_controller_status_writes_total",
	    "NixBuildRequest status updates written.", NULL);
	m->conflicts = metrics_counter(reg, "nrbc_controller_conflicts_total",
	    "Writes refused with 409 Conflict (retried).", NULL);
	for (int p = 0; p < CONTROLLER_PHASE_COUNT; p++) {
		char labels[64];

		snprintf(labels, sizeof(labels), "phase=\"%s\"",
		    controller_phase_name((enum controller_phase)p));
		m->phase[p] = metrics_counter(reg, "nrbc_controller_phase_transitions_total",
		    "NixBuildRequests moved into each phase.", labels);
	}
	m->pod_created_seconds = metrics_histogram(reg, "nrbc_controller_pod_created_seconds",
	    "From a NixBuildRequest first seen to its pod created.", NULL, latency_bounds, nb);
	m->running_seconds = metrics_histogram(reg, "nrbc_controller_running_seconds",
	    "From a NixBuildRequest first seen to its status Running.", NULL, latency_bounds, nb);
	m->pool_idle = metrics_gauge(reg, "nrbc_controller_pool_idle",
	    "Unclaimed warm-pool builders.", NULL);
	m->pool_claims = metrics_counter(reg, "nrbc_controller_pool_claims_total",
	    "Warm-pool builders claimed by a new identity.", NULL);
	m->builders_created = metrics_counter(reg, "nrbc_controller_builders_created_total",
	    "NixBuilders created (for an identity or for the pool).", NULL);
	m->builders_deleted = metrics_counter(reg, "nrbc_controller_builders_deleted_total",
	    "NixBuilders deleted (idle timeout, failure or pool surplus).", NULL);
	m->binds_reused = metrics_counter(reg, "nrbc_controller_binds_total",
	    "NixBuildRequests bound to a builder, by whether the builder was new.",
	    "builder=\"existing\"");
	m->binds_new = metrics_counter(reg, "nrbc_controller_binds_total",
	    "NixBuildRequests bound to a builder, by whether the builder was new.",
	    "builder=\"new\"");
	m->builders = metrics_gauge(reg, "nrbc_controller_builders",
	    "NixBuilders known to the controller.", NULL);
	m->sessions = metrics_gauge(reg, "nrbc_controller_builder_sessions",
	    "NixBuildRequests bound to builders now.", NULL);
	m->usage_writes = metrics_counter(reg, "nrbc_controller_usage_writes_total",
	    "NixUsage status updates written.", NULL);
	m->usage_sessions_unseen = metrics_counter(reg,
	    "nrbc_controller_usage_sessions_unseen_total",
	    "Sessions whose request went before its outcome was seen (counted as failed).", NULL);
}

/* ---------- the request's own pod ---------- */

/* The request's status as its own pod (NULL: none yet) makes it. */
static void compute_and_apply(struct reconcile_op *op, const json_t *pod, const char *pod_name)
{
	struct controller_status_input in = {
		.request = op->nbr,
		.pod = pod,
		.pod_name = pod_name,
		.host_key_field = "builderHostKey",
		.now_ms = reconcile_wall_ms(),
		.unschedulable_timeout_ms = op->r->opts.unschedulable_timeout_ms,
	};
	struct controller_status_result res;

	if (controller_status_compute(&in, &res) < 0) {
		log_error("nbr=%s: out of memory computing status", op->key);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	reconcile_apply_status(op, &res);
}

static void on_pod_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	struct reconcile_state *s;
	char *pod_name;

	op->request = 0;
	if (resp->status == 201 && json_is_object(resp->body)) {
		metric_add(r->m.pods_created, 1);
		s = reconcile_state_get(r->states, op->key, kube_object_uid(op->nbr),
		    uv_now(r->loop));
		if (s) {
			json_decref(s->expected_pod);
			/* The pod informer may have shown it already. */
			s->expected_pod = kube_informer_get(r->pods, kube_object_namespace(resp->body),
			    kube_object_name(resp->body)) ? NULL : controller_slim_pod(resp->body);
			s->expected_at = uv_now(r->loop);
			if (!s->pod_created_timed) {
				s->pod_created_timed = true;
				metric_observe(r->m.pod_created_seconds,
				    (double)(uv_now(r->loop) - s->first_seen) / 1000.0);
			}
		}
		log_debug("nbr=%s: created pod %s", op->key, kube_object_name(resp->body));
		compute_and_apply(op, resp->body, kube_object_name(resp->body));
		return;
	}
	if (resp->status == 409) {
		/* The pod exists already (made by our previous life, or not yet
		 * cached): its informer event brings us back with it. */
		log_debug("nbr=%s: pod exists already", op->key);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	pod_name = controller_pod_name(kube_object_name(op->nbr));
	if (resp->status == 400 || resp->status == 422) {
		char *msg = str_printf("builder pod %s is invalid: %s", pod_name ? pod_name : "",
		    resp->message);

		log_error("nbr=%s: %s", op->key, msg ? msg : resp->message);
		reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_INVALID,
		    msg ? msg : resp->message, KUBE_QUEUE_FORGET);
		free(msg);
	} else {
		char *msg = str_printf("cannot create builder pod %s: HTTP %ld %s",
		    pod_name ? pod_name : "", resp->status, resp->message);

		log_error("nbr=%s: %s", op->key, msg ? msg : resp->message);
		if (msg)
			reconcile_record_event(r, op->nbr, &kube_resource_nixbuildrequests, true,
			    CONTROLLER_REASON_CREATE_FAILED, msg);
		reconcile_set_status(op, CONTROLLER_PHASE_PENDING, CONTROLLER_REASON_CREATE_FAILED,
		    msg ? msg : resp->message, KUBE_QUEUE_RETRY);
		free(msg);
	}
	free(pod_name);
}

static void on_own_host_key(struct reconcile_op *op, const char *secret)
{
	struct controller_reconciler *r = op->r;
	char *err = NULL;
	json_t *pod = controller_pod_build(op->nbr, &r->opts.pod, secret,
	    op->host_key.public_line, &err);

	if (!pod) {
		log_error("nbr=%s: %s", op->key, err ? err : "cannot build pod");
		free(err);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->request = kube_create(r->client, &kube_resource_pods, kube_object_namespace(op->nbr),
	    pod, on_pod_created, op);
	json_decref(pod);
	if (!op->request)
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* A request's own pod gets a host key of its own too, controlled by the
 * request (so it goes with it); the proxy pins it from the request's
 * status.builderHostKey. */
static void create_pod(struct reconcile_op *op, const char *pod_name)
{
	reconcile_create_host_key(op, kube_object_namespace(op->nbr), pod_name,
	    "NixBuildRequest", on_own_host_key);
}

/* ---------- the pass ---------- */

/* The request is gone: its own pod goes too, at once, without waiting for
 * the garbage collector; a builder it was bound to loses a session. */
static void reconcile_gone(struct reconcile_op *op, const char *ns, const char *name)
{
	char *pod_name = controller_pod_name(name);
	json_t *pod = pod_name ? kube_informer_get(op->r->pods, ns, pod_name) : NULL;
	const char *owner = pod ? controller_pod_owner_name(pod) : NULL;
	struct controller_builder *b = controller_builders_unbind(op->r->builders, op->key,
	    uv_now(op->r->loop));

	free(pod_name);
	reconcile_state_remove(op->r->states, op->key);
	if (b) {
		char *qkey = reconcile_builder_queue_key(controller_builder_key(b));

		if (qkey)
			kube_queue_add(op->q, qkey);
		free(qkey);
	}
	if (pod && owner && strcmp(owner, name) == 0 && !reconcile_being_deleted(pod)) {
		reconcile_delete_pod(op, pod, "its NixBuildRequest was deleted");
		return;
	}
	reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
}

/* A request without an identity: a builder pod of its own, made for it and
 * deleted when it ends (the seed's behaviour, kept for requests made by
 * hand or by older proxies). */
static void reconcile_request(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	const char *uid = kube_object_uid(op->nbr);
	const char *status_pod = json_field_str(json_object_get(op->nbr, "status"), "podName");
	enum controller_phase phase = controller_phase_of(op->nbr);
	struct reconcile_state *s = reconcile_state_get(r->states, op->key, uid, uv_now(r->loop));
	char *pod_name = controller_pod_name(kube_object_name(op->nbr));
	json_t *pod;

	if (!pod_name) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (s && s->stale_rv && strcmp(s->stale_rv, kube_object_resource_version(op->nbr)) == 0) {
		/* Our own write is on its way through the watch. */
		free(pod_name);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (*controller_builder_identity(op->nbr)) {
		free(pod_name);
		reconcile_identity_request(op);
		return;
	}
	pod = kube_informer_get(r->pods, ns, pod_name);
	if (pod && !controller_pod_owned_by(pod, uid)) {
		log_info("nbr=%s: pod %s belongs to another owner; waiting for it to go", op->key,
		    pod_name);
		free(pod_name);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, FOREIGN_POD_RECHECK_MS);
		return;
	}
	if (!pod && s && s->expected_pod) {
		if (uv_now(r->loop) - s->expected_at < EXPECTATION_TTL_MS)
			pod = s->expected_pod;
		else
			reconcile_state_clear_expected(s);
	}
	if (controller_phase_terminal(phase)) {
		free(pod_name);
		if (pod && (!s || pod != s->expected_pod) && !reconcile_being_deleted(pod)) {
			char *why = str_printf("the request is %s", controller_phase_name(phase));

			reconcile_delete_pod(op, pod, why ? why : "the request ended");
			free(why);
			return;
		}
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (!pod && (phase == CONTROLLER_PHASE_PENDING || !*status_pod)) {
		create_pod(op, pod_name);
		free(pod_name);
		return;
	}
	compute_and_apply(op, pod, pod_name);
	free(pod_name);
}

/* The request as its NixBuilderClass shapes it replaces op->nbr for the
 * pass (status writes send only the status). -1 when the pass is over:
 * no such class (the request fails, its client is told), or out of memory. */
static int apply_builder_class(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr), *name = controller_class_of(op->nbr);
	const json_t *cls = controller_class_name_valid(name) && r->classes ?
	    kube_informer_get(r->classes, ns, name) : NULL;
	json_t *shaped;

	if (!cls) {
		char *msg = str_printf("no builder class \"%.63s\" (the SSH user name) in namespace "
		    "%s; the admin's classes: kubectl -n %s get nixbuilderclasses", name, ns, ns);

		reconcile_set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_UNKNOWN_CLASS,
		    msg ? msg : "no such builder class", KUBE_QUEUE_FORGET);
		free(msg);
		return -1;
	}
	shaped = controller_class_apply(op->nbr, cls);
	if (!shaped) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return -1;
	}
	json_decref(op->nbr);
	op->nbr = shaped;
	return 0;
}

static bool split_key(const char *key, char ns[254], const char **name)
{
	const char *slash = strchr(key, '/');

	if (!slash || slash == key || (size_t)(slash - key) >= 254 || !slash[1])
		return false;
	memcpy(ns, key, (size_t)(slash - key));
	ns[slash - key] = '\0';
	*name = slash + 1;
	return true;
}

void controller_reconcile(struct kube_queue *q, const char *key, void *data)
{
	struct controller_reconciler *r = data;
	bool builder = strncmp(key, BUILDER_KEY_PREFIX, strlen(BUILDER_KEY_PREFIX)) == 0;
	const char *object_key = builder ? key + strlen(BUILDER_KEY_PREFIX) : key;
	char ns[254];
	const char *name;
	json_t *obj;
	struct reconcile_op *op;

	metric_add(r->m.reconciles, 1);
	if (strncmp(key, USAGE_KEY_PREFIX, strlen(USAGE_KEY_PREFIX)) == 0) {
		const char *rest = key + strlen(USAGE_KEY_PREFIX), *slash = strchr(rest, '/');

		if (slash && (size_t)(slash - rest) < sizeof(ns)) {
			memcpy(ns, rest, (size_t)(slash - rest));
			ns[slash - rest] = '\0';
		}
		obj = slash && (size_t)(slash - rest) < sizeof(ns) && r->usages ?
		    kube_informer_get(r->usages, ns, slash + 1) : NULL;
		op = reconcile_op_create(r, q, key, obj, &kube_resource_nixusages);
		if (!op) {
			kube_queue_done(q, key, KUBE_QUEUE_RETRY);
			return;
		}
		reconcile_usage(op);
		return;
	}
	if (strcmp(key, CONTROLLER_POOL_KEY) == 0) {
		op = reconcile_op_create(r, q, key, NULL, &kube_resource_nixbuilders);
		if (!op) {
			kube_queue_done(q, key, KUBE_QUEUE_RETRY);
			return;
		}
		reconcile_pool(op);
		return;
	}
	if (!split_key(object_key, ns, &name)) {
		log_error("reconcile: malformed key \"%s\"", key);
		kube_queue_done(q, key, KUBE_QUEUE_FORGET);
		return;
	}
	obj = kube_informer_get(builder ? r->builder_cache : r->requests, ns, name);
	op = reconcile_op_create(r, q, key, obj, builder ? &kube_resource_nixbuilders :
	    &kube_resource_nixbuildrequests);
	if (!op) {
		log_error("%s: out of memory", key);
		kube_queue_done(q, key, KUBE_QUEUE_RETRY);
		return;
	}
	if (builder) {
		reconcile_builder(op);
		return;
	}
	if (!obj) {
		reconcile_gone(op, ns, name);
		return;
	}
	if (reconcile_being_deleted(obj)) {
		/* The garbage collector removes its pod (foreground deletion
		 * even waits for that). */
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (*controller_class_of(obj) && !controller_phase_terminal(controller_phase_of(obj)) &&
	    apply_builder_class(op) < 0)
		return;
	reconcile_request(op);
}

/* ---------- lifecycle ---------- */

struct controller_reconciler *controller_reconciler_create(struct kube_client *c,
    const struct controller_reconcile_caches *caches, struct kube_event_recorder *events,
    const struct controller_reconcile_options *o, struct metrics *metrics)
{
	struct controller_reconciler *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->states = reconcile_state_table_create();
	r->builders = controller_builders_create();
	r->ledger = usage_ledger_create();
	if (!r->states || !r->builders || !r->ledger ||
	    controller_builder_class(NULL, r->default_class) < 0) {
		usage_ledger_destroy(r->ledger);
		controller_builders_destroy(r->builders);
		reconcile_state_table_destroy(r->states);
		free(r);
		return NULL;
	}
	r->builder_cache = caches->builders;
	r->client = c;
	r->loop = kube_client_loop(c);
	r->requests = caches->requests;
	r->pods = caches->pods;
	r->classes = caches->classes;
	r->usages = caches->usages;
	r->events = events;
	r->opts = *o;
	metrics_init(&r->m, metrics);
	return r;
}

void controller_reconciler_destroy(struct controller_reconciler *r)
{
	if (!r)
		return;
	reconcile_ops_cancel(r);
	reconcile_state_table_destroy(r->states);
	controller_builders_destroy(r->builders);
	usage_ledger_destroy(r->ledger);
	free(r);
}

size_t controller_reconciler_in_flight(const struct controller_reconciler *r)
{
	return r->in_flight;
}
