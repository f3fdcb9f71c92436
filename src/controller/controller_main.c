/* nrbc controller: the process around the reconciler. Informers fill the
 * caches on every replica (so /readyz means "caches synced" everywhere);
 * only the leader runs the work queue. A leader that loses the lease (the
 * API gone past the renew deadline, or another holder) stops reconciling at
 * once and stays a candidate: when it wins again, a new queue gets every
 * cached request and pod. SIGTERM stops taking work, waits for passes in
 * flight up to --shutdown-timeout, releases the lease, exits 0. */
#include <signal.h>
#include <stdio.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "controller_pod.h"
#include "controller_reconcile.h"
#include "controller_slim.h"
#include "controller_usage_metrics.h"
#include "flags.h"
#include "health.h"
#include "kube/kube_client.h"
#include "kube/kube_config.h"
#include "kube/kube_event.h"
#include "kube/kube_informer.h"
#include "kube/kube_lease.h"
#include "kube/kube_queue.h"
#include "log.h"
#include "metrics.h"
#include "signals.h"

#define LEASE_NAME "nrbc-controller"
#define QUEUE_BACKOFF_BASE_MS 10
#define QUEUE_BACKOFF_MAX_MS 30000
#define EVENTS_MAX_IN_FLIGHT 256
#define DRAIN_CHECK_MS 10
/* After a burst of work, hand the freed heap back to the kernel: parsing
 * whole API objects (then cutting them down for the caches) leaves holes
 * that glibc keeps otherwise, and RSS would stay at the burst's peak. */
#define TRIM_AFTER_IDLE_MS 2000
/* Leadership won back while passes of the lost term are still in flight:
 * the new queue starts once they are over (a key is never processed twice
 * at once), checked this often. */
#define REACTIVATE_CHECK_MS 100

struct controller_flags {
	char *builder_image;
	long remote_port;
	char *nix_config;
	char *ssh_key_secret;
	long health_port;
	char *health_address;
	uint64_t shutdown_timeout_ms;
	char *namespace;
	char *kubeconfig;
	char *default_cpu_request;
	char *default_cpu_limit;
	char *default_memory_request;
	char *default_memory_limit;
	uint64_t unschedulable_timeout_ms;
	bool leader_elect;
	char *leader_election_namespace;
	uint64_t lease_duration_ms;
	uint64_t renew_deadline_ms;
	uint64_t retry_period_ms;
	char *log_format;
	char *log_level;
	long workers;
	long warm_pool_size;
	long builder_slots;
	long max_builders_per_identity;
	char *builder_sibling_proxy;
	char *proxy_host_key_config_map;
	uint64_t builder_idle_timeout_ms;
	uint64_t builder_scale_out_wait_ms;
	uint64_t builder_drain_timeout_ms;
	uint64_t usage_interval_ms;
	long usage_metrics_identities;
	long quota_max_builders;
	bool builder_sandbox;
	char *builder_sandbox_seccomp;
};

enum controller_state {
	CONTROLLER_STARTING,  /* caches filling */
	CONTROLLER_STANDBY,   /* caches synced, not the leader */
	CONTROLLER_ACTIVE,    /* leader (or no election): the queue runs */
	CONTROLLER_DRAINING,  /* shutting down: no new passes, in-flight finish */
	CONTROLLER_RELEASING, /* giving the lease up */
	CONTROLLER_STOPPED,   /* everything closing; the loop ends */
	CONTROLLER_STATE_COUNT,
};

static const char *const controller_state_names[CONTROLLER_STATE_COUNT] = {
	[CONTROLLER_STARTING] = "starting",
	[CONTROLLER_STANDBY] = "standby",
	[CONTROLLER_ACTIVE] = "active",
	[CONTROLLER_DRAINING] = "draining",
	[CONTROLLER_RELEASING] = "releasing",
	[CONTROLLER_STOPPED] = "stopped",
};

struct controller {
	uv_loop_t loop;
	struct controller_flags f;
	enum controller_state state;
	int exit_code;
	bool leading;
	char *identity;
	struct kube_config *cfg;
	struct kube_client *client;
	struct kube_informer *requests;
	struct kube_informer *pods;
	struct kube_informer *builders;
	struct kube_informer *classes;
	struct kube_informer *usages;
	struct kube_event_recorder *events;
	struct controller_reconciler *rec;
	struct kube_queue *queue;
	struct kube_queue *old_queue; /* paused, of a lost term: passes in flight */
	struct kube_lease *lease;
	struct metrics *metrics;
	struct usage_metrics *usage_metrics;
	struct health_server *health;
	struct signals *signals;
	uv_timer_t drain_timer;
	uv_timer_t teardown_timer;
	uv_timer_t trim_timer;
	uv_timer_t reactivate_timer;
	uint64_t drain_deadline;
	struct metric *m_queue_depth;
	struct metric *m_in_flight;
	struct metric *m_leader;
	struct metric *m_requests_cached;
	struct metric *m_pods_cached;
	struct metric *m_cache_bytes;
};

