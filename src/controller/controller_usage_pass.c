#include "controller_usage_pass.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "controller_builder.h"
#include "controller_builders.h"
#include "controller_reconcile_internal.h"
#include "controller_reconcile_op.h"
#include "controller_usage.h"
#include "controller_usage_ledger.h"
#include "log.h"

/* The usage cache has not synced yet: look again this soon. */
#define USAGE_SYNC_WAIT_MS 1000

char *reconcile_usage_queue_key(const char *ns, const char *identity)
{
	return str_printf("%s%s/%s", USAGE_KEY_PREFIX, ns, identity);
}

/* "ns" and "identity" of the pass. */
static bool split(const struct reconcile_op *op, char ns[254], const char **identity)
{
	const char *k = op->key + strlen(USAGE_KEY_PREFIX), *slash = strchr(k, '/');

	if (!slash || slash == k || (size_t)(slash - k) >= 254 || !slash[1])
		return false;
	memcpy(ns, k, (size_t)(slash - k));
	ns[slash - k] = '\0';
	*identity = slash + 1;
	return true;
}

struct live_list {
	struct usage_live *items;
	size_t n, cap;
	int64_t now_ms;
	bool nomem;
};

/* Builders that exist for the identity: in the API (a uid) and not being
 * deleted. Their time starts when the ledger first lists them, that is at
 * their creation or claim (each queues this pass). */
static void add_live(struct controller_builder *b, void *data)
{
	struct live_list *l = data;
	enum builder_state s = controller_builder_state(b);

	if (s == BUILDER_DELETING || s == BUILDER_CREATING || !*controller_builder_uid(b))
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct usage_live *items = realloc(l->items, cap * sizeof(*items));

		if (!items) {
			l->nomem = true;
			return;
		}
		l->items = items;
		l->cap = cap;
	}
	l->items[l->n++] = (struct usage_live){ .name = controller_builder_name(b),
		.uid = controller_builder_uid(b), .since_ms = l->now_ms };
}

static void finish_pass(struct reconcile_op *op, size_t n_live)
{
	/* Live builders: their time moves on, so come back. */
	reconcile_op_finish(op, KUBE_QUEUE_FORGET, n_live ? op->r->opts.usage_interval_ms : 0);
}

static void on_status_written(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct controller_reconciler *r = op->r;
	char ns[254];
	const char *identity;
	bool ok = resp->status == 200;
	size_t n_live = op->usage_live;

	op->request = 0;
	if (!split(op, ns, &identity)) {
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	usage_ledger_end(r->ledger, ns, identity, ok);
	if (ok) {
		metric_add(r->m.usage_writes, 1);
		log_debug("nu=%s/%s: usage written", ns, identity);
		finish_pass(op, n_live);
		return;
	}
	if (resp->status == 409)
		metric_add(r->m.conflicts, 1);
	else
		log_error("nu=%s/%s: writing the usage failed: HTTP %ld %s (kept; tried again)", ns,
		    identity, resp->status, resp->message);
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

/* The status of base (the cached or just-created NixUsage) plus the ledger. */
static void write_status(struct reconcile_op *op, const json_t *base, const char *ns,
    const char *identity)
{
	struct controller_reconciler *r = op->r;
	struct live_list live = { .now_ms = reconcile_wall_ms() };
	const json_t *old = json_object_get(base, "status");
	struct usage_counts add;
	const struct usage_ended *ended;
	size_t n_ended;
	struct usage_input in;
	json_t *st = NULL, *obj;
	bool changed;
	char *err = NULL;
	int64_t last;

	controller_builders_foreach_of(r->builders, ns, identity, add_live, &live);
	if (live.nomem) {
		free(live.items);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	usage_ledger_begin(r->ledger, ns, identity, &add, &ended, &n_ended);
	in = (struct usage_input){ .old_status = old, .add = &add, .live = live.items,
		.n_live = live.n, .ended = ended, .n_ended = n_ended, .now_ms = live.now_ms };
	if (controller_usage_status(&in, &st, &changed, &err) < 0) {
		usage_ledger_end(r->ledger, ns, identity, false);
		free(live.items);
		/* Written by hand, or by something that is not us: never over it. */
		log_error("nu=%s/%s: %s; not updated (what would be added is kept: fix or delete "
		    "the object)", ns, identity, err ? err : "out of memory");
		free(err);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	free(live.items);
	last = controller_usage_last_update(old);
	op->usage_live = live.n;
	if (!changed && n_ended == 0 && last >= 0 &&
	    live.now_ms - last < (int64_t)r->opts.usage_interval_ms) {
		json_decref(st);
		usage_ledger_end(r->ledger, ns, identity, true);
		finish_pass(op, live.n);
		return;
	}
	obj = json_deep_copy(base);
	if (!obj || json_object_set_new(obj, "status", st) < 0) {
		json_decref(obj);
		usage_ledger_end(r->ledger, ns, identity, false);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->request = kube_update_status(r->client, &kube_resource_nixusages, ns, identity, obj,
	    on_status_written, op);
	json_decref(obj);
	if (!op->request) {
		usage_ledger_end(r->ledger, ns, identity, false);
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
	}
}

static void on_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	char ns[254];
	const char *identity;

	op->request = 0;
	if (!split(op, ns, &identity)) {
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (resp->status == 201 && json_is_object(resp->body)) {
		log_info("nu=%s/%s: created the identity's NixUsage", ns, identity);
		write_status(op, resp->body, ns, identity);
		return;
	}
	/* 409: made already, not cached yet; its event brings it. */
	if (resp->status != 409)
		log_error("nu=%s/%s: cannot create the NixUsage: HTTP %ld %s (tried again)", ns,
		    identity, resp->status, resp->message);
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

static void count_live(struct controller_builder *b, void *data)
{
	enum builder_state s = controller_builder_state(b);

	if (s != BUILDER_DELETING && *controller_builder_uid(b))
		(*(size_t *)data)++;
}

void reconcile_usage(struct reconcile_op *op)
{
	struct controller_reconciler *r = op->r;
	char ns[254];
	const char *identity;
	size_t live = 0;
	json_t *obj;

	if (!split(op, ns, &identity) || !controller_builder_identity_valid(identity)) {
		log_error("reconcile: malformed usage key \"%s\"", op->key);
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	if (!r->usages || !kube_informer_synced(r->usages)) {
		/* The ledger keeps counting meanwhile. */
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, USAGE_SYNC_WAIT_MS);
		return;
	}
	if (op->nbr) {
		write_status(op, op->nbr, ns, identity);
		return;
	}
	controller_builders_foreach_of(r->builders, ns, identity, count_live, &live);
	if (!live && !usage_ledger_pending(r->ledger, ns, identity)) {
		reconcile_op_finish(op, KUBE_QUEUE_FORGET, 0);
		return;
	}
	obj = controller_usage_build(ns, identity);
	if (!obj) {
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
		return;
	}
	op->request = kube_create(r->client, &kube_resource_nixusages, ns, obj, on_created, op);
	json_decref(obj);
	if (!op->request)
		reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}
