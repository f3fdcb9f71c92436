#include "kube_informer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "kube_store.h"
#include "kube_watch.h"
#include "log.h"

#define INFORMER_PAGE_SIZE 500
#define INFORMER_BACKOFF_MIN_MS 200
/* After an API outage, an informer is back within this (plus jitter) of the
 * API answering again. */
#define INFORMER_BACKOFF_MAX_MS 8000
/* A watch that ends cleanly this fast without a single event is treated as
 * a failure, so a misbehaving server cannot make us spin. */
#define INFORMER_SHORT_WATCH_MS 1000

enum informer_state {
	INFORMER_IDLE,
	INFORMER_LISTING,
	INFORMER_WATCHING,
	INFORMER_BACKOFF,
	INFORMER_STOPPED,
};

static const char *const informer_state_names[] = {
	[INFORMER_IDLE] = "idle",
	[INFORMER_LISTING] = "listing",
	[INFORMER_WATCHING] = "watching",
	[INFORMER_BACKOFF] = "backoff",
	[INFORMER_STOPPED] = "stopped",
};

struct kube_informer {
	struct kube_client *c;
	const struct kube_resource *r;
	char *ns;
	char *selector;
	char *desc; /* "pods in ns" for logs */
	struct kube_informer_handlers h;
	void *data;
	enum informer_state state;
	struct kube_store *cache;   /* key -> object */
	struct kube_store *listing; /* pages of a list in progress */
	uv_check_t turn_end;        /* ends the cache's loans once per loop turn */
	int pending_closes;
	char *rv;        /* last resourceVersion seen: list, event or bookmark */
	char *cont;      /* continue token of the next list page */
	uint64_t list_req;
	struct kube_watch *watch;
	uint64_t watch_started;
	size_t watch_events;
	uv_timer_t timer;
	bool relist_after_backoff;
	uint64_t backoff_ms;
	bool synced;
	bool destroyed;
	uint64_t seed;
};

static void informer_list_start(struct kube_informer *inf);
static void informer_watch_start(struct kube_informer *inf);

static void set_state(struct kube_informer *inf, enum informer_state st)
{
	if (inf->state == st)
		return;
	log_debug("kube: informer %s: %s => %s", inf->desc, informer_state_names[inf->state],
	    informer_state_names[st]);
	inf->state = st;
}

/* ---------- object helpers ---------- */

static const char *meta_str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(json_object_get(obj, "metadata"), key));

	return s ? s : "";
}

const char *kube_object_name(const json_t *obj)
{
	return meta_str(obj, "name");
}

const char *kube_object_namespace(const json_t *obj)
{
	return meta_str(obj, "namespace");
}

const char *kube_object_uid(const json_t *obj)
{
	return meta_str(obj, "uid");
}

const char *kube_object_resource_version(const json_t *obj)
{
	return meta_str(obj, "resourceVersion");
}

char *kube_object_key(const json_t *obj)
{
	const char *ns = kube_object_namespace(obj);

	if (ns[0])
		return str_printf("%s/%s", ns, kube_object_name(obj));
	return strdup(kube_object_name(obj));
}

static void set_str(char **dst, const char *s)
{
	char *copy = s ? strdup(s) : NULL;

	if (s && !copy) {
		log_error("kube: out of memory");
		return; /* keep the old value: stale beats none */
	}
	free(*dst);
	*dst = copy;
}

/* ---------- backoff ---------- */

static uint64_t informer_jitter(struct kube_informer *inf, uint64_t ms)
{
	uint64_t x = inf->seed;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	inf->seed = x;
	/* 80% .. 120% so many informers do not reconnect in lockstep. */
	return ms * 8 / 10 + (ms ? x % (ms * 4 / 10 + 1) : 0);
}

static void on_timer(uv_timer_t *t)
{
	struct kube_informer *inf = t->data;

	if (inf->destroyed)
		return;
	if (inf->relist_after_backoff)
		informer_list_start(inf);
	else
		informer_watch_start(inf);
}

static void informer_schedule(struct kube_informer *inf, bool relist, uint64_t delay_ms)
{
	int rc;

	set_state(inf, INFORMER_BACKOFF);
	inf->relist_after_backoff = relist;
	rc = uv_timer_start(&inf->timer, on_timer, delay_ms, 0);
	if (rc < 0)
		log_error("kube: informer %s: uv_timer_start: %s", inf->desc, uv_strerror(rc));
}

static void informer_backoff(struct kube_informer *inf, bool relist, const char *why)
{
	uint64_t delay = informer_jitter(inf, inf->backoff_ms);

	log_warnx("kube: informer %s: %s; %s in %llu ms", inf->desc, why,
	    relist ? "relisting" : "resuming the watch", (unsigned long long)delay);
	inf->backoff_ms *= 2;
	if (inf->backoff_ms > INFORMER_BACKOFF_MAX_MS)
		inf->backoff_ms = INFORMER_BACKOFF_MAX_MS;
	informer_schedule(inf, relist, delay);
}

