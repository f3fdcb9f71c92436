#include "controller_builders.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "controller_builder.h"
#include "json_field.h"
#include "log.h"

struct controller_builder {
	char *key;          /* "ns/name" */
	char *ns;
	char *name;
	char *identity;     /* "" for an unclaimed pool builder */
	char *claiming;     /* identity a pool claim in flight is for, or NULL */
	char *class;
	char *uid;          /* "" until cached */
	char *drain_reason; /* why its pod was asked to stop, or NULL */
	long slots;
	enum builder_state state;
	char **requests;    /* bound request keys */
	size_t nrequests, cap;
	bool bound_once;    /* has served, or may have (made before the table knew it) */
	uint64_t added_at;
	uint64_t idle_since;
	json_t *expected_pod;
	uint64_t expected_at;
	struct controller_builder *next;
};

struct controller_builders {
	struct controller_builder *head;
	size_t count;
};

static const char *const state_names[BUILDER_STATE_COUNT] = {
	[BUILDER_CREATING] = "creating",
	[BUILDER_STARTING] = "starting",
	[BUILDER_READY] = "ready",
	[BUILDER_IDLE] = "idle",
	[BUILDER_DRAINING] = "draining",
	[BUILDER_FAILED] = "failed",
	[BUILDER_DELETING] = "deleting",
};

const char *controller_builder_state_name(enum builder_state s)
{
	return s < BUILDER_STATE_COUNT ? state_names[s] : "unknown";
}

static void set_state(struct controller_builder *b, enum builder_state next)
{
	if (b->state == next)
		return;
	log_debug("builder=%s %s => %s (%zu/%ld sessions)", b->key, state_names[b->state],
	    state_names[next], b->nrequests, b->slots);
	b->state = next;
}

/* Takes new sessions (or will, once started). */
static bool usable(const struct controller_builder *b)
{
	return b->state != BUILDER_DRAINING && b->state != BUILDER_FAILED &&
	    b->state != BUILDER_DELETING;
}

/* READY and IDLE differ only in whether an identity's builder has a
 * session; the one place that decides it. */
static void settle_idle(struct controller_builder *b, uint64_t now_ms)
{
	bool idle = b->nrequests == 0;

	if (!idle)
		b->idle_since = 0;
	else if (!b->idle_since)
		b->idle_since = now_ms ? now_ms : 1;
	if (b->state == BUILDER_READY && idle && *b->identity)
		set_state(b, BUILDER_IDLE);
	else if (b->state == BUILDER_IDLE && (!idle || !*b->identity))
		set_state(b, BUILDER_READY);
}

struct controller_builders *controller_builders_create(void)
{
	return calloc(1, sizeof(struct controller_builders));
}

static void builder_free(struct controller_builder *b)
{
	for (size_t i = 0; i < b->nrequests; i++)
		free(b->requests[i]);
	free(b->requests);
	json_decref(b->expected_pod);
	free(b->key);
	free(b->ns);
	free(b->name);
	free(b->identity);
	free(b->claiming);
	free(b->class);
	free(b->uid);
	free(b->drain_reason);
	free(b);
}

void controller_builders_destroy(struct controller_builders *t)
{
	if (!t)
		return;
	while (t->head) {
		struct controller_builder *b = t->head;

		t->head = b->next;
		builder_free(b);
	}
	free(t);
}

size_t controller_builders_count(const struct controller_builders *t)
{
	return t->count;
}

struct controller_builder *controller_builders_get(struct controller_builders *t,
    const char *key)
{
	for (struct controller_builder *b = t->head; b; b = b->next) {
		if (strcmp(b->key, key) == 0)
			return b;
	}
	return NULL;
}

static int replace(char **field, const char *value)
{
	char *copy;

	if (*field && strcmp(*field, value) == 0)
		return 0;
	copy = strdup(value);
	if (!copy)
		return -1;
	free(*field);
	*field = copy;
	return 0;
}

