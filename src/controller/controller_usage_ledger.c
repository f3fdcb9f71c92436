#include "controller_usage_ledger.h"

#include <stdlib.h>
#include <string.h>

/* Lists, searched linearly: entries exist only for identities with
 * something unwritten and for live builders, tens to a few hundred. */

struct ended {
	char *name;
	char *uid;
	int64_t end_ms;
};

struct identity_entry {
	char *ns;
	char *identity;
	struct usage_counts pending;
	struct usage_counts sending;
	bool in_flight;
	struct ended ended[USAGE_LEDGER_MAX_ENDED];
	struct usage_ended ended_view[USAGE_LEDGER_MAX_ENDED];
	size_t n_ended;
	size_t n_sending_ended; /* the first ones of ended, settled by the write */
	struct identity_entry *next;
};

struct builder_entry {
	char *key;
	struct usage_counts totals;
	bool seeded; /* totals start from what the cache showed */
	struct builder_entry *next;
};

struct usage_ledger {
	struct identity_entry *identities;
	struct builder_entry *builders;
};

struct usage_ledger *usage_ledger_create(void)
{
	return calloc(1, sizeof(struct usage_ledger));
}

static void ended_free(struct ended *e)
{
	free(e->name);
	free(e->uid);
}

static void identity_free(struct identity_entry *e)
{
	for (size_t i = 0; i < e->n_ended; i++)
		ended_free(&e->ended[i]);
	free(e->ns);
	free(e->identity);
	free(e);
}

void usage_ledger_destroy(struct usage_ledger *l)
{
	if (!l)
		return;
	while (l->identities) {
		struct identity_entry *e = l->identities;

		l->identities = e->next;
		identity_free(e);
	}
	while (l->builders) {
		struct builder_entry *b = l->builders;

		l->builders = b->next;
		free(b->key);
		free(b);
	}
	free(l);
}

static struct identity_entry *find_identity(const struct usage_ledger *l, const char *ns,
    const char *identity)
{
	for (struct identity_entry *e = l->identities; e; e = e->next) {
		if (strcmp(e->ns, ns) == 0 && strcmp(e->identity, identity) == 0)
			return e;
	}
	return NULL;
}

static struct identity_entry *get_identity(struct usage_ledger *l, const char *ns,
    const char *identity)
{
	struct identity_entry *e = find_identity(l, ns, identity);

	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->ns = strdup(ns);
	e->identity = strdup(identity);
	if (!e->ns || !e->identity) {
		identity_free(e);
		return NULL;
	}
	e->next = l->identities;
	l->identities = e;
	return e;
}

static bool identity_empty(const struct identity_entry *e)
{
	return !e->in_flight && usage_counts_zero(&e->pending) && e->n_ended == 0;
}

static void remove_identity(struct usage_ledger *l, struct identity_entry *e)
{
	for (struct identity_entry **p = &l->identities; *p; p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			identity_free(e);
			return;
		}
	}
}

static struct builder_entry *find_builder(const struct usage_ledger *l, const char *key)
{
	for (struct builder_entry *b = l->builders; b; b = b->next) {
		if (strcmp(b->key, key) == 0)
			return b;
	}
	return NULL;
}

static struct builder_entry *get_builder(struct usage_ledger *l, const char *key)
{
	struct builder_entry *b = find_builder(l, key);

	if (b)
		return b;
	b = calloc(1, sizeof(*b));
	if (!b || !(b->key = strdup(key))) {
		free(b);
		return NULL;
	}
	b->next = l->builders;
	l->builders = b;
	return b;
}

static void seed(struct builder_entry *b, const struct usage_counts *seen)
{
	if (b->seeded)
		return;
	if (seen)
		usage_counts_max(&b->totals, seen);
	b->seeded = true;
}

int usage_ledger_session_ended(struct usage_ledger *l, const char *ns, const char *identity,
    const char *builder_key, const struct usage_counts *builder_seen,
    const struct usage_counts *c)
{
	struct identity_entry *e = get_identity(l, ns, identity);
	struct builder_entry *b = builder_key ? get_builder(l, builder_key) : NULL;

	if (!e || (builder_key && !b))
		return -1;
	usage_counts_add(&e->pending, c);
	if (b) {
		seed(b, builder_seen);
		usage_counts_add(&b->totals, c);
	}
	return 0;
}