static void controller_shutdown(struct controller *c, const char *why, int exit_code);

static void set_state(struct controller *c, enum controller_state next)
{
	if (c->state == next)
		return;
	log_debug("%s => %s", controller_state_names[c->state],
	    controller_state_names[next]);
	c->state = next;
}

static void update_gauges(struct controller *c)
{
	metric_set(c->m_queue_depth, c->queue ? (double)kube_queue_depth(c->queue) : 0);
	metric_set(c->m_in_flight, c->rec ? (double)controller_reconciler_in_flight(c->rec) : 0);
	metric_set(c->m_leader, c->leading || (!c->f.leader_elect &&
	    c->state == CONTROLLER_ACTIVE) ? 1 : 0);
	metric_set(c->m_requests_cached, c->requests ?
	    (double)kube_informer_size(c->requests) : 0);
	metric_set(c->m_pods_cached, c->pods ? (double)kube_informer_size(c->pods) : 0);
	metric_set(c->m_cache_bytes, (double)((c->requests ? kube_informer_cached_bytes(c->requests) :
	    0) + (c->builders ? kube_informer_cached_bytes(c->builders) : 0) +
	    (c->pods ? kube_informer_cached_bytes(c->pods) : 0)));
}

static void enqueue(struct controller *c, const char *key)
{
	if (!c->queue || c->state != CONTROLLER_ACTIVE || !key)
		return;
	kube_queue_add(c->queue, key);
	update_gauges(c);
}

static void enqueue_object(struct controller *c, const json_t *obj)
{
	char *key = kube_object_key(obj);

	enqueue(c, key);
	free(key);
}

/* ---------- informer handlers ---------- */

static void on_request_add(json_t *obj, void *data)
{
	struct controller *c = data;

	controller_reconciler_request_seen(c->rec, obj);
	enqueue_object(c, obj);
}

static void enqueue_key(const char *key, void *data);

static void on_request_update(json_t *old_obj, json_t *new_obj, void *data)
{
	struct controller *c = data;

	/* Only the leader counts: it is the one that writes what it counted. */
	if (c->state == CONTROLLER_ACTIVE)
		controller_reconciler_request_ended(c->rec, old_obj, new_obj, false, enqueue_key, c);
	enqueue_object(c, new_obj);
}

static void on_request_delete(json_t *obj, void *data)
{
	struct controller *c = data;

	if (c->state == CONTROLLER_ACTIVE)
		controller_reconciler_request_ended(c->rec, NULL, obj, true, enqueue_key, c);
	controller_reconciler_request_gone(c->rec, obj);
	/* The pass on a missing request deletes its pod at once. */
	enqueue_object(c, obj);
}

static void enqueue_key(const char *key, void *data)
{
	enqueue(data, key);
}

static void on_pod_event(struct controller *c, json_t *pod, bool deleted)
{
	controller_reconciler_pod_seen(c->rec, pod, deleted);
	controller_reconciler_keys_for_pod(c->rec, pod, enqueue_key, c);
}

static void on_pod_add(json_t *obj, void *data)
{
	on_pod_event(data, obj, false);
}

static void on_pod_update(json_t *old_obj, json_t *new_obj, void *data)
{
	on_pod_event(data, new_obj, false);
}

static void on_pod_delete(json_t *obj, void *data)
{
	on_pod_event(data, obj, true);
}

static void on_builder_event(struct controller *c, json_t *obj, bool deleted)
{
	char *key = kube_object_key(obj);

	controller_reconciler_builder_seen(c->rec, obj, deleted);
	if (key)
		controller_reconciler_keys_for_builder_key(c->rec, key, enqueue_key, c);
	free(key);
	/* Builders coming and going change how many unclaimed ones there are. */
	enqueue(c, CONTROLLER_POOL_KEY);
}

static void on_class_add(json_t *obj, void *data)
{
	(void)obj;
	enqueue(data, CONTROLLER_POOL_KEY);
}

static void on_class_update(json_t *old, json_t *obj, void *data)
{
	(void)old;
	on_class_add(obj, data);
}

static void on_class_delete(json_t *obj, void *data)
{
	on_class_add(obj, data);
}

static void on_builder_add(json_t *obj, void *data)
{
	on_builder_event(data, obj, false);
}

static void on_builder_update(json_t *old_obj, json_t *new_obj, void *data)
{
	on_builder_event(data, new_obj, false);
}

static void on_builder_delete(json_t *obj, void *data)
{
	on_builder_event(data, obj, true);
}

static bool caches_synced(const struct controller *c)
{
	return c->requests && c->pods && c->builders && c->classes &&
	    kube_informer_synced(c->requests) && kube_informer_synced(c->pods) &&
	    kube_informer_synced(c->builders) && kube_informer_synced(c->classes);
}

static bool check_ready(void *data, const char **why)
{
	struct controller *c = data;

	if (c->state >= CONTROLLER_DRAINING) {
		*why = "shutting down";
		return false;
	}
	if (!caches_synced(c)) {
		*why = "informer caches not synced yet";
		return false;
	}
	return true;
}