/* The object to cache for one as received (a new reference). */
static json_t *informer_transform(struct kube_informer *inf, json_t *obj)
{
	json_t *kept = inf->h.transform ? inf->h.transform(obj, inf->data) : NULL;

	return kept ? kept : json_incref(obj);
}

/* ---------- list ---------- */

struct listing_diff {
	struct kube_informer *inf;
	struct kube_store *old;
	size_t adds, updates, deletes;
};

static bool diff_added_or_updated(const char *key, json_t *obj, void *data)
{
	struct listing_diff *d = data;
	struct kube_informer *inf = d->inf;
	json_t *prev = kube_store_get(d->old, key);

	if (!prev) {
		d->adds++;
		if (inf->h.on_add)
			inf->h.on_add(obj, inf->data);
	} else if (strcmp(kube_object_resource_version(prev),
	    kube_object_resource_version(obj)) != 0) {
		d->updates++;
		if (inf->h.on_update)
			inf->h.on_update(prev, obj, inf->data);
	}
	kube_store_release(d->old);
	return !inf->destroyed;
}

static bool diff_deleted(const char *key, json_t *obj, void *data)
{
	struct listing_diff *d = data;
	struct kube_informer *inf = d->inf;

	if (kube_store_has(inf->cache, key))
		return true;
	d->deletes++;
	if (inf->h.on_delete)
		inf->h.on_delete(obj, inf->data);
	return !inf->destroyed;
}

static void informer_apply_listing(struct kube_informer *inf)
{
	struct listing_diff d = { .inf = inf, .old = inf->cache };

	/* Handlers see the final cache, as client-go's do. */
	inf->cache = inf->listing;
	inf->listing = NULL;
	kube_store_foreach(inf->cache, diff_added_or_updated, &d);
	if (!inf->destroyed)
		kube_store_foreach(d.old, diff_deleted, &d);
	if (!inf->destroyed)
		log_debug("kube: informer %s: list at resourceVersion %s: %zu objects, %zu added, "
		    "%zu updated, %zu deleted", inf->desc, inf->rv ? inf->rv : "",
		    kube_store_size(inf->cache), d.adds, d.updates, d.deletes);
	kube_store_destroy(d.old);
}

static void informer_on_list(const struct kube_response *resp, void *data)
{
	struct kube_informer *inf = data;
	json_t *items, *item, *meta, *kept;
	const char *cont, *rv;
	char *key, *why;
	size_t i;
	int rc;

	inf->list_req = 0;
	items = json_object_get(resp->body, "items");
	if (resp->status != 200 || !json_is_array(items)) {
		if (resp->status == 410 && inf->cont) {
			/* The continue token expired: start the list over. */
			log_info("kube: informer %s: list continuation expired, restarting",
			    inf->desc);
			informer_schedule(inf, true, 0);
			return;
		}
		why = str_printf("list failed: HTTP %ld %s %s", resp->status, resp->reason,
		    resp->message);
		informer_backoff(inf, true, why ? why : "list failed");
		free(why);
		return;
	}
	json_array_foreach(items, i, item) {
		if (!json_is_object(item))
			continue;
		/* List items carry no kind; owners and logs want one. */
		if (!json_object_get(item, "kind"))
			json_object_set_new(item, "kind", json_string(inf->r->kind));
		if (!json_object_get(item, "apiVersion"))
			json_object_set_new(item, "apiVersion", inf->r->group[0] ?
			    json_sprintf("%s/%s", inf->r->group, inf->r->version) :
			    json_string(inf->r->version));
		key = kube_object_key(item);
		kept = informer_transform(inf, item);
		rc = key ? kube_store_put(inf->listing, key, kept) : -1;
		json_decref(kept);
		free(key);
		if (rc < 0) {
			informer_backoff(inf, true, "out of memory while listing");
			return;
		}
	}
	meta = json_object_get(resp->body, "metadata");
	cont = json_string_value(json_object_get(meta, "continue"));
	rv = json_string_value(json_object_get(meta, "resourceVersion"));
	if (cont && cont[0]) {
		set_str(&inf->cont, cont);
		informer_list_start(inf);
		return;
	}
	set_str(&inf->cont, NULL);
	set_str(&inf->rv, rv);
	inf->backoff_ms = INFORMER_BACKOFF_MIN_MS;
	informer_apply_listing(inf);
	if (inf->destroyed)
		return;
	if (!inf->synced) {
		inf->synced = true;
		log_info("kube: informer %s: synced, %zu objects (%zu KiB cached)", inf->desc,
		    kube_store_size(inf->cache), kube_store_text_bytes(inf->cache) / 1024);
		if (inf->h.on_synced)
			inf->h.on_synced(inf->data);
		if (inf->destroyed)
			return;
	}
	informer_watch_start(inf);
}

