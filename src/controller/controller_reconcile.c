#include "controller_reconcile.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "controller_slim.h"
#include "controller_status.h"
#include "log.h"
#include "json_field.h"

/* A pod we created counts as existing until the pod informer shows it (or
 * its deletion), however late: otherwise a request updated before its pod
 * is cached would look like its pod was deleted. Kubernetes' controllers
 * give up on such expectations after 5 minutes; so do we. */
#define EXPECTATION_TTL_MS (5 * 60 * 1000)
/* A pod with our name that belongs to an older request of the same name:
 * the garbage collector removes it; look again after this. */
#define FOREIGN_POD_RECHECK_MS 1000
#define STATE_BUCKETS_MIN 64

/* What the reconciler remembers about one request between passes. */
struct request_state {
	char *key;
	uint64_t first_seen;     /* loop ms when the informer first showed it */
	bool pod_created_timed;
	bool running_timed;
	char *uid;               /* the incarnation the fields below are about */
	char *stale_rv;          /* resourceVersion our last status write replaced */
	json_t *expected_pod;    /* created or claimed by us, not yet so in the pod cache */
	uint64_t expected_at;
	char *claimed_pod;       /* the pool pod this incarnation claimed */
	struct request_state *next;
};

enum op_step {
	OP_CREATE_POD,
	OP_WRITE_STATUS,
	OP_DELETE_POD,
	OP_CLAIM_POD,
	OP_POOL_CREATE,
};

/* A pool pod name remembered until the pod cache catches up: one we
 * created (pending) or one a claim took (taken, so no second claim picks
 * it while the cache still shows it idle). */
struct pool_mark {
	char *name;
	uint64_t at;
	struct pool_mark *next;
};

/* One reconcile waiting for the API. It owns its request until the
 * callback; destroy cancels that request, so the callback never sees a
 * freed op. */
struct reconcile_op {
	struct controller_reconciler *r;
	struct kube_queue *q;
	char *key;
	enum op_step step;
	uint64_t request;
	json_t *nbr;            /* the request as cached when the pass began */
	char *claim_pod;        /* OP_CLAIM_POD: the pool pod being claimed */
	struct reconcile_op *prev, *next;
};

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
};