/* ---------- the queue ---------- */

static void on_trim(uv_timer_t *t)
{
	struct controller *c = t->data;

	if (c->queue && (kube_queue_depth(c->queue) > 0 ||
	    controller_reconciler_in_flight(c->rec) > 0)) {
		uv_timer_start(&c->trim_timer, on_trim, TRIM_AFTER_IDLE_MS, 0);
		return;
	}
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

static void process_key(struct kube_queue *q, const char *key, void *data)
{
	struct controller *c = data;

	controller_reconcile(q, key, c->rec);
	update_gauges(c);
	if (!uv_is_active((uv_handle_t *)&c->trim_timer))
		uv_timer_start(&c->trim_timer, on_trim, TRIM_AFTER_IDLE_MS, 0);
}

static void add_request_key(json_t *obj, void *data)
{
	enqueue_object(data, obj);
}

static void add_pod_owner_key(json_t *pod, void *data)
{
	struct controller *c = data;

	controller_reconciler_keys_for_pod(c->rec, pod, enqueue_key, c);
}

static void add_builder_keys(json_t *obj, void *data)
{
	struct controller *c = data;
	char *key = kube_object_key(obj);

	if (key)
		controller_reconciler_keys_for_builder_key(c->rec, key, enqueue_key, c);
	free(key);
}

/* Both caches full and allowed to act: every request gets a pass, and so
 * does every pod's owner (a pod whose request vanished while nobody was
 * leading is deleted by that pass). */
static void maybe_activate(struct controller *c)
{
	if (c->state >= CONTROLLER_DRAINING || c->state == CONTROLLER_ACTIVE)
		return;
	if (!caches_synced(c))
		return;
	if (c->f.leader_elect && !c->leading) {
		set_state(c, CONTROLLER_STANDBY);
		return;
	}
	c->queue = kube_queue_create(&c->loop, (size_t)c->f.workers, QUEUE_BACKOFF_BASE_MS,
	    QUEUE_BACKOFF_MAX_MS, process_key, c);
	if (!c->queue) {
		controller_shutdown(c, "cannot create the work queue", 1);
		return;
	}
	set_state(c, CONTROLLER_ACTIVE);
	update_gauges(c);
	log_info("active: %zu NixBuildRequests, %zu NixBuilders, %zu builder pods cached",
	    kube_informer_size(c->requests), kube_informer_size(c->builders),
	    kube_informer_size(c->pods));
	/* Requests first: their passes rebuild which builder serves whom
	 * before any builder pass judges whether it is idle. */
	kube_informer_foreach(c->requests, add_request_key, c);
	kube_informer_foreach(c->builders, add_builder_keys, c);
	kube_informer_foreach(c->pods, add_pod_owner_key, c);
	enqueue(c, CONTROLLER_POOL_KEY);
	/* After the builders: their passes know who is live. */
	controller_reconciler_usage_keys(c->rec, true, enqueue_key, c);
}

/* The usage cache is not part of readiness (usage never holds a build up);
 * once it is filled, every identity's usage gets a pass. */
static void on_usage_add(json_t *obj, void *data)
{
	usage_metrics_update(((struct controller *)data)->usage_metrics, NULL, obj);
}

static void on_usage_update(json_t *old_obj, json_t *new_obj, void *data)
{
	usage_metrics_update(((struct controller *)data)->usage_metrics, old_obj, new_obj);
}

static void on_usage_delete(json_t *obj, void *data)
{
	usage_metrics_update(((struct controller *)data)->usage_metrics, obj, NULL);
}

static void on_usage_synced(void *data)
{
	struct controller *c = data;

	if (c->state == CONTROLLER_ACTIVE)
		controller_reconciler_usage_keys(c->rec, false, enqueue_key, c);
}

static void on_synced(void *data)
{
	maybe_activate(data);
}

static void on_reactivate_check(uv_timer_t *t)
{
	struct controller *c = t->data;

	if (c->old_queue && kube_queue_in_flight(c->old_queue) > 0)
		return;
	uv_timer_stop(&c->reactivate_timer);
	kube_queue_destroy(c->old_queue);
	c->old_queue = NULL;
	if (c->leading)
		maybe_activate(c);
}

/* ---------- leader election ---------- */

static void on_started_leading(void *data)
{
	struct controller *c = data;

	c->leading = true;
	update_gauges(c);
	if (c->old_queue) {
		/* The last term's passes finish first. */
		uv_timer_start(&c->reactivate_timer, on_reactivate_check, 0, REACTIVATE_CHECK_MS);
		return;
	}
	maybe_activate(c);
}

static void on_stopped_leading(void *data)
{
	struct controller *c = data;

	c->leading = false;
	uv_timer_stop(&c->reactivate_timer);
	if (c->state == CONTROLLER_ACTIVE) {
		/* Another replica may be acting already: no new pass from here
		 * on. The paused queue stays until its passes in flight are
		 * over; the cached objects are all queued again on winning. */
		log_warnx("standing by: not reconciling until the lease is won again "
		    "(%zu keys were queued)", c->queue ? kube_queue_depth(c->queue) : 0);
		kube_queue_pause(c->queue);
		if (c->old_queue)
			kube_queue_destroy(c->old_queue);
		c->old_queue = c->queue;
		c->queue = NULL;
		set_state(c, CONTROLLER_STANDBY);
	}
	update_gauges(c);
}

/* ---------- shutdown ---------- */

static void teardown(uv_timer_t *t)
{
	struct controller *c = t->data;

	set_state(c, CONTROLLER_STOPPED);
	kube_queue_destroy(c->queue);
	c->queue = NULL;
	kube_queue_destroy(c->old_queue);
	c->old_queue = NULL;
	controller_reconciler_destroy(c->rec);
	c->rec = NULL;
	kube_lease_destroy(c->lease);
	c->lease = NULL;
	kube_informer_destroy(c->requests);
	c->requests = NULL;
	kube_informer_destroy(c->pods);
	c->pods = NULL;
	kube_informer_destroy(c->builders);
	c->builders = NULL;
	kube_informer_destroy(c->classes);
	c->classes = NULL;
	kube_informer_destroy(c->usages);
	c->usages = NULL;
	kube_event_recorder_destroy(c->events);
	c->events = NULL;
	kube_client_destroy(c->client);
	c->client = NULL;
	health_server_destroy(c->health);
	c->health = NULL;
	signals_destroy(c->signals);
	c->signals = NULL;
	uv_close((uv_handle_t *)&c->drain_timer, NULL);
	uv_close((uv_handle_t *)&c->teardown_timer, NULL);
	uv_close((uv_handle_t *)&c->trim_timer, NULL);
	uv_close((uv_handle_t *)&c->reactivate_timer, NULL);
}

static void on_lease_released(void *data)
{
	struct controller *c = data;

	/* Not from inside the lease's own callback: on the next loop turn. */
	uv_timer_start(&c->teardown_timer, teardown, 0, 0);
}

static void release(struct controller *c)
{
	set_state(c, CONTROLLER_RELEASING);
	uv_timer_stop(&c->drain_timer);
	if (c->lease)
		kube_lease_release(c->lease, on_lease_released, c);
	else
		on_lease_released(c);
}

static void on_drain_check(uv_timer_t *t)
{
	struct controller *c = t->data;
	size_t left = c->rec ? controller_reconciler_in_flight(c->rec) : 0;

	if (left == 0) {
		log_info("no reconcile in flight");
		release(c);
		return;
	}
	if (uv_now(&c->loop) >= c->drain_deadline) {
		log_warnx("shutdown timeout: giving up %zu reconcile(s) in flight", left);
		release(c);
	}
}

static void controller_shutdown(struct controller *c, const char *why, int exit_code)
{
	if (c->state >= CONTROLLER_DRAINING)
		return;
	log_info("shutting down: %s", why);
	c->exit_code = exit_code;
	set_state(c, CONTROLLER_DRAINING);
	if (c->queue)
		kube_queue_pause(c->queue);
	c->drain_deadline = uv_now(&c->loop) + c->f.shutdown_timeout_ms;
	uv_timer_start(&c->drain_timer, on_drain_check, 0, DRAIN_CHECK_MS);
}

static void on_signal(void *data, int signum)
{
	controller_shutdown(data, signum == SIGINT ? "SIGINT" : "SIGTERM", 0);
}

/* ---------- start-up ---------- */

static int start_health(struct controller *c)
{
	char *err = NULL;

	c->metrics = metrics_create();
	if (!c->metrics)
		return -1;
	c->m_queue_depth = metrics_gauge(c->metrics, "nrbc_controller_queue_depth",
	    "Keys waiting in the work queue.", NULL);
	c->m_in_flight = metrics_gauge(c->metrics, "nrbc_controller_reconciles_in_flight",
	    "Reconcile passes waiting for the API.", NULL);
	c->m_leader = metrics_gauge(c->metrics, "nrbc_controller_leader",
	    "1 while this replica holds the leader lease (or runs without election).", NULL);
	c->m_requests_cached = metrics_gauge(c->metrics, "nrbc_controller_requests_cached",
	    "NixBuildRequests in the informer cache.", NULL);
	c->m_pods_cached = metrics_gauge(c->metrics, "nrbc_controller_pods_cached",
	    "Builder pods in the informer cache.", NULL);
	c->usage_metrics = usage_metrics_create(c->metrics, (size_t)c->f.usage_metrics_identities);
	if (!c->usage_metrics)
		return -1;
	c->m_cache_bytes = metrics_gauge(c->metrics, "nrbc_controller_cache_bytes",
	    "Bytes of object text the informer caches hold (requests, builders, pods).", NULL);
	c->health = health_server_create(&c->loop, c->f.health_address, (int)c->f.health_port,
	    c->metrics, &err);
	if (!c->health) {
		log_error("health server on %s:%ld: %s", c->f.health_address,
		    c->f.health_port, err ? err : "failed");
		free(err);
		return -1;
	}
	health_server_set_ready(c->health, check_ready, c);
	log_info("health and metrics on %s:%d", c->f.health_address,
	    health_server_port(c->health));
	return 0;
}

static int start_kube(struct controller *c)
{
	static const struct kube_informer_handlers request_handlers = {
		.on_add = on_request_add,
		.on_update = on_request_update,
		.on_delete = on_request_delete,
		.on_synced = on_synced,
		.transform = controller_slim_request_transform,
	};
	static const struct kube_informer_handlers builder_handlers = {
		.on_add = on_builder_add,
		.on_update = on_builder_update,
		.on_delete = on_builder_delete,
		.on_synced = on_synced,
		.transform = controller_slim_request_transform,
	};
	/* Classes are read where a request names one; a change reaches the
	 * builders made after it. Each class's warm pool follows its class. */
	static const struct kube_informer_handlers class_handlers = {
		.on_add = on_class_add,
		.on_update = on_class_update,
		.on_delete = on_class_delete,
		.on_synced = on_synced,
	};
	static const struct kube_informer_handlers usage_handlers = {
		.on_add = on_usage_add,
		.on_update = on_usage_update,
		.on_delete = on_usage_delete,
		.on_synced = on_usage_synced,
	};
	static const struct kube_informer_handlers pod_handlers = {
		.on_add = on_pod_add,
		.on_update = on_pod_update,
		.on_delete = on_pod_delete,
		.on_synced = on_synced,
		.transform = controller_slim_pod_transform,
	};
	const char *ns = c->f.namespace && *c->f.namespace ? c->f.namespace : NULL;
	char *err = NULL;
	struct controller_reconcile_caches caches;
	struct controller_reconcile_options ro = {
		.pod = {
			.builder_image = c->f.builder_image,
			.remote_port = c->f.remote_port,
			.nix_config = c->f.nix_config,
			.ssh_key_secret = c->f.ssh_key_secret,
			.default_cpu_request = c->f.default_cpu_request,
			.default_memory_request = c->f.default_memory_request,
			.default_cpu_limit = c->f.default_cpu_limit,
			.default_memory_limit = c->f.default_memory_limit,
			/* Whole seconds, at least 1: 0 would make every stop a kill. */
			.termination_grace_seconds = c->f.builder_drain_timeout_ms >= 1000 ?
			    (long)(c->f.builder_drain_timeout_ms / 1000) : 1,
			.sandbox = c->f.builder_sandbox,
			.sandbox_seccomp_profile = c->f.builder_sandbox_seccomp,
			.sibling_proxy = c->f.builder_sibling_proxy,
			.proxy_host_key_config_map = c->f.proxy_host_key_config_map,
		},
		.unschedulable_timeout_ms = c->f.unschedulable_timeout_ms,
		.warm_pool_size = c->f.warm_pool_size,
		.pool_namespace = ns,
		.builder_slots = c->f.builder_slots,
		.max_builders_per_identity = c->f.max_builders_per_identity,
		.builder_idle_timeout_ms = c->f.builder_idle_timeout_ms,
		.builder_scale_out_wait_ms = c->f.builder_scale_out_wait_ms,
		.usage_interval_ms = c->f.usage_interval_ms,
		.quota_max_builders = c->f.quota_max_builders,
	};

	if (c->f.warm_pool_size > 0 && !ns) {
		/* Which namespace would unclaimed builders live in? */
		log_info("warm pool off: --warm-pool-size needs --namespace");
		c->f.warm_pool_size = 0;
		ro.warm_pool_size = 0;
	} else if (c->f.warm_pool_size > 0) {
		log_info("warm pool: %ld unclaimed builders in %s", c->f.warm_pool_size, ns);
	}
	c->cfg = kube_config_load(c->f.kubeconfig, NULL, &err);
	if (!c->cfg) {
		log_error("%s", err ? err : "no Kubernetes configuration");
		free(err);
		return -1;
	}
	c->client = kube_client_create(&c->loop, c->cfg);
	if (!c->client)
		return -1;
	c->events = kube_event_recorder_create(c->client, "nrbc-controller", c->identity,
	    EVENTS_MAX_IN_FLIGHT);
	c->requests = kube_informer_create(c->client, &kube_resource_nixbuildrequests, ns, NULL,
	    &request_handlers, c);
	c->pods = kube_informer_create(c->client, &kube_resource_pods, ns,
	    CONTROLLER_POD_SELECTOR, &pod_handlers, c);
	c->builders = kube_informer_create(c->client, &kube_resource_nixbuilders, ns, NULL,
	    &builder_handlers, c);
	c->classes = kube_informer_create(c->client, &kube_resource_nixbuilderclasses, ns, NULL,
	    &class_handlers, c);
	c->usages = kube_informer_create(c->client, &kube_resource_nixusages, ns, NULL,
	    &usage_handlers, c);
	if (!c->events || !c->requests || !c->pods || !c->builders || !c->classes || !c->usages)
		return -1;
	caches = (struct controller_reconcile_caches){ .requests = c->requests, .pods = c->pods,
		.builders = c->builders, .classes = c->classes, .usages = c->usages };
	c->rec = controller_reconciler_create(c->client, &caches, c->events, &ro, c->metrics);
	if (!c->rec)
		return -1;
	if (c->f.leader_elect) {
		struct kube_lease_options lo = {
			.namespace = c->f.leader_election_namespace &&
			    *c->f.leader_election_namespace ? c->f.leader_election_namespace :
			    ns ? ns : kube_config_namespace(c->cfg),
			.name = LEASE_NAME,
			.identity = c->identity,
			.lease_duration_ms = c->f.lease_duration_ms,
			.renew_deadline_ms = c->f.renew_deadline_ms,
			.retry_period_ms = c->f.retry_period_ms,
		};
		static const struct kube_lease_callbacks lease_cb = {
			.started_leading = on_started_leading,
			.stopped_leading = on_stopped_leading,
		};

		log_info("leader election on lease %s/%s as %s", lo.namespace,
		    lo.name, c->identity);
		c->lease = kube_lease_create(c->client, &lo, &lease_cb, c);
		if (!c->lease || kube_lease_start(c->lease) < 0)
			return -1;
	}
	if (kube_informer_start(c->requests) < 0 || kube_informer_start(c->pods) < 0 ||
	    kube_informer_start(c->builders) < 0 || kube_informer_start(c->classes) < 0 ||
	    kube_informer_start(c->usages) < 0)
		return -1;
	log_info("watching NixBuildRequests, NixBuilders, NixBuilderClasses and builder pods in %s",
	    ns ? ns : "all namespaces");
	return 0;
}

static int parse_flags(struct controller_flags *f, const struct flag *table, size_t n,
    int argc, char **argv)
{
	enum log_level level;
	enum log_format format;
	enum flags_result fr = flags_parse(table, n, argc, argv, "controller",
	    "turn NixBuildRequests into builder pods");

	if (fr == FLAGS_HELP)
		return 0;
	if (fr != FLAGS_OK)
		return 2;
	if (log_level_parse(f->log_level, &level) < 0 ||
	    log_format_parse(f->log_format, &format) < 0) {
		fprintf(stderr, "nrbc controller: --log-level is error|warn|info|debug and "
		                "--log-format is text|json\n");
		return 2;
	}
	if (f->remote_port < 1 || f->remote_port > 65535 || f->health_port < 0 ||
	    f->health_port > 65535 || f->workers < 1 || f->workers > 10000 ||
	    f->warm_pool_size < 0 || f->warm_pool_size > 1000 || f->builder_slots < 1 ||
	    f->max_builders_per_identity < 0 || f->max_builders_per_identity > 1000 ||
	    f->builder_slots > 1000 || f->usage_interval_ms < 1000 ||
	    f->usage_metrics_identities < 0 || f->usage_metrics_identities > 10000 ||
	    f->quota_max_builders < 0 || f->quota_max_builders > 100000) {
		fprintf(stderr, "nrbc controller: --remote-port, --health-port, --workers, "
		                "--warm-pool-size, --builder-slots, --max-builders-per-identity "
		                "--usage-interval (at least 1s), --usage-metrics-identities "
		                "(0..10000) or --quota-max-builders out of range\n");
		return 2;
	}
	if (f->builder_sibling_proxy && *f->builder_sibling_proxy) {
		const char *colon = strrchr(f->builder_sibling_proxy, ':');
		long port = 0;

		if (!colon || colon == f->builder_sibling_proxy ||
		    flags_parse_long(colon + 1, &port) < 0 || port < 1 || port > 65535 ||
		    strpbrk(f->builder_sibling_proxy, " \t\n@/?&\"'$`\\")) {
			fprintf(stderr, "nrbc controller: --builder-sibling-proxy wants HOST:PORT\n");
			return 2;
		}
	}
	if (f->builder_sandbox && (!f->builder_sandbox_seccomp || !*f->builder_sandbox_seccomp)) {
		fprintf(stderr, "nrbc controller: --builder-sandbox needs a "
		                "--builder-sandbox-seccomp profile\n");
		return 2;
	}
	if (f->leader_elect && (f->renew_deadline_ms >= f->lease_duration_ms ||
	    f->retry_period_ms >= f->renew_deadline_ms || f->retry_period_ms == 0)) {
		fprintf(stderr, "nrbc controller: need retry period < renew deadline < "
		                "lease duration\n");
		return 2;
	}
	log_init("controller", level, format);
	return -1;
}

int controller_main(int argc, char **argv)
{
	struct controller *c = calloc(1, sizeof(*c));
	struct controller_flags *f;
	int rc;

	if (!c) {
		fprintf(stderr, "nrbc controller: out of memory\n");
		return 1;
	}
	f = &c->f;
	const struct flag table[] = {
		{ "builder-image", "NRBC_CONTROLLER_BUILDER_IMAGE", FLAG_STRING, &f->builder_image,
		    NULL, "container image of builder pods", true },
		{ "remote-port", "NRBC_CONTROLLER_REMOTE_PORT", FLAG_INT, &f->remote_port, "22",
		    "sshd port in builder pods", false },
		{ "nix-config", "NRBC_CONTROLLER_NIX_CONFIG", FLAG_STRING, &f->nix_config, NULL,
		    "ConfigMap with nix.conf, mounted at /etc/nix", true },
		{ "ssh-key-secret", "NRBC_CONTROLLER_SSH_KEY_SECRET", FLAG_STRING,
		    &f->ssh_key_secret, NULL,
		    "Secret with the keys (\"public\" and \"host-key\" reach builders)", true },
		{ "health-port", "NRBC_CONTROLLER_HEALTH_PORT", FLAG_INT, &f->health_port, "8081",
		    "port of /healthz, /readyz and /metrics", false },
		{ "health-address", "NRBC_CONTROLLER_HEALTH_ADDRESS", FLAG_STRING,
		    &f->health_address, "0.0.0.0", "address of the health server", false },
		{ "shutdown-timeout", "NRBC_CONTROLLER_SHUTDOWN_TIMEOUT", FLAG_DURATION,
		    &f->shutdown_timeout_ms, "30s", "how long reconciles in flight may finish",
		    false },
		{ "namespace", "NRBC_CONTROLLER_NAMESPACE", FLAG_STRING, &f->namespace, "",
		    "namespace to watch (empty: all)", false },
		{ "kubeconfig", "NRBC_CONTROLLER_KUBECONFIG", FLAG_STRING, &f->kubeconfig, NULL,
		    "kubeconfig file (default: in-cluster, $KUBECONFIG, ~/.kube/config)", false },
		{ "default-cpu-request", "NRBC_CONTROLLER_DEFAULT_CPU_REQUEST", FLAG_STRING,
		    &f->default_cpu_request, "", "builder cpu request when the spec sets none",
		    false },
		{ "default-cpu-limit", "NRBC_CONTROLLER_DEFAULT_CPU_LIMIT", FLAG_STRING,
		    &f->default_cpu_limit, "", "builder cpu limit when the spec sets none", false },
		{ "default-memory-request", "NRBC_CONTROLLER_DEFAULT_MEMORY_REQUEST", FLAG_STRING,
		    &f->default_memory_request, "", "builder memory request when the spec sets none",
		    false },
		{ "default-memory-limit", "NRBC_CONTROLLER_DEFAULT_MEMORY_LIMIT", FLAG_STRING,
		    &f->default_memory_limit, "", "builder memory limit when the spec sets none",
		    false },
		{ "unschedulable-timeout", "NRBC_CONTROLLER_UNSCHEDULABLE_TIMEOUT", FLAG_DURATION,
		    &f->unschedulable_timeout_ms, "2m",
		    "fail a request whose pod stays unschedulable this long", false },
		{ "leader-elect", "NRBC_CONTROLLER_LEADER_ELECT", FLAG_BOOL, &f->leader_elect,
		    "false", "elect a leader on a Lease (run several replicas safely)", false },
		{ "leader-election-namespace", "NRBC_CONTROLLER_LEADER_ELECTION_NAMESPACE",
		    FLAG_STRING, &f->leader_election_namespace, "",
		    "namespace of the Lease (default: --namespace, else the pod's)", false },
		{ "leader-election-lease-duration", "NRBC_CONTROLLER_LEASE_DURATION", FLAG_DURATION,
		    &f->lease_duration_ms, "15s", "lease duration", false },
		{ "leader-election-renew-deadline", "NRBC_CONTROLLER_RENEW_DEADLINE", FLAG_DURATION,
		    &f->renew_deadline_ms, "10s", "leader gives up without a renewal this long",
		    false },
		{ "leader-election-retry-period", "NRBC_CONTROLLER_RETRY_PERIOD", FLAG_DURATION,
		    &f->retry_period_ms, "2s", "interval between lease attempts", false },
		{ "log-format", "NRBC_CONTROLLER_LOG_FORMAT", FLAG_STRING, &f->log_format, "text",
		    "text or json", false },
		{ "log-level", "NRBC_CONTROLLER_LOG_LEVEL", FLAG_STRING, &f->log_level, "info",
		    "error, warn, info or debug", false },
		{ "workers", "NRBC_CONTROLLER_WORKERS", FLAG_INT, &f->workers, "64",
		    "reconcile passes in flight at once", false },
		{ "warm-pool-size", "NRBC_CONTROLLER_WARM_POOL_SIZE", FLAG_INT, &f->warm_pool_size,
		    "1", "unclaimed builders kept for new identities to claim (needs --namespace)",
		    false },
		{ "builder-slots", "NRBC_CONTROLLER_BUILDER_SLOTS", FLAG_INT, &f->builder_slots,
		    "4", "sessions one builder serves at once (the nrbc-client ConfigMap's "
		    "builder-slots)", false },
		{ "max-builders-per-identity", "NRBC_CONTROLLER_MAX_BUILDERS_PER_IDENTITY", FLAG_INT,
		    &f->max_builders_per_identity, "4", "builders of one class one client key may "
		    "hold at once (0: no bound; the ConfigMap's builders-per-key; a class's "
		    "maxBuildersPerIdentity overrides)", false },
		{ "builder-sibling-proxy", "NRBC_CONTROLLER_BUILDER_SIBLING_PROXY", FLAG_STRING,
		    &f->builder_sibling_proxy, "", "HOST:PORT of the proxy as builders reach it: a "
		    "key's builders substitute from its other builders through it "
		    "(empty: they do not)", false },
		{ "proxy-host-key-config-map", "NRBC_CONTROLLER_PROXY_HOST_KEY_CONFIG_MAP",
		    FLAG_STRING, &f->proxy_host_key_config_map, "nrbc-host-key", "ConfigMap with the "
		    "proxy's public host key (host-key.pub), which such builders pin", false },
		{ "builder-idle-timeout", "NRBC_CONTROLLER_BUILDER_IDLE_TIMEOUT", FLAG_DURATION,
		    &f->builder_idle_timeout_ms, "5m",
		    "delete an identity's builder after this long without a session", false },
		{ "builder-scale-out-wait", "NRBC_CONTROLLER_BUILDER_SCALE_OUT_WAIT", FLAG_DURATION,
		    &f->builder_scale_out_wait_ms, "250ms",
		    "how long a session waits for a slot on its key's full builders before "
		    "another builder starts (it then takes whichever is first: a slot or the "
		    "new builder)", false },
		{ "builder-drain-timeout", "NRBC_CONTROLLER_BUILDER_DRAIN_TIMEOUT", FLAG_DURATION,
		    &f->builder_drain_timeout_ms, "10m",
		    "how long a builder asked to stop (eviction, drain, deletion) lets its "
		    "sessions finish: its pod's terminationGracePeriodSeconds", false },
		{ "usage-interval", "NRBC_CONTROLLER_USAGE_INTERVAL", FLAG_DURATION,
		    &f->usage_interval_ms, "30s",
		    "how often an identity's NixUsage is brought up to date while it has "
		    "builders (session ends are written at once)", false },
		{ "usage-metrics-identities", "NRBC_CONTROLLER_USAGE_METRICS_IDENTITIES", FLAG_INT,
		    &f->usage_metrics_identities, "100",
		    "identities with /metrics series of their own (nrbc_usage_*); later ones "
		    "are added into identity=\"other\"", false },
		{ "quota-max-builders", "NRBC_CONTROLLER_QUOTA_MAX_BUILDERS", FLAG_INT,
		    &f->quota_max_builders, "0",
		    "builders of all classes one client key may hold at once (0: no quota); a "
		    "session that would need one more is refused, saying so; an identity's "
		    "NixUsage spec.maxBuilders overrides", false },
		{ "builder-sandbox", "NRBC_CONTROLLER_BUILDER_SANDBOX", FLAG_BOOL,
		    &f->builder_sandbox, "true",
		    "builds run in Nix's sandbox (user-namespaced pods with an unmasked /proc "
		    "and a Localhost seccomp profile: docs/security.md); a builder that "
		    "cannot sandbox fails at start, saying why", false },
		{ "builder-sandbox-seccomp", "NRBC_CONTROLLER_BUILDER_SANDBOX_SECCOMP",
		    FLAG_STRING, &f->builder_sandbox_seccomp, "nrbc/builder-sandbox.json",
		    "with --builder-sandbox: the builders' Localhost seccomp profile, relative "
		    "to the kubelet's seccomp directory", false },
	};
	size_t n = sizeof(table) / sizeof(table[0]);

	rc = parse_flags(f, table, n, argc, argv);
	if (rc >= 0)
		goto out_flags;
	rc = 1;
	c->identity = kube_lease_identity();
	if (!c->identity || uv_loop_init(&c->loop) < 0)
		goto out_flags;
	uv_timer_init(&c->loop, &c->drain_timer);
	uv_timer_init(&c->loop, &c->teardown_timer);
	uv_timer_init(&c->loop, &c->trim_timer);
	uv_timer_init(&c->loop, &c->reactivate_timer);
	c->drain_timer.data = c->teardown_timer.data = c->trim_timer.data = c;
	c->reactivate_timer.data = c;
	c->signals = signals_create(&c->loop, on_signal, c);
	if (!c->signals || start_health(c) < 0 || start_kube(c) < 0) {
		log_error("start-up failed");
		c->exit_code = 1;
		uv_timer_start(&c->teardown_timer, teardown, 0, 0);
		set_state(c, CONTROLLER_STOPPED);
	}
	uv_run(&c->loop, UV_RUN_DEFAULT);
	/* Close callbacks of everything torn down run here. */
	uv_run(&c->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&c->loop) != 0)
		log_warnx("handles left open at exit");
	kube_config_destroy(c->cfg);
	usage_metrics_destroy(c->usage_metrics);
	metrics_destroy(c->metrics);
	rc = c->exit_code;
	log_info("exit %d", rc);
out_flags:
	flags_free(table, n);
	free(c->identity);
	free(c);
	return rc;
}