int usage_ledger_builder_ended(struct usage_ledger *l, const char *ns, const char *identity,
    const char *name, const char *uid, int64_t end_ms)
{
	struct identity_entry *e = get_identity(l, ns, identity);
	struct ended n = { 0 };

	if (!e)
		return -1;
	for (size_t i = 0; i < e->n_ended; i++) {
		if (strcmp(e->ended[i].name, name) == 0 && strcmp(e->ended[i].uid, uid) == 0)
			return 0; /* the first sighting is the end */
	}
	n.name = strdup(name);
	n.uid = strdup(uid);
	n.end_ms = end_ms;
	if (!n.name || !n.uid) {
		ended_free(&n);
		if (identity_empty(e))
			remove_identity(l, e);
		return -1;
	}
	if (e->n_ended == USAGE_LEDGER_MAX_ENDED) {
		/* Drop the oldest one not being written. */
		size_t drop = e->n_sending_ended < e->n_ended ? e->n_sending_ended : 0;

		ended_free(&e->ended[drop]);
		memmove(&e->ended[drop], &e->ended[drop + 1],
		    (e->n_ended - drop - 1) * sizeof(e->ended[0]));
		e->n_ended--;
		if (drop < e->n_sending_ended)
			e->n_sending_ended--;
	}
	e->ended[e->n_ended++] = n;
	return 0;
}

bool usage_ledger_pending(const struct usage_ledger *l, const char *ns, const char *identity)
{
	const struct identity_entry *e = find_identity(l, ns, identity);

	return e && !identity_empty(e);
}

void usage_ledger_begin(struct usage_ledger *l, const char *ns, const char *identity,
    struct usage_counts *add, const struct usage_ended **ended, size_t *n_ended)
{
	struct identity_entry *e = find_identity(l, ns, identity);

	memset(add, 0, sizeof(*add));
	*ended = NULL;
	*n_ended = 0;
	if (!e || e->in_flight)
		return;
	e->sending = e->pending;
	memset(&e->pending, 0, sizeof(e->pending));
	e->n_sending_ended = e->n_ended;
	e->in_flight = true;
	for (size_t i = 0; i < e->n_ended; i++) {
		e->ended_view[i].name = e->ended[i].name;
		e->ended_view[i].uid = e->ended[i].uid;
		e->ended_view[i].end_ms = e->ended[i].end_ms;
	}
	*add = e->sending;
	*ended = e->n_ended ? e->ended_view : NULL;
	*n_ended = e->n_ended;
}

void usage_ledger_end(struct usage_ledger *l, const char *ns, const char *identity,
    bool written)
{
	struct identity_entry *e = find_identity(l, ns, identity);

	if (!e || !e->in_flight)
		return;
	e->in_flight = false;
	if (!written) {
		usage_counts_add(&e->pending, &e->sending);
	} else {
		for (size_t i = 0; i < e->n_sending_ended; i++)
			ended_free(&e->ended[i]);
		memmove(&e->ended[0], &e->ended[e->n_sending_ended],
		    (e->n_ended - e->n_sending_ended) * sizeof(e->ended[0]));
		e->n_ended -= e->n_sending_ended;
	}
	memset(&e->sending, 0, sizeof(e->sending));
	e->n_sending_ended = 0;
	if (identity_empty(e))
		remove_identity(l, e);
}

int usage_ledger_builder_counts(struct usage_ledger *l, const char *builder_key,
    const struct usage_counts *seen, struct usage_counts *out)
{
	struct builder_entry *b = get_builder(l, builder_key);

	if (!b)
		return -1;
	seed(b, seen);
	*out = b->totals;
	return 0;
}

void usage_ledger_builder_forget(struct usage_ledger *l, const char *builder_key)
{
	for (struct builder_entry **p = &l->builders; *p; p = &(*p)->next) {
		if (strcmp((*p)->key, builder_key) == 0) {
			struct builder_entry *b = *p;

			*p = b->next;
			free(b->key);
			free(b);
			return;
		}
	}
}

void usage_ledger_reseed_builders(struct usage_ledger *l)
{
	while (l->builders) {
		struct builder_entry *b = l->builders;

		l->builders = b->next;
		free(b->key);
		free(b);
	}
}

void usage_ledger_foreach_pending(const struct usage_ledger *l,
    void (*fn)(const char *ns, const char *identity, void *data), void *data)
{
	for (const struct identity_entry *e = l->identities; e; e = e->next) {
		if (!identity_empty(e))
			fn(e->ns, e->identity, data);
	}
}