static struct controller_builder *entry_new(struct controller_builders *t, const char *ns,
    const char *name, uint64_t now_ms)
{
	struct controller_builder *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->key = str_printf("%s/%s", ns, name);
	b->ns = strdup(ns);
	b->name = strdup(name);
	b->identity = strdup("");
	b->class = strdup("");
	b->uid = strdup("");
	if (!b->key || !b->ns || !b->name || !b->identity || !b->class || !b->uid) {
		builder_free(b);
		return NULL;
	}
	b->slots = 1;
	b->state = BUILDER_CREATING;
	b->added_at = now_ms;
	b->idle_since = now_ms ? now_ms : 1;
	b->next = t->head;
	t->head = b;
	t->count++;
	return b;
}

struct controller_builder *controller_builders_add(struct controller_builders *t,
    const char *ns, const char *name, const char *identity, const char *class, long slots,
    uint64_t now_ms)
{
	char *key = str_printf("%s/%s", ns, name);
	struct controller_builder *b = key ? controller_builders_get(t, key) : NULL;

	free(key);
	if (b)
		return b;
	b = entry_new(t, ns, name, now_ms);
	if (!b)
		return NULL;
	if (replace(&b->identity, identity) < 0 || replace(&b->class, class) < 0) {
		controller_builders_remove(t, b->key);
		return NULL;
	}
	b->slots = slots > 0 ? slots : 1;
	return b;
}

struct controller_builder *controller_builders_seen(struct controller_builders *t,
    const json_t *obj, uint64_t now_ms)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const json_t *spec = json_object_get(obj, "spec");
	const char *ns = json_field_str(meta, "namespace");
	const char *name = json_field_str(meta, "name");
	char *key = str_printf("%s/%s", ns, name);
	struct controller_builder *b = key ? controller_builders_get(t, key) : NULL;

	free(key);
	if (!b) {
		/* Made before this table knew it: it may have served. */
		b = entry_new(t, ns, name, now_ms);
		if (b)
			b->bound_once = true;
	}
	if (!b)
		return NULL;
	/* An identity is given once (a pool builder's "" becomes a client's)
	 * and never taken back: a cache a step behind a claim, or a claim in
	 * flight, must not make a client's builder look unclaimed. */
	if ((!b->claiming && !*b->identity &&
	        replace(&b->identity, json_field_str(spec, "identity")) < 0) ||
	    replace(&b->class, json_field_str(spec, "class")) < 0 ||
	    replace(&b->uid, json_field_str(meta, "uid")) < 0)
		return NULL;
	b->slots = controller_builder_slots(obj);
	if (json_object_get(meta, "deletionTimestamp"))
		set_state(b, BUILDER_DELETING);
	else if (b->state == BUILDER_CREATING)
		set_state(b, BUILDER_STARTING);
	settle_idle(b, now_ms);
	return b;
}

void controller_builders_remove(struct controller_builders *t, const char *key)
{
	for (struct controller_builder **p = &t->head; *p; p = &(*p)->next) {
		if (strcmp((*p)->key, key) == 0) {
			struct controller_builder *b = *p;

			*p = b->next;
			t->count--;
			builder_free(b);
			return;
		}
	}
}

static bool matches(const struct controller_builder *b, const char *ns, const char *identity,
    const char *class)
{
	return strcmp(b->ns, ns) == 0 && strcmp(b->identity, identity) == 0 &&
	    strcmp(b->class, class) == 0;
}

/* Its pod is Ready: a session bound now is served now. */
static bool serving_now(const struct controller_builder *b)
{
	return b->state == BUILDER_READY || b->state == BUILDER_IDLE;
}

static struct controller_builder *pick(struct controller_builders *t, const char *ns,
    const char *identity, const char *class, bool ready_only)
{
	struct controller_builder *best = NULL;

	if (!*identity)
		return NULL;
	for (struct controller_builder *b = t->head; b; b = b->next) {
		if (!usable(b) || b->claiming || !matches(b, ns, identity, class) ||
		    b->nrequests >= (size_t)b->slots || (ready_only && !serving_now(b)))
			continue;
		if (!best || b->nrequests > best->nrequests ||
		    (b->nrequests == best->nrequests && b->added_at < best->added_at))
			best = b;
	}
	return best;
}

struct controller_builder *controller_builders_pick(struct controller_builders *t,
    const char *ns, const char *identity, const char *class)
{
	return pick(t, ns, identity, class, false);
}

struct controller_builder *controller_builders_pick_ready(struct controller_builders *t,
    const char *ns, const char *identity, const char *class)
{
	return pick(t, ns, identity, class, true);
}