struct controller_reconciler {
	struct kube_client *client;
	uv_loop_t *loop;
	struct kube_informer *requests;
	struct kube_informer *pods;
	struct kube_event_recorder *events;
	struct controller_reconcile_options opts;
	struct controller_metrics m;
	struct request_state **buckets;
	size_t nbuckets;
	size_t nstates;
	struct reconcile_op *ops;
	size_t in_flight;
	struct pool_mark *pool_pending;
	struct pool_mark *pool_taken;
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- per-request state ---------- */

static size_t hash_key(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

static struct request_state **state_slot(struct controller_reconciler *r, const char *key)
{
	struct request_state **p = &r->buckets[hash_key(key) % r->nbuckets];

	for (; *p; p = &(*p)->next) {
		if (strcmp((*p)->key, key) == 0)
			break;
	}
	return p;
}

static struct request_state *state_find(struct controller_reconciler *r, const char *key)
{
	return *state_slot(r, key);
}

static void state_grow(struct controller_reconciler *r)
{
	size_t n = r->nbuckets * 2;
	struct request_state **b = calloc(n, sizeof(*b));

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < r->nbuckets; i++) {
		while (r->buckets[i]) {
			struct request_state *s = r->buckets[i];

			r->buckets[i] = s->next;
			s->next = b[hash_key(s->key) % n];
			b[hash_key(s->key) % n] = s;
		}
	}
	free(r->buckets);
	r->buckets = b;
	r->nbuckets = n;
}

static void state_clear_expected(struct request_state *s)
{
	json_decref(s->expected_pod);
	s->expected_pod = NULL;
}

static void state_free(struct request_state *s)
{
	state_clear_expected(s);
	free(s->claimed_pod);
	free(s->key);
	free(s->uid);
	free(s->stale_rv);
	free(s);
}

/* The state of key for the incarnation uid: a new uid (request deleted and
 * made again under the same name) starts afresh. */
static struct request_state *state_get(struct controller_reconciler *r, const char *key,
    const char *uid)
{
	struct request_state *s = state_find(r, key);

	if (s && strcmp(s->uid, uid) != 0) {
		state_clear_expected(s);
		free(s->claimed_pod);
		s->claimed_pod = NULL;
		free(s->stale_rv);
		s->stale_rv = NULL;
		free(s->uid);
		s->uid = strdup(uid);
		s->pod_created_timed = s->running_timed = false;
		s->first_seen = uv_now(r->loop);
		if (!s->uid) {
			*state_slot(r, key) = s->next;
			r->nstates--;
			state_free(s);
			return NULL;
		}
	}
	if (s)
		return s;
	if (r->nstates >= r->nbuckets)
		state_grow(r);
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->key = strdup(key);
	s->uid = strdup(uid);
	if (!s->key || !s->uid) {
		state_free(s);
		return NULL;
	}
	s->first_seen = uv_now(r->loop);
	s->next = r->buckets[hash_key(key) % r->nbuckets];
	r->buckets[hash_key(key) % r->nbuckets] = s;
	r->nstates++;
	return s;
}

static void state_remove(struct controller_reconciler *r, const char *key)
{
	struct request_state **p = state_slot(r, key);
	struct request_state *s = *p;

	if (!s)
		return;
	*p = s->next;
	r->nstates--;
	state_free(s);
}

/* ---------- pool marks ---------- */

static bool pool_on(const struct controller_reconciler *r)
{
	return r->opts.warm_pool_size > 0 && r->opts.pool_namespace && *r->opts.pool_namespace;
}

static bool mark_has(const struct pool_mark *m, const char *name)
{
	for (; m; m = m->next) {
		if (strcmp(m->name, name) == 0)
			return true;
	}
	return false;
}

static void mark_add(struct controller_reconciler *r, struct pool_mark **list,
    const char *name)
{
	struct pool_mark *m;

	if (mark_has(*list, name))
		return;
	m = calloc(1, sizeof(*m));
	if (!m)
		return;
	m->name = strdup(name);
	if (!m->name) {
		free(m);
		return;
	}
	m->at = uv_now(r->loop);
	m->next = *list;
	*list = m;
}

static void mark_remove(struct pool_mark **list, const char *name)
{
	for (; *list; list = &(*list)->next) {
		if (strcmp((*list)->name, name) == 0) {
			struct pool_mark *m = *list;

			*list = m->next;
			free(m->name);
			free(m);
			return;
		}
	}
}

/* Marks older than the expectation TTL: the cache will never show them. */
static size_t mark_expire(struct controller_reconciler *r, struct pool_mark **list)
{
	size_t n = 0;

	while (*list) {
		struct pool_mark *m = *list;

		if (uv_now(r->loop) - m->at >= EXPECTATION_TTL_MS) {
			*list = m->next;
			free(m->name);
			free(m);
			continue;
		}
		n++;
		list = &m->next;
	}
	return n;
}

static void mark_free_all(struct pool_mark **list)
{
	while (*list) {
		struct pool_mark *m = *list;

		*list = m->next;
		free(m->name);
		free(m);
	}
}

/* ---------- informer bookkeeping ---------- */

void controller_reconciler_request_seen(struct controller_reconciler *r, const json_t *obj)
{
	char *key = kube_object_key(obj);

	if (key)
		state_get(r, key, kube_object_uid(obj));
	free(key);
}

void controller_reconciler_request_gone(struct controller_reconciler *r, const json_t *obj)
{
	char *key = kube_object_key(obj);

	if (key)
		state_remove(r, key);
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
	struct request_state *s = key ? state_find(r, key) : NULL;

	/* Added, updated or deleted: either way the cache now speaks for it. */
	(void)deleted;
	if (s && s->expected_pod &&
	    strcmp(kube_object_uid(s->expected_pod), kube_object_uid(pod)) == 0)
		state_clear_expected(s);
	free(key);
	if (pool_on(r)) {
		mark_remove(&r->pool_pending, kube_object_name(pod));
		if (deleted || !controller_pod_is_idle_pool(pod))
			mark_remove(&r->pool_taken, kube_object_name(pod));
	}
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
	    "Idle warm-pool pods that can still be claimed.", NULL);
	m->pool_claims = metrics_counter(reg, "nrbc_controller_pool_claims_total",
	    "NixBuildRequests served by claiming an idle warm-pool pod.", NULL);
}

/* ---------- ops ---------- */

static struct reconcile_op *op_create(struct controller_reconciler *r, struct kube_queue *q,
    const char *key, json_t *nbr)
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
	free(op->claim_pod);
	free(op->key);
	free(op);
}