static void informer_list_start(struct kube_informer *inf)
{
	set_state(inf, INFORMER_LISTING);
	if (!inf->cont) {
		kube_store_destroy(inf->listing);
		inf->listing = kube_store_create();
		if (!inf->listing) {
			informer_backoff(inf, true, "out of memory");
			return;
		}
	}
	inf->list_req = kube_list(inf->c, inf->r, inf->ns, inf->selector, inf->cont,
	    INFORMER_PAGE_SIZE, informer_on_list, inf);
	if (!inf->list_req)
		informer_backoff(inf, true, "cannot start a list request");
}

/* ---------- watch ---------- */

static void informer_stop_watch(struct kube_informer *inf)
{
	kube_watch_destroy(inf->watch);
	inf->watch = NULL;
}

static void informer_on_upsert(struct kube_informer *inf, json_t *obj)
{
	json_t *old;
	char *key = kube_object_key(obj);

	if (!key) {
		log_error("kube: informer %s: out of memory", inf->desc);
		return;
	}
	old = kube_store_get(inf->cache, key); /* a loan: outlives the put below */
	if (old && strcmp(kube_object_resource_version(old),
	    kube_object_resource_version(obj)) == 0) {
		/* Already seen (a resumed watch may repeat the edge). */
		free(key);
		return;
	}
	if (kube_store_put(inf->cache, key, obj) < 0) {
		log_error("kube: informer %s: out of memory caching %s", inf->desc, key);
	} else if (old) {
		if (inf->h.on_update)
			inf->h.on_update(old, obj, inf->data);
	} else if (inf->h.on_add) {
		inf->h.on_add(obj, inf->data);
	}
	free(key);
}

static void informer_on_remove(struct kube_informer *inf, json_t *obj)
{
	char *key = kube_object_key(obj);

	if (!key) {
		log_error("kube: informer %s: out of memory", inf->desc);
		return;
	}
	if (kube_store_has(inf->cache, key)) {
		kube_store_del(inf->cache, key);
		if (inf->h.on_delete)
			inf->h.on_delete(obj, inf->data);
	}
	free(key);
}

static void informer_on_event(enum kube_watch_event_type type, json_t *obj, void *data)
{
	struct kube_informer *inf = data;
	const char *rv = kube_object_resource_version(obj);
	json_int_t code;
	char *why;

	switch (type) {
	case KUBE_WATCH_ADDED:
	case KUBE_WATCH_MODIFIED:
		obj = informer_transform(inf, obj);
		informer_on_upsert(inf, obj);
		json_decref(obj);
		break;
	case KUBE_WATCH_DELETED:
		obj = informer_transform(inf, obj);
		informer_on_remove(inf, obj);
		json_decref(obj);
		break;
	case KUBE_WATCH_BOOKMARK:
		break;
	case KUBE_WATCH_ERROR:
		code = json_integer_value(json_object_get(obj, "code"));
		informer_stop_watch(inf);
		if (code == 410) {
			/* Our resourceVersion was compacted away: only a
			 * fresh list can tell what changed meanwhile. */
			log_info("kube: informer %s: resourceVersion %s expired, relisting",
			    inf->desc, inf->rv ? inf->rv : "");
			informer_schedule(inf, true, 0);
		} else {
			why = str_printf("watch error %lld: %s", (long long)code,
			    json_string_value(json_object_get(obj, "message")));
			informer_backoff(inf, false, why ? why : "watch error");
			free(why);
		}
		return;
	}
	if (inf->destroyed)
		return;
	inf->watch_events++;
	inf->backoff_ms = INFORMER_BACKOFF_MIN_MS;
	if (rv[0])
		set_str(&inf->rv, rv);
}

static void informer_on_watch_end(const char *err, long http_status, void *data)
{
	struct kube_informer *inf = data;
	uint64_t lived_ms = (uv_hrtime() - inf->watch_started) / 1000000;

	informer_stop_watch(inf);
	if (http_status == 410) {
		log_info("kube: informer %s: watch answered 410 Gone, relisting", inf->desc);
		informer_schedule(inf, true, 0);
	} else if (err) {
		informer_backoff(inf, false, err);
	} else if (inf->watch_events == 0 && lived_ms < INFORMER_SHORT_WATCH_MS) {
		informer_backoff(inf, false, "watch ended at once without events");
	} else {
		log_debug("kube: informer %s: watch ended, resuming at %s", inf->desc,
		    inf->rv ? inf->rv : "");
		informer_watch_start(inf);
	}
}