size_t controller_builders_ready(struct controller_builders *t, const char *ns,
    const char *identity, const char *class)
{
	size_t n = 0;

	for (struct controller_builder *b = t->head; b; b = b->next) {
		if (serving_now(b) && matches(b, ns, identity, class))
			n++;
	}
	return n;
}

size_t controller_builders_usable(struct controller_builders *t, const char *ns,
    const char *identity, const char *class)
{
	size_t n = 0;

	for (struct controller_builder *b = t->head; b; b = b->next) {
		if (usable(b) && matches(b, ns, identity, class))
			n++;
	}
	return n;
}

void controller_builders_foreach_of(struct controller_builders *t, const char *ns,
    const char *identity, void (*fn)(struct controller_builder *b, void *data), void *data)
{
	for (struct controller_builder *b = t->head; b; b = b->next) {
		if (!b->claiming && strcmp(b->ns, ns) == 0 && strcmp(b->identity, identity) == 0)
			fn(b, data);
	}
}

bool controller_builders_claim_pending(struct controller_builders *t, const char *ns,
    const char *identity, const char *class)
{
	for (struct controller_builder *b = t->head; b; b = b->next) {
		if (b->claiming && strcmp(b->claiming, identity) == 0 &&
		    strcmp(b->ns, ns) == 0 && strcmp(b->class, class) == 0)
			return true;
	}
	return false;
}

static bool unclaimed(const struct controller_builder *b, const char *ns, const char *class)
{
	return usable(b) && !b->claiming && !*b->identity && strcmp(b->ns, ns) == 0 &&
	    strcmp(b->class, class) == 0;
}

struct controller_builder *controller_builders_pick_pool(struct controller_builders *t,
    const char *ns, const char *class)
{
	struct controller_builder *best = NULL;

	for (struct controller_builder *b = t->head; b; b = b->next) {
		/* Only cached ones: a claim patches the object by name. */
		if (!unclaimed(b, ns, class) || b->state == BUILDER_CREATING)
			continue;
		if (!best || (b->state == BUILDER_READY && best->state != BUILDER_READY))
			best = b;
	}
	return best;
}

size_t controller_builders_pool_size(struct controller_builders *t, const char *ns,
    const char *class)
{
	size_t n = 0;

	for (struct controller_builder *b = t->head; b; b = b->next) {
		if (unclaimed(b, ns, class))
			n++;
	}
	return n;
}

char *controller_builders_next_name(struct controller_builders *t, const char *ns,
    const char *identity, const char *class)
{
	for (unsigned i = 0;; i++) {
		char *name = controller_builder_make_name(identity, class, i);
		char *key = name ? str_printf("%s/%s", ns, name) : NULL;
		bool taken = key && controller_builders_get(t, key);

		free(key);
		if (!name || !taken)
			return name;
		free(name);
	}
}

size_t controller_builders_sessions_total(const struct controller_builders *t)
{
	size_t n = 0;

	for (const struct controller_builder *b = t->head; b; b = b->next)
		n += b->nrequests;
	return n;
}

struct controller_builder *controller_builders_serving(struct controller_builders *t,
    const char *request_key)
{
	for (struct controller_builder *b = t->head; b; b = b->next) {
		for (size_t i = 0; i < b->nrequests; i++) {
			if (strcmp(b->requests[i], request_key) == 0)
				return b;
		}
	}
	return NULL;
}

int controller_builders_bind(struct controller_builders *t, struct controller_builder *b,
    const char *request_key, uint64_t now_ms)
{
	struct controller_builder *cur = controller_builders_serving(t, request_key);
	char *copy;

	if (cur == b)
		return 0;
	if (cur)
		controller_builders_unbind(t, request_key, now_ms);
	if (b->nrequests == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4;
		char **r = realloc(b->requests, cap * sizeof(*r));

		if (!r)
			return -1;
		b->requests = r;
		b->cap = cap;
	}
	copy = strdup(request_key);
	if (!copy)
		return -1;
	b->requests[b->nrequests++] = copy;
	b->bound_once = true;
	settle_idle(b, now_ms);
	return 0;
}