/* Ends a pass: the one place a key is handed back to the queue. */
static void op_finish(struct reconcile_op *op, enum kube_queue_result result,
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

static void record_event(struct controller_reconciler *r, const json_t *nbr, bool warning,
    const char *reason, const char *message)
{
	if (r->events)
		kube_event_record(r->events, nbr, &kube_resource_nixbuildrequests,
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
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->step = OP_WRITE_STATUS;
	op->request = kube_update_status(r->client, &kube_resource_nixbuildrequests,
	    kube_object_namespace(op->nbr), kube_object_name(op->nbr), body, on_status_written, op);
	json_decref(body);
	controller_status_result_finish(res);
	if (!op->request)
		op_finish(op, KUBE_QUEUE_RETRY, 0);
}

static void apply_status(struct reconcile_op *op, struct controller_status_result *res)
{
	if (!res->changed) {
		uint64_t recheck = res->recheck_ms;

		controller_status_result_finish(res);
		op_finish(op, KUBE_QUEUE_FORGET, recheck);
		return;
	}
	write_status(op, res);
}

static void on_status_written(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	const json_t *old = json_object_get(op->nbr, "status");
	const json_t *st = json_object_get(resp->body, "status");
	const char *new_phase = json_field_str(st, "phase");
	const char *new_reason = json_field_str(st, "reason");
	struct request_state *s;
	enum controller_phase phase;

	op->request = 0;
	if (resp->status == 404) {
		op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (resp->status == 409) {
		metric_add(r->m.conflicts, 1);
		log_debug("nbr=%s: status conflict, retrying", op->key);
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (resp->status != 200 || !json_is_object(resp->body)) {
		log_error("nbr=%s: status update failed: HTTP %ld %s %s", op->key, resp->status,
		    resp->reason, resp->message);
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	metric_add(r->m.status_writes, 1);
	s = state_get(r, op->key, kube_object_uid(op->nbr));
	if (s) {
		/* Until the informer catches up, the cache holds the version
		 * this write replaced: passes on it would only conflict. */
		free(s->stale_rv);
		s->stale_rv = strdup(kube_object_resource_version(op->nbr));
	}
	phase = controller_phase_of(resp->body);
	if (strcmp(json_field_str(old, "phase"), new_phase) != 0 ||
	    strcmp(json_field_str(old, "reason"), new_reason) != 0) {
		bool warning = phase == CONTROLLER_PHASE_FAILED ||
		    strcmp(new_reason, CONTROLLER_REASON_UNSCHEDULABLE) == 0;

		log_info("nbr=%s: %s => %s (%s): %s", op->key,
		    *json_field_str(old, "phase") ? json_field_str(old, "phase") : "Pending", new_phase,
		    new_reason, json_field_str(st, "message"));
		if (strcmp(json_field_str(old, "phase"), new_phase) != 0)
			metric_add(r->m.phase[phase], 1);
		record_event(r, resp->body, warning, new_reason, json_field_str(st, "message"));
		if (phase == CONTROLLER_PHASE_RUNNING && s && !s->running_timed) {
			s->running_timed = true;
			metric_observe(r->m.running_seconds,
			    (double)(uv_now(r->loop) - s->first_seen) / 1000.0);
		}
	}
	/* A terminal phase we just wrote: the next pass (on the watch event)
	 * deletes the pod. A pending recheck (unschedulable) comes from the
	 * status we computed, which the next pass recomputes anyway. */
	op_finish(op, KUBE_QUEUE_FORGET, 0);
}

static void compute_and_apply(struct reconcile_op *op, const json_t *pod, const char *pod_name)
{
	struct controller_status_input in = {
		.request = op->nbr,
		.pod = pod,
		.pod_name = pod_name,
		.now_ms = wall_ms(),
		.unschedulable_timeout_ms = op->r->opts.unschedulable_timeout_ms,
	};
	struct controller_status_result res;

	if (controller_status_compute(&in, &res) < 0) {
		log_error("nbr=%s: out of memory computing status", op->key);
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	apply_status(op, &res);
}

static void set_status(struct reconcile_op *op, enum controller_phase phase,
    const char *reason, const char *message, enum kube_queue_result on_same)
{
	struct controller_status_result res;

	if (controller_status_set(op->nbr, phase, reason, message, wall_ms(), &res) < 0) {
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (!res.changed) {
		controller_status_result_finish(&res);
		op_finish(op, on_same, 0);
		return;
	}
	write_status(op, &res);
}

/* ---------- pod create / delete ---------- */

static void on_pod_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	struct request_state *s;
	char *pod_name;

	op->request = 0;
	if (resp->status == 201 && json_is_object(resp->body)) {
		metric_add(r->m.pods_created, 1);
		s = state_get(r, op->key, kube_object_uid(op->nbr));
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
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	pod_name = controller_pod_name(kube_object_name(op->nbr));
	if (resp->status == 400 || resp->status == 422) {
		char *msg = str_printf("builder pod %s is invalid: %s", pod_name ? pod_name : "",
		    resp->message);

		log_error("nbr=%s: %s", op->key, msg ? msg : resp->message);
		set_status(op, CONTROLLER_PHASE_FAILED, CONTROLLER_REASON_INVALID,
		    msg ? msg : resp->message, KUBE_QUEUE_FORGET);
		free(msg);
	} else {
		char *msg = str_printf("cannot create builder pod %s: HTTP %ld %s",
		    pod_name ? pod_name : "", resp->status, resp->message);

		log_error("nbr=%s: %s", op->key, msg ? msg : resp->message);
		if (msg)
			record_event(r, op->nbr, true, CONTROLLER_REASON_CREATE_FAILED, msg);
		set_status(op, CONTROLLER_PHASE_PENDING, CONTROLLER_REASON_CREATE_FAILED,
		    msg ? msg : resp->message, KUBE_QUEUE_RETRY);
		free(msg);
	}
	free(pod_name);
}

static void create_pod(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	char *err = NULL;
	json_t *pod = controller_pod_build(op->nbr, &r->opts.pod, &err);

	if (!pod) {
		log_error("nbr=%s: %s", op->key, err ? err : "cannot build pod");
		free(err);
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->step = OP_CREATE_POD;
	op->request = kube_create(r->client, &kube_resource_pods, kube_object_namespace(op->nbr),
	    pod, on_pod_created, op);
	json_decref(pod);
	if (!op->request)
		op_finish(op, KUBE_QUEUE_RETRY, 0);
}

static void on_pod_deleted(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;

	op->request = 0;
	/* 404: gone already; 409: the uid precondition failed, so the pod
	 * with that name is a newer one, not ours to delete. */
	if (resp->status == 200 || resp->status == 202 || resp->status == 404 ||
	    resp->status == 409) {
		if (resp->status < 300)
			metric_add(op->r->m.pods_deleted, 1);
		op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	log_error("nbr=%s: deleting its pod failed: HTTP %ld %s", op->key, resp->status,
	    resp->message);
	op_finish(op, KUBE_QUEUE_RETRY, 0);
}

static void delete_pod(struct reconcile_op *op, const json_t *pod, const char *why)
{
	struct controller_reconciler *r = op->r;

	log_info("nbr=%s: deleting pod %s: %s", op->key, kube_object_name(pod), why);
	if (op->nbr)
		record_event(r, op->nbr, false, "BuilderDeleted", why);
	op->step = OP_DELETE_POD;
	op->request = kube_delete(r->client, &kube_resource_pods, kube_object_namespace(pod),
	    kube_object_name(pod), kube_object_uid(pod), "Background", on_pod_deleted, op);
	if (!op->request)
		op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* ---------- the pass ---------- */

static bool being_deleted(const json_t *obj)
{
	return json_object_get(json_object_get(obj, "metadata"), "deletionTimestamp") != NULL;
}

/* ---------- the warm pool ---------- */

struct pod_scan {
	const char *ns;
	const char *owner_name;   /* find: controlled by the request named so */
	const char *owner_uid;    /* find: controlled by the request with uid */
	const json_t *found;
	const struct controller_reconciler *r;
	/* pool pass */
	size_t idle;
	const json_t *ready;      /* an idle, Ready pod not taken */
	const json_t *spare;      /* any idle pod not taken */
	const json_t *dead;       /* an idle pod that ended and is not being deleted */
};

static void scan_owned(json_t *pod, void *data)
{
	struct pod_scan *ps = data;
	const char *owner;

	if (ps->found || strcmp(kube_object_namespace(pod), ps->ns) != 0)
		return;
	if (ps->owner_uid) {
		if (controller_pod_owned_by(pod, ps->owner_uid))
			ps->found = pod;
		return;
	}
	owner = controller_pod_owner_name(pod);
	if (owner && strcmp(owner, ps->owner_name) == 0 && !being_deleted(pod))
		ps->found = pod;
}

static void scan_pool(json_t *pod, void *data)
{
	struct pod_scan *ps = data;

	if (strcmp(kube_object_namespace(pod), ps->ns) != 0 ||
	    !controller_pod_is_idle_pool(pod) || mark_has(ps->r->pool_taken, kube_object_name(pod)))
		return;
	if (!controller_pod_pool_usable(pod)) {
		if (!being_deleted(pod) && !ps->dead)
			ps->dead = pod;
		return;
	}
	ps->idle++;
	ps->spare = pod;
	if (!ps->ready && controller_pod_ready(pod))
		ps->ready = pod;
}

static void on_pool_pod_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;

	op->request = 0;
	if (resp->status == 201 && json_is_object(resp->body)) {
		metric_add(r->m.pods_created, 1);
		if (!kube_informer_get(r->pods, kube_object_namespace(resp->body),
		    kube_object_name(resp->body)))
			mark_add(r, &r->pool_pending, kube_object_name(resp->body));
		log_info("pool: created pod %s", kube_object_name(resp->body));
		op_finish(op, KUBE_QUEUE_FORGET, 1);
		return;
	}
	log_error("pool: cannot create a pool pod: HTTP %ld %s", resp->status, resp->message);
	op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* Keeps warm_pool_size idle pods: removes one that ended, else makes one
 * when short, else removes one beyond the size; one API call per pass, the
 * next pass comes with the pod event (or at once after a create). */
static void reconcile_pool(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	struct pod_scan ps = { .ns = r->opts.pool_namespace, .r = r };
	size_t pending;
	char *err = NULL;
	json_t *pod;

	if (!pool_on(r)) {
		op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	pending = mark_expire(r, &r->pool_pending);
	mark_expire(r, &r->pool_taken);
	kube_informer_foreach(r->pods, scan_pool, &ps);
	metric_set(r->m.pool_idle, (double)ps.idle);
	if (ps.dead) {
		delete_pod(op, ps.dead, "idle pool pod ended");
		return;
	}
	if (ps.idle + pending < (size_t)r->opts.warm_pool_size) {
		pod = controller_pod_build_pool(r->opts.pool_namespace, &r->opts.pod, &err);
		if (!pod) {
			log_error("pool: %s", err ? err : "cannot build a pool pod");
			free(err);
			op_finish(op, KUBE_QUEUE_RETRY, 0);
			return;
		}
		op->step = OP_POOL_CREATE;
		op->request = kube_create(r->client, &kube_resource_pods, r->opts.pool_namespace,
		    pod, on_pool_pod_created, op);
		json_decref(pod);
		if (!op->request)
			op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (ps.idle > (size_t)r->opts.warm_pool_size && ps.spare) {
		delete_pod(op, ps.spare, "more idle pool pods than --warm-pool-size");
		return;
	}
	op_finish(op, KUBE_QUEUE_FORGET, 0);
}

static void on_pod_claimed(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	struct request_state *s;

	op->request = 0;
	if (resp->status == 200 && json_is_object(resp->body)) {
		metric_add(r->m.pool_claims, 1);
		s = state_get(r, op->key, kube_object_uid(op->nbr));
		if (s) {
			free(s->claimed_pod);
			s->claimed_pod = strdup(op->claim_pod);
			json_decref(s->expected_pod);
			/* The cache shows the pod idle until its watch event. */
			s->expected_pod = controller_slim_pod(resp->body);
			s->expected_at = uv_now(r->loop);
			if (!s->pod_created_timed) {
				s->pod_created_timed = true;
				metric_observe(r->m.pod_created_seconds,
				    (double)(uv_now(r->loop) - s->first_seen) / 1000.0);
			}
		}
		log_info("nbr=%s: claimed pool pod %s", op->key, op->claim_pod);
		/* A replacement for the pod just taken. */
		kube_queue_add(op->q, CONTROLLER_POOL_KEY);
		compute_and_apply(op, resp->body, kube_object_name(resp->body));
		return;
	}
	mark_remove(&r->pool_taken, op->claim_pod);
	if (resp->status == 409) {
		metric_add(r->m.conflicts, 1);
		log_debug("nbr=%s: pool pod %s changed under the claim, retrying", op->key,
		    op->claim_pod);
	} else if (resp->status != 404) {
		log_error("nbr=%s: claiming pool pod %s failed: HTTP %ld %s", op->key,
		    op->claim_pod, resp->status, resp->message);
	}
	op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* Claims an idle Ready pool pod for the request; false when there is none
 * (or the patch cannot be made), and the caller creates the usual pod. */
static bool try_claim(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	struct pod_scan ps = { .ns = kube_object_namespace(op->nbr), .r = r };
	json_t *patch;

	if (!pool_on(r) || strcmp(ps.ns, r->opts.pool_namespace) != 0 ||
	    !controller_pod_request_poolable(op->nbr))
		return false;
	kube_informer_foreach(r->pods, scan_pool, &ps);
	if (!ps.ready)
		return false;
	patch = controller_pod_claim_patch(ps.ready, op->nbr);
	op->claim_pod = strdup(kube_object_name(ps.ready));
	if (!patch || !op->claim_pod) {
		json_decref(patch);
		free(op->claim_pod);
		op->claim_pod = NULL;
		return false;
	}
	mark_add(r, &r->pool_taken, op->claim_pod);
	op->step = OP_CLAIM_POD;
	op->request = kube_patch_merge(r->client, &kube_resource_pods, ps.ns, op->claim_pod,
	    patch, false, on_pod_claimed, op);
	json_decref(patch);
	if (!op->request) {
		mark_remove(&r->pool_taken, op->claim_pod);
		op_finish(op, KUBE_QUEUE_RETRY, 0);
	}
	return true;
}

/* A pod in the cache by name that the request with uid controls. */
static json_t *owned_pod(struct controller_reconciler *r, const char *ns, const char *name,
    const char *uid)
{
	json_t *pod = name && *name ? kube_informer_get(r->pods, ns, name) : NULL;

	return pod && controller_pod_owned_by(pod, uid) ? pod : NULL;
}

/* The request is gone: its pod goes too, at once, without waiting for the
 * garbage collector. */
static void reconcile_gone(struct reconcile_op *op, const char *ns, const char *name)
{
	struct request_state *s = state_find(op->r, op->key);
	char *pod_name = controller_pod_name(name);
	json_t *pod = pod_name ? kube_informer_get(op->r->pods, ns, pod_name) : NULL;
	const char *owner = pod ? controller_pod_owner_name(pod) : NULL;

	free(pod_name);
	if (!(pod && owner && strcmp(owner, name) == 0) && s && s->claimed_pod) {
		pod = kube_informer_get(op->r->pods, ns, s->claimed_pod);
		owner = pod ? controller_pod_owner_name(pod) : NULL;
	}
	if (!(pod && owner && strcmp(owner, name) == 0) && pool_on(op->r)) {
		/* A claimed pool pod the state does not know (a restart). */
		struct pod_scan ps = { .ns = ns, .owner_name = name };

		kube_informer_foreach(op->r->pods, scan_owned, &ps);
		pod = (json_t *)ps.found;
		owner = pod ? name : NULL;
	}
	state_remove(op->r, op->key);
	if (pod && owner && strcmp(owner, name) == 0 && !being_deleted(pod)) {
		delete_pod(op, pod, "its NixBuildRequest was deleted");
		return;
	}
	op_finish(op, KUBE_QUEUE_FORGET, 0);
}

static void reconcile_request(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	const char *ns = kube_object_namespace(op->nbr);
	const char *uid = kube_object_uid(op->nbr);
	const char *status_pod = json_field_str(json_object_get(op->nbr, "status"), "podName");
	enum controller_phase phase = controller_phase_of(op->nbr);
	struct request_state *s = state_get(r, op->key, uid);
	char *pod_name = controller_pod_name(kube_object_name(op->nbr));
	json_t *pod;

	if (!pod_name) {
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (s && s->stale_rv && strcmp(s->stale_rv, kube_object_resource_version(op->nbr)) == 0) {
		/* Our own write is on its way through the watch. */
		free(pod_name);
		op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	pod = kube_informer_get(r->pods, ns, pod_name);
	if (pod && !controller_pod_owned_by(pod, uid)) {
		log_info("nbr=%s: pod %s belongs to another owner; waiting for it to go", op->key,
		    pod_name);
		free(pod_name);
		op_finish(op, KUBE_QUEUE_FORGET, FOREIGN_POD_RECHECK_MS);
		return;
	}
	/* A claimed pool pod: by what this incarnation claimed, else by the
	 * name its status records. */
	if (!pod && s)
		pod = owned_pod(r, ns, s->claimed_pod, uid);
	if (!pod)
		pod = owned_pod(r, ns, status_pod, uid);
	if (!pod && s && s->expected_pod) {
		if (uv_now(r->loop) - s->expected_at < EXPECTATION_TTL_MS)
			pod = s->expected_pod;
		else
			state_clear_expected(s);
	}
	if (!pod && pool_on(r)) {
		/* Claimed before a restart, its status never written. */
		struct pod_scan ps = { .ns = ns, .owner_uid = uid };

		kube_informer_foreach(r->pods, scan_owned, &ps);
		pod = (json_t *)ps.found;
	}
	if (pod) {
		free(pod_name);
		pod_name = strdup(kube_object_name(pod));
	} else if (*status_pod) {
		free(pod_name);
		pod_name = strdup(status_pod);
	}
	if (!pod_name) {
		op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	if (controller_phase_terminal(phase)) {
		free(pod_name);
		if (pod && (!s || pod != s->expected_pod) && !being_deleted(pod)) {
			char *why = str_printf("the request is %s", controller_phase_name(phase));

			delete_pod(op, pod, why ? why : "the request ended");
			free(why);
			return;
		}
		op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (!pod && (phase == CONTROLLER_PHASE_PENDING || !*status_pod)) {
		free(pod_name);
		if (try_claim(op))
			return;
		create_pod(op);
		return;
	}
	compute_and_apply(op, pod, pod_name);
	free(pod_name);
}

void controller_reconcile(struct kube_queue *q, const char *key, void *data)
{
	struct controller_reconciler *r = data;
	const char *slash = strchr(key, '/');
	char ns[254];
	const char *name;
	json_t *nbr;
	struct reconcile_op *op;

	metric_add(r->m.reconciles, 1);
	if (strcmp(key, CONTROLLER_POOL_KEY) == 0) {
		op = op_create(r, q, key, NULL);
		if (!op) {
			kube_queue_done(q, key, KUBE_QUEUE_RETRY);
			return;
		}
		reconcile_pool(op);
		return;
	}
	if (!slash || (size_t)(slash - key) >= sizeof(ns)) {
		log_error("reconcile: malformed key \"%s\"", key);
		kube_queue_done(q, key, KUBE_QUEUE_FORGET);
		return;
	}
	memcpy(ns, key, (size_t)(slash - key));
	ns[slash - key] = '\0';
	name = slash + 1;
	nbr = kube_informer_get(r->requests, ns, name);
	op = op_create(r, q, key, nbr);
	if (!op) {
		log_error("nbr=%s: out of memory", key);
		kube_queue_done(q, key, KUBE_QUEUE_RETRY);
		return;
	}
	if (!nbr) {
		reconcile_gone(op, ns, name);
		return;
	}
	if (being_deleted(nbr)) {
		/* The garbage collector removes its pod (foreground deletion
		 * even waits for that). */
		op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	reconcile_request(op);
}

/* ---------- lifecycle ---------- */

struct controller_reconciler *controller_reconciler_create(struct kube_client *c,
    struct kube_informer *requests, struct kube_informer *pods,
    struct kube_event_recorder *events, const struct controller_reconcile_options *o,
    struct metrics *metrics)
{
	struct controller_reconciler *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->nbuckets = STATE_BUCKETS_MIN;
	r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
	if (!r->buckets) {
		free(r);
		return NULL;
	}
	r->client = c;
	r->loop = kube_client_loop(c);
	r->requests = requests;
	r->pods = pods;
	r->events = events;
	r->opts = *o;
	metrics_init(&r->m, metrics);
	return r;
}

void controller_reconciler_destroy(struct controller_reconciler *r)
{
	if (!r)
		return;
	while (r->ops) {
		struct reconcile_op *op = r->ops;

		if (op->request)
			kube_client_cancel(r->client, op->request);
		op_free(op);
	}
	for (size_t i = 0; i < r->nbuckets; i++) {
		while (r->buckets[i]) {
			struct request_state *s = r->buckets[i];

			r->buckets[i] = s->next;
			state_free(s);
		}
	}
	free(r->buckets);
	mark_free_all(&r->pool_pending);
	mark_free_all(&r->pool_taken);
	free(r);
}

size_t controller_reconciler_in_flight(const struct controller_reconciler *r)
{
	return r->in_flight;
}