static void informer_watch_start(struct kube_informer *inf)
{
	set_state(inf, INFORMER_WATCHING);
	inf->watch_started = uv_hrtime();
	inf->watch_events = 0;
	inf->watch = kube_watch_start(inf->c, inf->r, inf->ns, inf->selector, NULL, inf->rv,
	    informer_on_event, informer_on_watch_end, inf);
	if (!inf->watch)
		informer_backoff(inf, false, "cannot start a watch");
}

/* ---------- lifecycle ---------- */

/* Objects lent by kube_informer_get live until the loop turn ends. */
static void informer_on_turn_end(uv_check_t *h)
{
	struct kube_informer *inf = h->data;

	kube_store_release(inf->cache);
}

struct kube_informer *kube_informer_create(struct kube_client *c,
    const struct kube_resource *r, const char *ns, const char *label_selector,
    const struct kube_informer_handlers *handlers, void *data)
{
	struct kube_informer *inf = calloc(1, sizeof(*inf));
	int rc;

	if (!inf)
		return NULL;
	inf->c = c;
	inf->r = r;
	inf->data = data;
	if (handlers)
		inf->h = *handlers;
	inf->backoff_ms = INFORMER_BACKOFF_MIN_MS;
	inf->seed = uv_hrtime() ^ ((uint64_t)getpid() << 20) ^ (uint64_t)(uintptr_t)inf;
	if (inf->seed == 0)
		inf->seed = 1;
	if ((ns && ns[0] && !(inf->ns = strdup(ns))) ||
	    (label_selector && label_selector[0] && !(inf->selector = strdup(label_selector))))
		goto fail;
	inf->desc = str_printf("%s in %s%s%s", r->plural, inf->ns ? inf->ns : "all namespaces",
	    inf->selector ? " with " : "", inf->selector ? inf->selector : "");
	inf->cache = kube_store_create();
	if (!inf->desc || !inf->cache)
		goto fail;
	rc = uv_timer_init(kube_client_loop(c), &inf->timer);
	if (rc < 0) {
		log_error("kube: uv_timer_init: %s", uv_strerror(rc));
		goto fail;
	}
	inf->timer.data = inf;
	/* Cannot fail once the loop exists; does not keep the loop alive. */
	uv_check_init(kube_client_loop(c), &inf->turn_end);
	inf->turn_end.data = inf;
	uv_check_start(&inf->turn_end, informer_on_turn_end);
	uv_unref((uv_handle_t *)&inf->turn_end);
	return inf;
fail:
	free(inf->ns);
	free(inf->selector);
	free(inf->desc);
	kube_store_destroy(inf->cache);
	free(inf);
	return NULL;
}

int kube_informer_start(struct kube_informer *inf)
{
	if (inf->state != INFORMER_IDLE)
		return -1;
	informer_list_start(inf);
	return 0;
}

static void informer_on_closed(uv_handle_t *h)
{
	struct kube_informer *inf = h->data;

	if (--inf->pending_closes > 0)
		return;
	kube_store_destroy(inf->cache);
	kube_store_destroy(inf->listing);
	free(inf->ns);
	free(inf->selector);
	free(inf->desc);
	free(inf->rv);
	free(inf->cont);
	free(inf);
}

void kube_informer_destroy(struct kube_informer *inf)
{
	if (!inf || inf->destroyed)
		return;
	inf->destroyed = true;
	set_state(inf, INFORMER_STOPPED);
	kube_client_cancel(inf->c, inf->list_req);
	inf->list_req = 0;
	informer_stop_watch(inf);
	/* Memory goes in the close callbacks: a handler may be on the stack. */
	inf->pending_closes = 2;
	uv_close((uv_handle_t *)&inf->timer, informer_on_closed);
	uv_close((uv_handle_t *)&inf->turn_end, informer_on_closed);
}

bool kube_informer_synced(const struct kube_informer *inf)
{
	return inf->synced;
}

json_t *kube_informer_get(const struct kube_informer *inf, const char *ns, const char *name)
{
	char *key;
	json_t *obj;

	if (ns && ns[0])
		key = str_printf("%s/%s", ns, name);
	else
		key = strdup(name);
	if (!key)
		return NULL;
	obj = kube_store_get(inf->cache, key);
	free(key);
	return obj;
}

size_t kube_informer_size(const struct kube_informer *inf)
{
	return kube_store_size(inf->cache);
}

size_t kube_informer_cached_bytes(const struct kube_informer *inf)
{
	return kube_store_text_bytes(inf->cache);
}

struct foreach_call {
	void (*fn)(json_t *obj, void *data);
	void *data;
};

static bool foreach_one(const char *key, json_t *obj, void *data)
{
	struct foreach_call *call = data;

	(void)key;
	call->fn(obj, call->data);
	return true;
}

void kube_informer_foreach(const struct kube_informer *inf,
    void (*fn)(json_t *obj, void *data), void *data)
{
	struct foreach_call call = { fn, data };

	kube_store_foreach(inf->cache, foreach_one, &call);
}