struct controller_builder *controller_builders_unbind(struct controller_builders *t,
    const char *request_key, uint64_t now_ms)
{
	for (struct controller_builder *b = t->head; b; b = b->next) {
		for (size_t i = 0; i < b->nrequests; i++) {
			if (strcmp(b->requests[i], request_key) != 0)
				continue;
			free(b->requests[i]);
			b->requests[i] = b->requests[--b->nrequests];
			settle_idle(b, now_ms);
			return b;
		}
	}
	return NULL;
}

void controller_builder_observe_pod(struct controller_builder *b, bool ready, bool ended,
    uint64_t now_ms)
{
	if (b->state == BUILDER_FAILED || b->state == BUILDER_DELETING)
		return;
	if (ended) {
		set_state(b, BUILDER_FAILED);
		return;
	}
	if (b->state == BUILDER_DRAINING)
		return; /* a terminating pod does not come back */
	if (b->state == BUILDER_CREATING)
		return; /* the builder's own cache event moves it on */
	if (!ready) {
		set_state(b, BUILDER_STARTING);
		return;
	}
	if (b->state == BUILDER_STARTING)
		set_state(b, BUILDER_READY);
	settle_idle(b, now_ms);
}

void controller_builder_observe_drain(struct controller_builder *b, const char *why)
{
	if (!usable(b))
		return;
	free(b->drain_reason);
	b->drain_reason = strdup(why ? why : "deleted");
	log_info("builder=%s draining: its pod was %s; %zu sessions go on, no new one is bound",
	    b->key, b->drain_reason ? b->drain_reason : "deleted", b->nrequests);
	set_state(b, BUILDER_DRAINING);
}

const char *controller_builder_drain_reason(const struct controller_builder *b)
{
	return b->drain_reason;
}

void controller_builder_deleting(struct controller_builder *b)
{
	set_state(b, BUILDER_DELETING);
}

void controller_builder_claim_start(struct controller_builder *b, const char *identity)
{
	free(b->claiming);
	b->claiming = strdup(identity);
}

bool controller_builder_claiming(const struct controller_builder *b)
{
	return b->claiming != NULL;
}

void controller_builder_claim_done(struct controller_builder *b, bool ok, uint64_t now_ms)
{
	if (ok && b->claiming && replace(&b->identity, b->claiming) == 0)
		log_debug("builder=%s claimed for identity %s", b->key, b->identity);
	free(b->claiming);
	b->claiming = NULL;
	settle_idle(b, now_ms);
}

enum builder_state controller_builder_state(const struct controller_builder *b)
{
	return b->state;
}

const char *controller_builder_key(const struct controller_builder *b)
{
	return b->key;
}

const char *controller_builder_name(const struct controller_builder *b)
{
	return b->name;
}

const char *controller_builder_namespace(const struct controller_builder *b)
{
	return b->ns;
}

const char *controller_builder_class_of(const struct controller_builder *b)
{
	return b->class;
}

const char *controller_builder_identity_of(const struct controller_builder *b)
{
	return b->identity;
}

bool controller_builder_serves(const struct controller_builder *b, const char *ns,
    const char *identity, const char *class)
{
	return *identity && matches(b, ns, identity, class);
}

const char *controller_builder_uid(const struct controller_builder *b)
{
	return b->uid;
}

long controller_builder_slots_of(const struct controller_builder *b)
{
	return b->slots;
}

size_t controller_builder_sessions(const struct controller_builder *b)
{
	return b->nrequests;
}

const char *controller_builder_request(const struct controller_builder *b, size_t i)
{
	return i < b->nrequests ? b->requests[i] : NULL;
}

bool controller_builder_bound_once(const struct controller_builder *b)
{
	return b->bound_once;
}

uint64_t controller_builder_idle_since(const struct controller_builder *b)
{
	return b->nrequests ? 0 : b->idle_since;
}

uint64_t controller_builder_added_at(const struct controller_builder *b)
{
	return b->added_at;
}

void controller_builder_expect_pod(struct controller_builder *b, json_t *pod, uint64_t now_ms)
{
	json_decref(b->expected_pod);
	b->expected_pod = pod;
	b->expected_at = now_ms;
}

json_t *controller_builder_expected_pod(const struct controller_builder *b, uint64_t now_ms,
    uint64_t ttl_ms)
{
	if (!b->expected_pod || now_ms - b->expected_at >= ttl_ms)
		return NULL;
	return b->expected_pod;
}
